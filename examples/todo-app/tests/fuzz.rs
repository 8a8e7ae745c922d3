//! A fuzzer for Dragon's input handling, on stable Rust (proptest, no libFuzzer).
//!
//! `frames_over_a_real_socket` starts the todo-app on SQLite, in a child process so that a
//! crash is reported rather than fatal, and sends over a real WebSocket first every file of
//! `tests/fuzz-corpus/` (raw frame bytes, one per file), then generated frames of four
//! families: garbage text frames, invalid-UTF-8 text frames, requests on valid skeletons
//! with wrong or extreme fields, and random filters. For every frame: exactly one reply,
//! carrying the request's id when it was readable (else `null`), `ok` or a protocol error
//! code other than `internal`; then `dragon.ping` on the same socket still answers (a text
//! frame that is not UTF-8 is answered, then the connection closed with 1007, as RFC 6455
//! requires; the next frame gets a new connection). Each
//! kind of violation is minimized once and reported with its input; the test then fails.
//!
//! `filter_parse_in_process` feeds random JSON to `Filter::parse` and uses what parses
//! (`matches`, the SQL builders): `Ok` or `bad_request`, never a panic. (Very wide `$or`
//! lists stay out of it: a stack overflow would abort the test binary; the socket test
//! sends them to the child process instead.)
//!
//! Short run (CI): `cargo test -p todo-app --test fuzz`.
//! Long run, with a benchmark-style summary (cases/s) at the end:
//! `DRAGON_FUZZ_CASES=200000 cargo test --release -p todo-app --test fuzz -- --nocapture`
//!
//! Settings: `DRAGON_FUZZ_CASES` (generated cases per test, split over the families;
//! default 4,000), `DRAGON_FUZZ_SEED` (default fixed, so CI repeats; printed),
//! `DRAGON_FUZZ_SHRINK_MS` (time to minimize each kind of failure; default 1,000),
//! `DRAGON_FUZZ_SAVE=dir` (write each minimized failing input there, for the corpus).

mod common;
#[path = "fuzz/mod.rs"]
mod fuzz;

use std::cell::RefCell;
use std::time::Instant;

use dragon_core::filter::Filter;
use dragon_core::schema::{FieldType, Schema};
use fuzz::oracle::Violation;
use fuzz::run::{Failure, Settings, Tally, fuzz, replay_corpus, save};
use fuzz::session::Session;
use fuzz::{child, filters, frames, json, wire};
use proptest::strategy::{BoxedStrategy, Strategy};
use serde_json::{Value, json};

fn corpus_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-corpus")
}

/// The generated families, each run by its own runner so one failure does not hide the
/// others.
fn families() -> Vec<(&'static str, BoxedStrategy<Vec<u8>>)> {
    vec![
        ("frames", frames::text_frame()),
        ("invalid-utf8", frames::invalid_utf8_frame()),
        ("requests", frames::request_frame()),
        ("filters", frames::filter_frame()),
    ]
}

/// Panics with every failure, each with its input; nothing is skipped.
fn fail_loudly(what: &str, failures: &[Failure]) {
    if failures.is_empty() {
        return;
    }
    let list: Vec<String> = failures.iter().map(|f| format!("- {f}")).collect();
    panic!(
        "{what}: {} invariant violation(s):\n{}",
        failures.len(),
        list.join("\n")
    );
}

#[test]
fn frames_over_a_real_socket() {
    let settings = Settings::from_env();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let session = RefCell::new(Session::default());
    println!(
        "fuzz: seed {:#x}, {} generated cases (DRAGON_FUZZ_SEED, DRAGON_FUZZ_CASES)",
        settings.seed, settings.cases
    );

    let start = Instant::now();
    let mut failures = replay_corpus(&rt, &session, &corpus_dir());
    let corpus = Tally {
        cases: session.borrow().frames,
        secs: start.elapsed().as_secs_f64(),
    };
    println!("{}", corpus.line("fuzz corpus replay"));

    let families = families();
    let per_family = settings.cases / families.len() as u32;
    let mut generated = Tally::default();
    for (i, (name, strategy)) in families.into_iter().enumerate() {
        let mut runner = settings.runner(i as u64);
        let check = |frame: &Vec<u8>| rt.block_on(session.borrow_mut().check(frame));
        let (tally, found) = fuzz(&mut runner, &strategy, per_family, name, check, Vec::clone);
        println!("{}", tally.line(&format!("fuzz family {name}")));
        generated.cases += tally.cases;
        generated.secs += tally.secs;
        failures.extend(found);
    }
    println!("{}", generated.line("fuzz generated"));
    println!(
        "fuzz total: {} frames checked in {:.1} s, {} failure(s), {} server panic(s), {} \
         server restart(s)",
        session.borrow().frames,
        start.elapsed().as_secs_f64(),
        failures.len(),
        wire::all_panics().len(),
        session.borrow().restarts
    );
    save(&settings, &failures);
    fail_loudly("frames over a real socket", &failures);
}

/// Not a test of its own: the server process of `frames_over_a_real_socket` (see
/// `fuzz/child.rs`). Without `DRAGON_FUZZ_SERVER_CHILD` it returns at once.
#[test]
fn server_child() {
    if std::env::var_os(child::CHILD_ENV).is_some() {
        child::serve();
    }
}

/// A schema with every field type, nullable fields and a non-filterable one.
fn schema() -> Schema {
    let mut schema = Schema::new(vec![])
        .field("id", FieldType::Integer, false)
        .field("list_id", FieldType::Integer, false)
        .field("text", FieldType::Text, false)
        .field("done", FieldType::Bool, false)
        .field("position", FieldType::Integer, false)
        .field("created_at", FieldType::Timestamp, false)
        .field("score", FieldType::Float, true)
        .field("note", FieldType::Text, true)
        .field("meta", FieldType::Json, true);
    schema.get_mut("position").expect("position").filterable = false;
    schema
}

/// Rows to evaluate parsed filters on: one full, one with nulls.
fn rows() -> Vec<serde_json::Map<String, Value>> {
    let full = json!({"id": 1, "list_id": 2, "text": "Milk É %_", "done": true,
        "position": -3, "created_at": "2020-01-01T00:00:00Z", "score": 1.5, "note": "n",
        "meta": {"a": [1]}});
    let nulls = json!({"id": 9223372036854775807i64, "list_id": -1, "text": "",
        "done": false, "position": 0, "created_at": "1970-01-01T00:00:00Z", "score": null,
        "note": null, "meta": null});
    [full, nulls]
        .into_iter()
        .map(|v| v.as_object().expect("row").clone())
        .collect()
}

/// Uses a parsed filter every way the server does: in memory, and as SQL on both databases.
fn exercise(filter: &Filter, rows: &[serde_json::Map<String, Value>]) {
    use sea_orm::DbBackend;
    use sea_orm::sea_query::{Expr, PostgresQueryBuilder, Query, SqliteQueryBuilder};
    for row in rows {
        let _ = filter.matches(row);
    }
    let _ = (filter.fields(), filter.index_key());
    for backend in [DbBackend::Sqlite, DbBackend::Postgres] {
        let mut query = Query::select();
        query
            .expr(Expr::val(1))
            .from("t")
            .cond_where(filter.to_condition(backend));
        let _ = match backend {
            DbBackend::Postgres => query.build(PostgresQueryBuilder),
            _ => query.build(SqliteQueryBuilder),
        };
    }
}

/// Parses `value` as a filter and uses what parses; a violation for a panic or for an
/// error other than `bad_request`.
fn parse_and_use(
    value: &Value,
    schema: &Schema,
    rows: &[serde_json::Map<String, Value>],
) -> Result<(), Violation> {
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        Filter::parse(Some(value), schema).map(|filter| exercise(&filter, rows))
    }));
    match outcome {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) if e.code().as_str() == "bad_request" => Ok(()),
        Ok(Err(e)) => Err(Violation::new("not bad_request", format!("{e:?}"))),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            Err(Violation::new(format!("panic: {what}"), what))
        }
    }
}

#[test]
fn filter_parse_in_process() {
    let settings = Settings::from_env();
    let (schema, rows) = (schema(), rows());
    let strategy = proptest::prop_oneof![
        6 => filters::filter_arg(),
        1 => json::wild(),
    ]
    .prop_map(|j| j.to_value());
    let mut runner = settings.runner(100);
    let check = |value: &Value| parse_and_use(value, &schema, &rows);
    let to_bytes = |value: &Value| value.to_string().into_bytes();
    let cases = settings.cases;
    let (tally, failures) = fuzz(
        &mut runner,
        &strategy,
        cases,
        "Filter::parse",
        check,
        to_bytes,
    );
    println!("{}", tally.line("fuzz Filter::parse in process"));
    fail_loudly("Filter::parse in process", &failures);
}
