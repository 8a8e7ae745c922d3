//! The live blog over real sockets: who may write, posts live for readers, and likes that
//! are counted exactly and reach readers coalesced.

use std::sync::Arc;
use std::time::{Duration, Instant};

use dragon_core::auth::Tokens;
use dragon_core::broker::{Broker, MemoryBroker};
use dragon_core::client::{Client, ClientError};
use dragon_core::testing::TestServer;
use serde_json::json;
use whisper::accounts::Accounts;

const WAIT: Duration = Duration::from_secs(5);

async fn start() -> (TestServer, Client, i64) {
    let dir = std::env::temp_dir().join("liveblog-tests");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join(format!("{}.sqlite", uuid::Uuid::new_v4().simple()));
    let db = liveblog::open_database(&format!("sqlite://{}", file.display()))
        .await
        .unwrap();
    liveblog::demo(&db).await.unwrap();
    let tokens = Tokens::new(b"liveblog tests secret, long enough to sign");
    let broker: Arc<dyn Broker> = Arc::new(MemoryBroker::new());
    let dragon = liveblog::builder(&db, tokens.clone(), broker).build();
    let server = TestServer::start(&dragon, liveblog::app(&dragon, Accounts { db, tokens }))
        .await
        .unwrap();
    let (status, body) = server
        .post_json(
            "/login",
            &json!({"username": "ann", "password": "ann-pass"}),
        )
        .await
        .unwrap();
    assert_eq!(status, 200, "{body}");
    let ann = server
        .client_with_token(body["token"].as_str().unwrap())
        .await
        .unwrap();
    let blogs = ann.call("blog", "get_list", json!({})).await.unwrap().data;
    let news = blogs[0]["id"].as_i64().unwrap();
    (server, ann, news)
}

fn code(r: Result<dragon_core::protocol::Output, ClientError>) -> String {
    match r {
        Err(ClientError::Server(b)) => b.code.as_str().to_owned(),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authors_write_and_readers_see_it_live() {
    let (server, ann, news) = start().await;
    let reader = server.client().await.unwrap();
    let mut live = reader
        .subscribe("post", json!({"filter": {"blog_id": news}}))
        .await
        .unwrap();
    let post = ann
        .call(
            "post",
            "create",
            json!({"data": {"blog_id": news, "title": "Hello", "body": "first"}}),
        )
        .await
        .unwrap()
        .data;
    let e = live.next_within(WAIT).await.unwrap();
    assert_eq!(
        (e.event.as_str(), e.data.unwrap()["title"].clone()),
        ("created", json!("Hello"))
    );
    ann.call(
        "post",
        "update",
        json!({"id": post["id"], "data": {"title": "Hello, world"}}),
    )
    .await
    .unwrap();
    let e = live.next_within(WAIT).await.unwrap();
    assert_eq!(e.event, "updated");
    assert!(e.data.as_ref().unwrap()["updated_at"].is_string());
    ann.call("post", "delete", json!({"id": post["id"]}))
        .await
        .unwrap();
    assert_eq!(live.next_within(WAIT).await.unwrap().event, "deleted");
    // Readers read and like, never write.
    assert_eq!(
        code(
            reader
                .call(
                    "post",
                    "create",
                    json!({"data": {"blog_id": news, "title": "x", "body": ""}})
                )
                .await
        ),
        "unauthenticated"
    );
    assert_eq!(
        code(
            reader
                .call(
                    "blog",
                    "create",
                    json!({"data": {"slug": "x", "title": "x"}})
                )
                .await
        ),
        "unauthenticated"
    );
    assert_eq!(
        code(reader.call("post", "like", json!({"id": 9999})).await),
        "not_found"
    );
    assert_eq!(
        code(reader.call("post", "like", json!({"id": "x"})).await),
        "bad_request"
    );
    assert_eq!(
        code(reader.call("post", "dislike", json!({})).await),
        "unknown_verb"
    );
}

/// 1,000 likes from 20 clients at once: the database has exactly 1,000, and a reader gets
/// a handful of coalesced updates ending at 1,000, not one event per like.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn likes_are_exact_and_reach_readers_coalesced() {
    let (server, ann, news) = start().await;
    let post = ann
        .call(
            "post",
            "create",
            json!({"data": {"blog_id": news, "title": "Like me", "body": ""}}),
        )
        .await
        .unwrap()
        .data;
    let id = post["id"].as_i64().unwrap();
    let reader = server.client().await.unwrap();
    let mut live = reader
        .subscribe("post", json!({"filter": {"id": id}}))
        .await
        .unwrap();
    let started = Instant::now();
    let mut clients = Vec::new();
    for _ in 0..20 {
        let c = server.client().await.unwrap();
        clients.push(tokio::spawn(async move {
            for _ in 0..50 {
                c.call("post", "like", json!({"id": id})).await.unwrap();
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    let liked_in = started.elapsed();
    let stored = ann
        .call("post", "get_single", json!({"id": id}))
        .await
        .unwrap()
        .data;
    assert_eq!(stored["likes"], 1000, "every like stored exactly once");
    let mut events = 0;
    let mut last = 0;
    let deadline = Instant::now() + WAIT;
    while last < 1000 && Instant::now() < deadline {
        if let Some(e) = live.next_within(Duration::from_millis(500)).await {
            events += 1;
            last = e.data.unwrap()["likes"].as_i64().unwrap();
        }
    }
    assert_eq!(last, 1000, "the latest count arrives");
    let bound = (liked_in.as_millis() / 250) as usize + 3;
    println!("1,000 likes in {liked_in:?}: the reader got {events} updates (bound {bound})");
    assert!(events <= bound, "{events} updates for 1,000 likes");
}
