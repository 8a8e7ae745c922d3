//! `dragon createproject` and the generators end to end, as CI's new user: generate a
//! project (SQLite + memory, PostgreSQL + Redis), lint and test it, grow it with every
//! generator, lint and test again, then run it and watch a change arrive live.
//!
//! The projects build into this workspace's target directory, so only their own crates
//! (and the features they differ in) are compiled. Needs PostgreSQL (`DRAGON_TEST_PG`,
//! default `postgres://postgres@127.0.0.1:5432/test`) and Redis (`DRAGON_TEST_REDIS`):
//! without them it fails, it never skips.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use dragon_core::client::Client;
use serde_json::json;

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => {
            let dir = PathBuf::from(dir);
            if dir.is_absolute() {
                dir
            } else {
                Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(dir)
            }
        }
        None => Path::new(env!("CARGO_TARGET_TMPDIR"))
            .parent()
            .expect("target dir")
            .to_owned(),
    }
}

fn pg_base() -> String {
    std::env::var("DRAGON_TEST_PG")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

fn redis_url() -> String {
    std::env::var("DRAGON_TEST_REDIS").unwrap_or_else(|_| "redis://127.0.0.1:6379".to_owned())
}

/// Runs a command in `dir`; panics with its output if it fails. Its stdout.
fn run(dir: &Path, program: &str, args: &[&str], env: &[(&str, String)]) -> String {
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", target_dir())
        .env_remove("RUSTFLAGS")
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "`{program} {}` failed in {}:\n{stdout}\n{stderr}",
        args.join(" "),
        dir.display()
    );
    // Warnings fail the build under clippy -D warnings; for plain builds, none may appear.
    assert!(
        !stderr.contains("warning:"),
        "`{program} {}` warned:\n{stderr}",
        args.join(" ")
    );
    println!("{program} {} ({:.0?})", args.join(" "), started.elapsed());
    stdout
}

fn dragon(dir: &Path, args: &[&str]) -> String {
    run(dir, env!("CARGO_BIN_EXE_dragon"), args, &[])
}

fn lint_and_test(project: &Path, env: &[(&str, String)]) {
    run(project, "cargo", &["fmt", "--check"], env);
    run(
        project,
        "cargo",
        &["clippy", "--all-targets", "--", "-D", "warnings"],
        env,
    );
    let out = run(project, "cargo", &["test"], env);
    assert!(
        !out.contains("0 passed; 0 failed") || out.contains("1 passed"),
        "{out}"
    );
}

/// A fresh PostgreSQL database; its URL.
async fn fresh_pg() -> String {
    use sea_orm::ConnectionTrait;
    let base = pg_base();
    let admin = dragon_core::db::connect(&base)
        .await
        .expect("PostgreSQL must be running for this test (see .ci/run)");
    let name = format!("dragon_gen_{}", std::process::id());
    let _ = admin
        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name}"))
        .await;
    admin
        .execute_unprepared(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create database");
    let (server, _) = base.rsplit_once('/').expect("a database in the URL");
    format!("{server}/{name}")
}

async fn drop_pg(url: &str) {
    use sea_orm::ConnectionTrait;
    let (_, name) = url.rsplit_once('/').expect("a database in the URL");
    if let Ok(admin) = dragon_core::db::connect(&pg_base()).await {
        let _ = admin
            .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
            .await;
    }
}

struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts the built app and checks a live update end to end over real WebSockets.
async fn live_update(project: &Path, name: &str, env: &[(&str, String)]) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let bin = target_dir().join("debug").join(name);
    let _app = Running(
        Command::new(&bin)
            .current_dir(project)
            .env("DRAGON_ADDR", format!("127.0.0.1:{port}"))
            .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("start {}: {e}", bin.display())),
    );
    let url = format!("ws://127.0.0.1:{port}/ws");
    let deadline = Instant::now() + Duration::from_secs(30);
    let watcher = loop {
        match Client::connect(&url).await {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("the app did not start: {e}"),
        }
    };
    let writer = Client::connect(&url).await.unwrap();
    let mut live = watcher.subscribe("task", json!({})).await.unwrap();
    writer
        .call("task", "create", json!({"data": {"title": "milk"}}))
        .await
        .unwrap();
    let event = live
        .next_within(Duration::from_secs(5))
        .await
        .expect("the change arrives live");
    assert_eq!(event.event, "created");
    assert_eq!(event.data.unwrap()["title"], "milk");
    // The page and the JS client are served.
    for path in ["/", "/static/app.js", "/dragon/dragon.mjs", "/healthz"] {
        let body = http_get(port, path).await;
        assert!(body.starts_with("HTTP/1.1 200"), "GET {path}: {body}");
    }
}

async fn http_get(port: u16, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

fn project(name: &str, args: &[&str]) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("dragon-gen-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut all = vec!["createproject", name];
    all.extend_from_slice(args);
    let out = dragon(&dir, &all);
    assert!(out.contains("Created"), "{out}");
    dir.join(name)
}

/// Every generator, twice: the second run must change nothing.
fn grow(project: &Path) {
    let model = [
        "generate",
        "model",
        "product",
        "name:string",
        "notes:text?",
        "qty:int",
        "stock:bigint",
        "price:float",
        "active:bool",
        "due:datetime?",
        "ref_id:uuid",
        "extra:json?",
        "created_at:datetime",
    ];
    dragon(project, &model);
    dragon(project, &["generate", "router", "chat"]);
    assert!(dragon(project, &model).contains("nothing to do"));
    assert!(dragon(project, &["generate", "router", "chat"]).contains("nothing to do"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_project_builds_tests_grows_and_runs() {
    let dir = project("shop_lite", &[]);
    lint_and_test(&dir, &[]);
    grow(&dir);
    lint_and_test(&dir, &[]);
    let db = std::env::temp_dir().join(format!("dragon-gen-{}.sqlite", std::process::id()));
    let _ = std::fs::remove_file(&db);
    let env = [("DATABASE_URL", format!("sqlite://{}", db.display()))];
    live_update(&dir, "shop_lite", &env).await;
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_and_redis_project_builds_tests_grows_and_runs() {
    let (base_server, _) = pg_base()
        .rsplit_once('/')
        .map(|(a, b)| (a.to_owned(), b.to_owned()))
        .unwrap();
    let test_env = [("TEST_DATABASE_URL", pg_base())];
    let dir = project("shop-pg", &["--db", "postgres", "--broker", "redis"]);
    lint_and_test(&dir, &test_env);
    grow(&dir);
    lint_and_test(&dir, &test_env);
    let database = fresh_pg().await;
    assert!(database.starts_with(&base_server));
    let env = [
        ("DATABASE_URL", database),
        ("REDIS_URL", redis_url()),
        (
            "DRAGON_REDIS_PREFIX",
            format!("dragon-gen-{}:", std::process::id()),
        ),
    ];
    live_update(&dir, "shop-pg", &env).await;
    let _ = std::fs::remove_dir_all(dir.parent().unwrap());
    drop_pg(&env[0].1).await;
}
