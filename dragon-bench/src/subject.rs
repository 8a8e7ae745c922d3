//! Dragon under test: a model router over SQLite in memory; every client subscribes to
//! `{list_id: 1}`, and each event is a committed insert published by the derive.

use std::sync::Arc;

use dragon_core::broker::Message;
use dragon_core::testing::TestServer;
use dragon_core::{Dragon, DragonModel, ModelRouter, Publish};
use sea_orm::entity::prelude::*;
use sea_orm::{DatabaseConnection, Set};
use serde::{Deserialize, Serialize};

use crate::Figures;
use crate::clients::{Fleet, Plan, Source};

mod bench_item {
    use super::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
    #[sea_orm(table_name = "bench_item")]
    #[dragon(route = "bench-item")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub list_id: i64,
        pub text: String,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// How events enter Dragon.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// The published change as the derive hands it over after commit: measures Dragon itself.
    AfterCommit,
    /// A real SQLite insert through the derive's hooks: the whole path a user's write takes.
    Insert,
}

struct Commits {
    db: DatabaseConnection,
    broker: Arc<dyn dragon_core::broker::Broker>,
    mode: Mode,
    next_id: i64,
    inflight: Arc<tokio::sync::Semaphore>,
}

impl Source for Commits {
    async fn send(&mut self, t0: u64) {
        if self.mode == Mode::AfterCommit {
            self.next_id += 1;
            let row = bench_item::Model {
                id: self.next_id,
                list_id: 1,
                text: t0.to_string(),
            };
            let message = Message::created(row.to_published());
            // Many requests publish at once in a real app: keep up to 64 publishes in
            // flight, so a broker's round trip bounds latency, not the event rate.
            let permit = self
                .inflight
                .clone()
                .acquire_owned()
                .await
                .expect("permits");
            let broker = self.broker.clone();
            tokio::spawn(async move {
                broker
                    .publish("bench-item", message)
                    .await
                    .expect("publish");
                drop(permit);
            });
            return;
        }
        let row = bench_item::ActiveModel {
            list_id: Set(1),
            text: Set(t0.to_string()),
            ..Default::default()
        };
        dragon_core::publish::with_broker(self.broker.clone(), row.insert(&self.db))
            .await
            .expect("insert");
    }
}

/// One Dragon node on a free port.
async fn node(
    db: &DatabaseConnection,
    broker: Arc<dyn dragon_core::broker::Broker>,
) -> (String, TestServer) {
    let router = ModelRouter::<bench_item::Model>::new(db.clone()).filterable(["list_id"]);
    let dragon = Dragon::builder().broker(broker).route(router).build();
    let server = TestServer::start(&dragon, dragon.router())
        .await
        .expect("serve");
    (server.ws_url(), server)
}

/// Every benchmark client's subscription.
const SUBSCRIBE: &str =
    r#"{"id":1,"route":"bench-item","verb":"subscribe","args":{"filter":{"list_id":1}}}"#;

/// A fresh in-memory SQLite database with the benchmark's table.
async fn database() -> DatabaseConnection {
    let db = dragon_core::db::connect("sqlite::memory:")
        .await
        .expect("sqlite");
    dragon_core::db::create_table(&db, bench_item::Entity)
        .await
        .expect("schema");
    db
}

/// Runs the plan on Dragon: clients spread evenly over the broker's nodes, events entering
/// through the first node.
pub async fn run(plan: &Plan, broker_kind: &str, mode: Mode) -> Figures {
    let db = database().await;
    let brokers = crate::brokers::make(broker_kind).await;
    let mut urls = Vec::new();
    let mut stops = Vec::new();
    for broker in &brokers {
        let (url, server) = node(&db, broker.clone()).await;
        urls.push(url);
        stops.push(server);
    }
    let mut fleet = Fleet::connect(&urls, plan.clients, Some(SUBSCRIBE.to_owned())).await;
    let mut source = Commits {
        db,
        broker: brokers[0].clone(),
        mode,
        next_id: 0,
        inflight: Arc::new(tokio::sync::Semaphore::new(64)),
    };
    let figures = fleet.measure(plan, &mut source).await;
    for server in stops {
        server.stop().await;
    }
    figures
}

/// Resident memory (KiB) before and after `n` clients connect and subscribe.
pub async fn rss(n: usize) -> (u64, u64) {
    let db = database().await;
    let broker = crate::brokers::make("memory").await.remove(0);
    let (url, _server) = node(&db, broker).await;
    let before = crate::clients::rss_kib();
    let _fleet = Fleet::connect(&[url], n, Some(SUBSCRIBE.to_owned())).await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    (before, crate::clients::rss_kib())
}
