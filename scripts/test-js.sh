#!/usr/bin/env bash
# Run the JS client's tests against the real todo-app server:
#   1. make sure chromium, node >= 20 and the npm dev dependencies (ws, playwright-core) are there
#      (installing them if missing: apt-get for chromium, npm ci for the packages);
#   2. build the servers and the CLI: cargo build -p todo-app -p whisper -p liveblog -p dragon-cli (honours CARGO_TARGET_DIR);
#   3. node --test dragon-core/js/test/   (client API, subscriptions, liveList, reconnection)
#      node --test dragon-core/js/e2e/    (two headless Chromium pages on the todo-app, and on a
#                                          project made by `dragon createproject` and built here)
# Exits non-zero if anything is missing or any test fails. Nothing is ever skipped.
# Playwright never downloads a browser here: the system /usr/bin/chromium is used.
set -uo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
JS="$ROOT/dragon-core/js"
CHROMIUM="${CHROMIUM_PATH:-/usr/bin/chromium}"

log() { printf '\n==> %s\n' "$*"; }
die() { printf '\nERROR: %s\n' "$*" >&2; exit 1; }

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else die "need root to run: $*"
  fi
}

apt_busy() {
  pgrep -x apt-get >/dev/null 2>&1 || pgrep -x apt >/dev/null 2>&1 || pgrep -x dpkg >/dev/null 2>&1 ||
    pgrep -x unattended-upgr >/dev/null 2>&1
}

wait_for_apt() {
  local waited=0
  while apt_busy; do
    if [ "$waited" -eq 0 ]; then log "apt/dpkg is busy (maybe installing chromium already); waiting"; fi
    sleep 5
    waited=$((waited + 5))
    [ "$waited" -ge 1200 ] && die "apt/dpkg still busy after ${waited}s"
  done
}

# --- chromium -------------------------------------------------------------------------------
if [ ! -x "$CHROMIUM" ]; then
  wait_for_apt # a background install may finish it
  if [ ! -x "$CHROMIUM" ]; then
    log "installing chromium with apt-get"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y chromium || { as_root apt-get update && as_root apt-get install -y chromium; } ||
      die "could not install chromium"
  fi
fi
[ -x "$CHROMIUM" ] || die "$CHROMIUM is missing"
export CHROMIUM_PATH="$CHROMIUM"

# --- node + npm packages --------------------------------------------------------------------
command -v node >/dev/null 2>&1 || die "node is not installed (need node >= 20)"
NODE_MAJOR="$(node -p 'process.versions.node.split(".")[0]')"
[ "$NODE_MAJOR" -ge 20 ] || die "node >= 20 needed, found $(node --version)"
export PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1
if [ ! -d "$JS/node_modules/ws" ] || [ ! -d "$JS/node_modules/playwright-core" ]; then
  log "installing npm dev dependencies in dragon-core/js"
  if [ -f "$JS/package-lock.json" ]; then
    (cd "$JS" && npm ci --no-audit --no-fund) || die "npm ci failed"
  else
    (cd "$JS" && npm install --no-audit --no-fund) || die "npm install failed"
  fi
fi

# --- the server and the CLI -----------------------------------------------------------------
log "cargo build -p todo-app -p whisper -p liveblog -p dragon-cli"
(cd "$ROOT" && cargo build -p todo-app -p whisper -p liveblog -p dragon-cli) || die "cargo build of the servers and the CLI failed"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"
case "$TARGET" in /*) ;; *) TARGET="$ROOT/$TARGET" ;; esac
export DRAGON_TODO_BIN="$TARGET/debug/todo-app"
[ -x "$DRAGON_TODO_BIN" ] || die "built server not found at $DRAGON_TODO_BIN"
# e2e/generated.test.mjs runs `dragon createproject` and builds the project into $TARGET too
export DRAGON_BIN="$TARGET/debug/dragon"
# e2e/whisper.test.mjs runs the Whisper chat example
export WHISPER_BIN="$TARGET/debug/whisper"
[ -x "$WHISPER_BIN" ] || die "built whisper not found at $WHISPER_BIN"
# e2e/liveblog.test.mjs runs the live blog example
export LIVEBLOG_BIN="$TARGET/debug/liveblog"
[ -x "$LIVEBLOG_BIN" ] || die "built liveblog not found at $LIVEBLOG_BIN"
[ -x "$DRAGON_BIN" ] || die "built CLI not found at $DRAGON_BIN"

# --- tests ----------------------------------------------------------------------------------
mkdir -p "$ROOT/artifacts"
status=0
log "unit tests: node --test dragon-core/js/test/"
(cd "$JS" && node --test --test-concurrency=1 --test-timeout=180000 test/) || status=1
log "end-to-end tests: node --test dragon-core/js/e2e/"
(cd "$JS" && node --test --test-concurrency=1 --test-timeout=300000 e2e/) || status=1

if [ "$status" -ne 0 ]; then
  printf '\nJS tests FAILED\n' >&2
else
  printf '\nJS tests passed (screenshots in artifacts/)\n'
fi
exit "$status"
