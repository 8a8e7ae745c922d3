//! The derive: models publish their own committed changes, and only committed ones.

mod common;

use chrono::Utc;
use common::{Backend, QUIET, TestApp, WAIT};
use dragon_core::client::Subscription;
use dragon_core::publish::with_broker;
use sea_orm::{
    ActiveModelTrait, DbErr, EntityTrait, IntoActiveModel, ModelTrait, Set, TransactionTrait,
};
use serde_json::json;
use todo_app::entity::{todo_item, todo_list};

async fn quiet(sub: &mut Subscription) {
    if let Some(e) = sub.next_within(QUIET).await {
        panic!("unexpected event {e:?}");
    }
}

fn new_item(list: i64, text: &str) -> todo_item::ActiveModel {
    todo_item::ActiveModel {
        list_id: Set(list),
        text: Set(text.to_owned()),
        created_at: Set(Utc::now()),
        ..Default::default()
    }
}

async fn model_changes_publish_after_commit_only(backend: Backend) {
    let app = TestApp::start(backend).await;
    let c = app.client().await;
    let mut sub = c.subscribe("todo-item", json!({})).await.unwrap();
    let broker = app.dragon.broker().clone();
    let db = app.db.clone();

    with_broker(broker, async {
        let list = todo_list::ActiveModel {
            name: Set("L".into()),
            created_at: Set(Utc::now()),
            ..Default::default()
        }
        .insert(&db)
        .await
        .unwrap();

        // Outside a transaction: published as soon as the statement is done.
        let item = new_item(list.id, "plain").insert(&db).await.unwrap();
        let e = sub.next_within(WAIT).await.expect("created");
        assert_eq!(e.event, "created");
        assert_eq!(e.data.unwrap()["text"], "plain");

        // A rolled-back transaction publishes nothing.
        let rolled: Result<(), _> = dragon_core::transaction(&db, |txn| {
            Box::pin(async move {
                new_item(list.id, "never").insert(txn).await?;
                Err::<(), DbErr>(DbErr::Custom("changed my mind".into()))
            })
        })
        .await;
        assert!(rolled.is_err());
        quiet(&mut sub).await;

        // A committed one publishes, after the commit: nothing is seen while it is open.
        let (gate_tx, gate_rx) = tokio::sync::oneshot::channel::<()>();
        let db2 = db.clone();
        let list_id = list.id;
        let txn_task = tokio::spawn(with_broker(app.dragon.broker().clone(), async move {
            dragon_core::transaction(&db2, |txn| {
                Box::pin(async move {
                    new_item(list_id, "committed").insert(txn).await?;
                    let _ = gate_rx.await;
                    Ok::<(), DbErr>(())
                })
            })
            .await
        }));
        quiet(&mut sub).await;
        gate_tx.send(()).unwrap();
        txn_task.await.unwrap().unwrap();
        let e = sub.next_within(WAIT).await.expect("created after commit");
        assert_eq!(e.data.unwrap()["text"], "committed");

        // An update through the model: `changed` names exactly the published fields changed.
        let mut am = item.clone().into_active_model();
        am.text = Set("renamed".into());
        am.position = Set(7);
        let item = am.update(&db).await.unwrap();
        let e = sub.next_within(WAIT).await.expect("updated");
        assert_eq!(e.event, "updated");
        let mut changed = e.changed.unwrap();
        changed.sort();
        assert_eq!(changed, ["position", "text"]);

        // Setting a field to its current value changes nothing and publishes nothing.
        let mut am = item.clone().into_active_model();
        am.text = Set("renamed".into());
        am.update(&db).await.unwrap();
        quiet(&mut sub).await;

        // A raw sea-orm transaction: its change is in the log with it, so it publishes
        // after its commit, and never if it rolls back.
        let txn = db.begin().await.unwrap();
        new_item(list.id, "raw, rolled back")
            .insert(&txn)
            .await
            .unwrap();
        quiet(&mut sub).await;
        txn.rollback().await.unwrap();
        quiet(&mut sub).await;
        let txn = db.begin().await.unwrap();
        new_item(list.id, "raw").insert(&txn).await.unwrap();
        quiet(&mut sub).await;
        txn.commit().await.unwrap();
        let e = sub.next_within(WAIT).await.expect("created after commit");
        assert_eq!(e.event, "created");
        assert_eq!(e.data.unwrap()["text"], "raw");

        // A delete publishes the last state; deleting a missing row publishes nothing.
        let gone = item.clone();
        gone.clone().delete(&db).await.unwrap();
        let e = sub.next_within(WAIT).await.expect("deleted");
        assert_eq!(e.event, "deleted");
        assert_eq!(e.data.unwrap()["text"], "renamed");
        let res = gone.delete(&db).await.unwrap();
        assert_eq!(res.rows_affected, 0);
        quiet(&mut sub).await;

        // A delete rolled back with its transaction publishes nothing.
        let keep = new_item(list.id, "keep").insert(&db).await.unwrap();
        sub.next_within(WAIT).await.expect("created keep");
        let _ = dragon_core::transaction(&db, |txn| {
            Box::pin(async move {
                keep.delete(txn).await?;
                Err::<(), DbErr>(DbErr::Custom("no".into()))
            })
        })
        .await;
        quiet(&mut sub).await;

        // Bulk statements run no hooks: the explicit publish call covers them.
        let bulk = todo_item::Entity::insert(new_item(list.id, "bulk"))
            .exec_with_returning(&db)
            .await
            .unwrap();
        quiet(&mut sub).await;
        dragon_core::model::publish_created(&bulk).await;
        let e = sub.next_within(WAIT).await.expect("explicitly published");
        assert_eq!(e.data.unwrap()["text"], "bulk");
    })
    .await;
}

both_backends!(model_changes_publish_after_commit_only);
