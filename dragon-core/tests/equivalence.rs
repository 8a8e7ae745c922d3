//! The equivalence rule, as a property: for random rows and random filters, the rows
//! `get_list` returns (SQL) are exactly the rows the in-memory evaluation accepts, on SQLite
//! and on PostgreSQL. Operators, `$or`, `$not`, nulls, `%`, `_`, `\`, case and non-ASCII.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use dragon_core::client::Client;
use dragon_core::filter::Filter;
use dragon_core::schema::Schema;
use dragon_core::{Dragon, DragonModel, ModelRouter, Publish};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use sea_orm::entity::prelude::*;
use sea_orm::{ConnectionTrait, DatabaseConnection, Set};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

mod sample {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
    #[sea_orm(table_name = "sample")]
    #[dragon(route = "sample")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub n: Option<i64>,
        pub f: Option<f64>,
        pub s: Option<String>,
        pub b: Option<bool>,
        pub t: Option<ChronoDateTimeUtc>,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

const FIELDS: [&str; 6] = ["id", "n", "f", "s", "b", "t"];
const ALPHABET: &[&str] = &[
    "a", "A", "b", "B", "é", "É", "%", "_", "\\", " ", "z", "Z", "中", "ß",
];

fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(prop::sample::select(ALPHABET), 0..4).prop_map(|parts| parts.concat())
}

fn instant() -> impl Strategy<Value = DateTime<Utc>> {
    (0i64..6).prop_map(|k| {
        Utc.timestamp_opt(1_767_225_600 + k / 2, (k % 2) as u32 * 500_000_000)
            .unwrap()
    })
}

#[derive(Debug, Clone)]
struct Row {
    n: Option<i64>,
    f: Option<f64>,
    s: Option<String>,
    b: Option<bool>,
    t: Option<DateTime<Utc>>,
}

fn row() -> impl Strategy<Value = Row> {
    (
        prop::option::weighted(0.8, -2i64..3),
        prop::option::weighted(0.8, prop::sample::select(vec![-1.5f64, 0.0, 2.25, 7.0])),
        prop::option::weighted(0.8, text()),
        prop::option::weighted(0.8, any::<bool>()),
        prop::option::weighted(0.8, instant()),
    )
        .prop_map(|(n, f, s, b, t)| Row { n, f, s, b, t })
}

/// A value of the field's type for a filter, timestamps written with varying offsets.
fn value_for(field: &'static str) -> BoxedStrategy<Value> {
    match field {
        "id" => (0i64..40).prop_map(Value::from).boxed(),
        "n" => (-2i64..3).prop_map(Value::from).boxed(),
        "f" => prop::sample::select(vec![-1.5f64, 0.0, 1.0, 2.25])
            .prop_map(Value::from)
            .boxed(),
        "s" => text().prop_map(Value::from).boxed(),
        "b" => any::<bool>().prop_map(Value::from).boxed(),
        _ => (instant(), prop::sample::select(vec![0i32, 3600, -5400]))
            .prop_map(|(t, off)| {
                let tz = chrono::FixedOffset::east_opt(off).unwrap();
                Value::from(t.with_timezone(&tz).to_rfc3339())
            })
            .boxed(),
    }
}

fn leaf() -> impl Strategy<Value = (String, Value)> {
    prop::sample::select(FIELDS.to_vec()).prop_flat_map(|field| {
        let mut ops = vec!["", "eq", "ne", "in", "isnull"];
        if field != "b" {
            ops.extend(["lt", "lte", "gt", "gte"]);
        }
        if field == "s" {
            ops.extend(["contains", "icontains", "startswith"]);
        }
        (
            prop::sample::select(ops),
            value_for(field),
            prop::collection::vec(value_for(field), 0..3),
            any::<bool>(),
        )
            .prop_map(move |(op, v, list, flag)| {
                let key = if op.is_empty() {
                    field.to_owned()
                } else {
                    format!("{field}__{op}")
                };
                let value = match op {
                    "in" => Value::Array(list),
                    "isnull" => Value::Bool(flag),
                    _ => v,
                };
                (key, value)
            })
    })
}

fn filter() -> impl Strategy<Value = Value> {
    let leaf_obj = prop::collection::vec(leaf(), 1..3)
        .prop_map(|entries| Value::Object(entries.into_iter().collect::<Map<String, Value>>()));
    leaf_obj.prop_recursive(3, 12, 3, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..3).prop_map(|fs| json!({"$or": fs})),
            inner.clone().prop_map(|f| json!({"$not": f})),
            (inner.clone(), leaf()).prop_map(|(mut f, (k, v))| {
                if let Value::Object(m) = &mut f {
                    m.entry(k).or_insert(v);
                }
                f
            }),
        ]
    })
}

struct Env {
    /// Filters that selected some rows but not all: the interesting ones.
    partial: std::sync::atomic::AtomicUsize,
    db: DatabaseConnection,
    client: Client,
    schema: Schema,
}

async fn database(postgres: bool) -> DatabaseConnection {
    let name = format!("dragon_eq_{}", uuid::Uuid::new_v4().simple());
    let url = if postgres {
        let base = std::env::var("DRAGON_TEST_PG")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
        let admin = dragon_core::db::connect(&base)
            .await
            .expect("PostgreSQL must be running");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        format!("{}/{name}", base.rsplit_once('/').unwrap().0)
    } else {
        format!("sqlite://{}/{name}.sqlite", std::env::temp_dir().display())
    };
    let db = dragon_core::db::connect(&url).await.unwrap();
    dragon_core::db::create_table(&db, sample::Entity)
        .await
        .unwrap();
    db
}

async fn setup(postgres: bool) -> Env {
    let db = database(postgres).await;
    let router = || ModelRouter::<sample::Model>::new(db.clone()).filterable(FIELDS);
    let schema = router().schema().clone();
    let dragon = Dragon::builder().route(router()).build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = dragon.router();
    tokio::spawn(async move {
        dragon
            .serve_until(listener, app, std::future::pending())
            .await
    });
    let client = Client::connect(&format!("ws://{addr}/ws")).await.unwrap();
    Env {
        partial: Default::default(),
        db,
        client,
        schema,
    }
}

async fn check(env: &Env, rows: Vec<Row>, filters: Vec<Value>) -> Result<(), TestCaseError> {
    sample::Entity::delete_many().exec(&env.db).await.unwrap();
    let models = rows.into_iter().map(|r| sample::ActiveModel {
        n: Set(r.n),
        f: Set(r.f),
        s: Set(r.s),
        b: Set(r.b),
        t: Set(r.t),
        ..Default::default()
    });
    sample::Entity::insert_many(models)
        .exec(&env.db)
        .await
        .unwrap();
    let stored: Vec<Map<String, Value>> = sample::Entity::find()
        .all(&env.db)
        .await
        .unwrap()
        .iter()
        .map(Publish::to_published)
        .collect();
    for f in filters {
        let parsed = Filter::parse(Some(&f), &env.schema).expect("generated filters are valid");
        let in_memory: BTreeSet<i64> = stored
            .iter()
            .filter(|o| parsed.matches(o))
            .map(|o| o["id"].as_i64().unwrap())
            .collect();
        let out = env
            .client
            .call("sample", "get_list", json!({"filter": f, "per_page": 500}))
            .await
            .map_err(|e| TestCaseError::fail(format!("{f}: {e}")))?;
        let from_sql: BTreeSet<i64> = out
            .data
            .as_array()
            .unwrap()
            .iter()
            .map(|o| o["id"].as_i64().unwrap())
            .collect();
        prop_assert_eq!(&from_sql, &in_memory, "filter {} over rows {:?}", f, stored);
        if !from_sql.is_empty() && from_sql.len() < stored.len() {
            env.partial
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        prop_assert_eq!(
            out.meta.unwrap()["total"].as_u64(),
            Some(from_sql.len() as u64)
        );
    }
    Ok(())
}

fn run(postgres: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let env = rt.block_on(setup(postgres));
    let cases = std::env::var("DRAGON_PROPTEST_CASES")
        .ok()
        .and_then(|c| c.parse().ok())
        .unwrap_or(64);
    let mut runner = TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    });
    let strategy = (
        prop::collection::vec(row(), 1..10),
        prop::collection::vec(filter(), 1..12),
    );
    runner
        .run(&strategy, |(rows, filters)| {
            rt.block_on(check(&env, rows, filters))
        })
        .unwrap();
    let partial = env.partial.load(std::sync::atomic::Ordering::Relaxed);
    assert!(
        partial as u32 >= cases,
        "too few discriminating filters: {partial}"
    );
    rt.shutdown_timeout(Duration::from_secs(1));
}

#[test]
fn equivalence_on_sqlite() {
    run(false);
}

#[test]
fn equivalence_on_postgres() {
    run(true);
}
