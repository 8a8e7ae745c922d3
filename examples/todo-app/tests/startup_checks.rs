//! Mistakes an app author can make are found at start-up, with a message that says what to
//! write, instead of failing a client's request later.

mod common;

use common::{Backend, fresh_database};
use dragon_core::prelude::*;
use dragon_core::testing::TestServer;
use todo_app::entity::{todo_item, todo_list};

fn message(err: BuildError) -> String {
    err.to_string()
}

#[tokio::test]
async fn a_required_column_nobody_fills_is_refused_at_build() {
    let url = fresh_database(Backend::Sqlite).await;
    let db = todo_app::open_database(&url).await.unwrap();
    // `created_at` is required, not writable, and not set by the server.
    let items = ModelRouter::<todo_item::Model>::new(db.clone()).writable(["list_id", "text"]);
    let err = Dragon::builder()
        .route(items)
        .try_build()
        .err()
        .expect("refused");
    let msg = message(err);
    assert!(msg.contains("created_at"), "{msg}");
    assert!(
        msg.contains(".server_set(\"created_at\""),
        "says what to write: {msg}"
    );
    // Set by the server: fine. Read-only routes need nothing.
    let items = ModelRouter::<todo_item::Model>::new(db.clone())
        .writable(["list_id", "text"])
        .server_set("created_at", |_| now());
    let lists = ModelRouter::<todo_list::Model>::new(db.clone());
    assert!(
        Dragon::builder()
            .route(items)
            .route(lists)
            .try_build()
            .is_ok()
    );
}

#[tokio::test]
async fn reserved_and_duplicate_routes_are_refused() {
    let url = fresh_database(Backend::Sqlite).await;
    let db = todo_app::open_database(&url).await.unwrap();
    let lists = || ModelRouter::<todo_list::Model>::new(db.clone());
    let err = Dragon::builder()
        .route(lists())
        .route(lists())
        .try_build()
        .err()
        .unwrap();
    assert_eq!(message(err), "two routers are named \"todo-list\"");
}

#[tokio::test]
#[should_panic(expected = "dragon: two routers are named")]
async fn build_panics_with_the_reason() {
    let url = fresh_database(Backend::Sqlite).await;
    let db = todo_app::open_database(&url).await.unwrap();
    let lists = || ModelRouter::<todo_list::Model>::new(db.clone());
    let _ = Dragon::builder().route(lists()).route(lists()).build();
}

#[tokio::test]
async fn a_sqlite_database_opened_without_dragons_functions_cannot_serve() {
    let url = fresh_database(Backend::Sqlite).await;
    // Create the schema the right way, then open it as a plain sea-orm user would.
    todo_app::open_database(&url).await.unwrap();
    let plain = sea_orm::Database::connect(format!("{url}?mode=rwc"))
        .await
        .unwrap();
    let dragon = todo_app::builder(&plain).build();
    let err = TestServer::start(&dragon, dragon.router())
        .await
        .err()
        .expect("refused before serving");
    let msg = err.to_string();
    assert!(msg.contains("dragon_core::db::connect"), "{msg}");
    // Opened with dragon_core::db::connect, the same app serves.
    let db = dragon_core::db::connect(&url).await.unwrap();
    let dragon = todo_app::builder(&db).build();
    let server = TestServer::start(&dragon, dragon.router()).await.unwrap();
    let client = server.client().await.unwrap();
    client
        .call(
            "todo-item",
            "get_list",
            json!({"filter": {"text__icontains": "É"}}),
        )
        .await
        .unwrap();
    server.stop().await;
}

#[tokio::test]
async fn custom_routers_answer_unknown_verbs_with_one_line() {
    assert_eq!(
        Error::unknown_verb("chat", "fly").to_string(),
        "route \"chat\" has no verb \"fly\""
    );
}
