//! Changes made outside the ORM (raw SQL, bulk statements) reach subscribers on PostgreSQL
//! once the table has Dragon's change-log trigger; ORM writes on it are still published once.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{Backend, TestApp, new_item, new_list};
use dragon_core::client::{Client, Subscription};
use sea_orm::ConnectionTrait;
use serde_json::{Value, json};
use todo_app::entity::todo_item;

/// A row with its timestamp in one spelling: the trigger writes PostgreSQL's JSON form
/// (`+00:00`), the model serde's (`Z`); both name the same instant.
fn normalized(mut row: Value) -> Value {
    if let Some(at) = row["created_at"].as_str()
        && let Ok(t) = chrono::DateTime::parse_from_rfc3339(at)
    {
        row["created_at"] = json!(t.timestamp_micros());
    }
    row
}

async fn stored(c: &Client, list: i64) -> HashMap<i64, Value> {
    common::items_by_id(c, list)
        .await
        .into_iter()
        .map(|(id, row)| (id, normalized(row)))
        .collect()
}

/// Applies events until `mirror` holds what the database holds (5 s at most).
async fn catch_up(mirror: &mut HashMap<i64, Value>, sub: &mut Subscription, c: &Client, list: i64) {
    let want = stored(c, list).await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while *mirror != want {
        let left = deadline.saturating_duration_since(Instant::now());
        let e = sub.next_within(left).await.unwrap_or_else(|| {
            panic!(
                "subscriber holds {} rows, the database {}",
                mirror.len(),
                want.len()
            )
        });
        match e.event.as_str() {
            "resync" => *mirror = stored(c, list).await,
            "created" | "updated" => {
                let row = normalized(e.data.unwrap());
                mirror.insert(row["id"].as_i64().unwrap(), row);
            }
            "deleted" => {
                mirror.remove(&e.data.unwrap()["id"].as_i64().unwrap());
            }
            other => panic!("unexpected {other}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_sql_and_bulk_writes_reach_subscribers_through_the_trigger() {
    let app = TestApp::start(Backend::Postgres).await;
    dragon_core::changelog::install_trigger::<todo_item::Model>(&app.db)
        .await
        .expect("install the trigger");
    let c = app.client().await;
    let list = new_list(&c, "raw").await;
    let mut sub = c
        .subscribe("todo-item", json!({"filter": {"list_id": list}}))
        .await
        .unwrap();
    let mut mirror = HashMap::new();

    app.db
        .execute_unprepared(&format!(
            "INSERT INTO todo_item (list_id, text, done, position, created_at) \
             SELECT {list}, 'row ' || g, false, g, now() FROM generate_series(1, 1000) g"
        ))
        .await
        .unwrap();
    catch_up(&mut mirror, &mut sub, &c, list).await;
    assert_eq!(mirror.len(), 1000);

    let started = Instant::now();
    let updated = app
        .db
        .execute_unprepared(&format!(
            "UPDATE todo_item SET done = true, text = text || '!' WHERE list_id = {list}"
        ))
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 1000);
    catch_up(&mut mirror, &mut sub, &c, list).await;
    println!(
        "1,000-row UPDATE seen by the subscriber in {:?}",
        started.elapsed()
    );
    assert!(mirror.values().all(|r| r["done"] == true));

    // An update of columns that are not published, or to the same values, publishes nothing.
    app.db
        .execute_unprepared(&format!(
            "UPDATE todo_item SET done = true WHERE list_id = {list}"
        ))
        .await
        .unwrap();
    // An ORM write on the table is published once, by the model, not by the trigger too.
    let one = new_item(&c, list, "through the router").await;
    let id = one["id"].clone();
    c.call(
        "todo-item",
        "update",
        json!({"id": id, "data": {"text": "edited"}}),
    )
    .await
    .unwrap();
    let mut events = Vec::new();
    while let Some(e) = sub.next_within(Duration::from_millis(700)).await {
        events.push(e);
    }
    let kinds: Vec<_> = events.iter().map(|e| e.event.as_str()).collect();
    assert_eq!(kinds, ["created", "updated"], "{events:?}");
    assert_eq!(events[1].data.as_ref().unwrap()["text"], "edited");
    assert!(events[0].version < events[1].version);
    for e in &events {
        let row = normalized(e.data.clone().unwrap());
        mirror.insert(row["id"].as_i64().unwrap(), row);
    }

    app.db
        .execute_unprepared(&format!(
            "DELETE FROM todo_item WHERE list_id = {list} AND position <= 10"
        ))
        .await
        .unwrap();
    catch_up(&mut mirror, &mut sub, &c, list).await;
    // 1,001 rows (one through the router, at position 0), eleven deleted.
    assert_eq!(mirror.len(), 990);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_trigger_needs_postgresql() {
    let app = TestApp::start(Backend::Sqlite).await;
    let err = dragon_core::changelog::install_trigger::<todo_item::Model>(&app.db)
        .await
        .expect_err("SQLite has no such trigger");
    assert!(err.to_string().contains("publish_created"), "{err}");
}
