//! Two updates of one row racing through two connections: the subscribers must end with the
//! database's final state, round after round (and each writer's reply must be what it wrote,
//! or the row as the other left it).

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Backend, TestApp, new_item, new_list};
use serde_json::{Value, json};

async fn racing_updates_end_in_the_databases_state(backend: Backend) {
    let app = TestApp::start(backend).await;
    let setup = app.client().await;
    let list = new_list(&setup, "race").await;
    let id = new_item(&setup, list, "start").await["id"].clone();
    let watcher = app.client().await;
    let mut live = watcher
        .subscribe("todo-item", json!({"filter": {"list_id": list}}))
        .await
        .unwrap();
    let (a, b) = (Arc::new(app.client().await), Arc::new(app.client().await));
    let mut latest: Value = Value::Null;
    let rounds = 150;
    for round in 0..rounds {
        let write = |c: Arc<dragon_core::client::Client>, text: String, done: bool| {
            let id = id.clone();
            tokio::spawn(async move {
                c.call(
                    "todo-item",
                    "update",
                    json!({"id": id, "data": {"text": text, "done": done}}),
                )
                .await
                .expect("update")
            })
        };
        // Different fields and values, and sometimes the value the row already has.
        let ta = write(a.clone(), format!("a{}", round % 3), round % 2 == 0);
        let tb = write(b.clone(), format!("b{}", round % 2), round % 3 == 0);
        let (_, _) = (ta.await.unwrap(), tb.await.unwrap());
        let stored = setup
            .call("todo-item", "get_single", json!({"id": id}))
            .await
            .unwrap()
            .data;
        let deadline = Instant::now() + Duration::from_secs(3);
        while latest != stored {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(e) = live.next_within(left).await else {
                panic!("round {round}: subscriber holds {latest} but the database {stored}");
            };
            latest = e.data.unwrap();
        }
    }
}

both_backends!(racing_updates_end_in_the_databases_state);
