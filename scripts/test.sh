#!/usr/bin/env bash
# The whole test suite, as on a fresh machine: starts (or installs) PostgreSQL and Redis,
# checks formatting and lints, runs every Rust test (SQLite, PostgreSQL, Redis, real
# sockets), then the JS client's tests in Node and headless Chromium.
# Never skips a test because a service is missing: it installs/starts it or fails.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log() { printf '\n==> %s\n' "$*"; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@"
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return; fi
  log "starting PostgreSQL"
  command -v pg_ctlcluster >/dev/null 2>&1 || apt_install postgresql
  local version
  version=$(ls /etc/postgresql | sort -V | tail -n 1)
  as_root pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
  for _ in $(seq 1 30); do pg_isready -q -h 127.0.0.1 -p 5432 && break; sleep 1; done
  pg_isready -q -h 127.0.0.1 -p 5432 || die "PostgreSQL did not start"
}

ensure_pg_access() {
  # Tests connect as postgres@127.0.0.1 without a password to database `test`.
  if ! psql -h 127.0.0.1 -U postgres -d postgres -tAc 'select 1' >/dev/null 2>&1; then
    log "allowing local trust access to PostgreSQL for the tests"
    local hba
    hba=$(as_root su postgres -c "psql -tAc 'show hba_file'")
    as_root sed -i '1i host all all 127.0.0.1/32 trust' "$hba"
    as_root su postgres -c "psql -tAc 'select pg_reload_conf()'" >/dev/null
  fi
  psql -h 127.0.0.1 -U postgres -d postgres -tAc "select 1 from pg_database where datname='test'" | grep -q 1 \
    || psql -h 127.0.0.1 -U postgres -d postgres -c 'create database test' >/dev/null
  # Drop databases left by earlier runs.
  # (and those of projects that `dragon createproject` tests generated: <name>_test_<uuid>).
  for db in $(psql -h 127.0.0.1 -U postgres -d postgres -tAc "select datname from pg_database where datname like 'dragon\_%' or datname like '%\_test\_%'"); do
    psql -h 127.0.0.1 -U postgres -d postgres -qc "drop database if exists \"$db\"" >/dev/null || true
  done
}

ensure_redis() {
  command -v redis-server >/dev/null 2>&1 && command -v redis-cli >/dev/null 2>&1 || apt_install redis-server
  if redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null | grep -q PONG; then return; fi
  log "starting Redis"
  mkdir -p /tmp/dragon-redis
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir /tmp/dragon-redis --logfile /tmp/dragon-redis/redis.log
  for _ in $(seq 1 30); do redis-cli ping 2>/dev/null | grep -q PONG && break; sleep 0.5; done
  redis-cli ping | grep -q PONG || die "Redis did not start"
}

command -v psql >/dev/null 2>&1 || apt_install postgresql-client
ensure_postgres
ensure_pg_access
ensure_redis

log "cargo fmt --check"
cargo fmt --all -- --check
log "cargo clippy -D warnings"
cargo clippy --workspace --all-targets -- -D warnings

log "Rust tests (SQLite, PostgreSQL, Redis, real WebSockets)"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast
else
  cargo test --workspace --no-fail-fast
fi

log "doc tests (docs/getting-started.md and the API docs' examples are compiled)"
cargo test --doc --workspace

log "JS client tests (node) and end-to-end tests (headless Chromium)"
bash scripts/test-js.sh
