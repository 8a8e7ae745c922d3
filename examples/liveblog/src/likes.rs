//! Likes at scale: every like is one atomic `UPDATE ... SET likes = likes + 1` (exact in the
//! database, whatever the rate), and readers see the count as coalesced updates: a post
//! liked a thousand times a second is published a few times a second, always ending at the
//! latest count, instead of a thousand events per reader.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dragon_core::Error;
use dragon_core::broker::Broker;
use sea_orm::{ConnectionTrait, DatabaseConnection, DbBackend, EntityTrait, Statement};
use tokio::sync::Notify;

use crate::entity::post;

/// How often a liked post's count is published, at most.
pub const FLUSH_EVERY: Duration = Duration::from_millis(250);

/// The posts liked since the last flush, and the last state published of each.
#[derive(Clone)]
pub struct Likes {
    db: DatabaseConnection,
    broker: Arc<dyn Broker>,
    dirty: Arc<Mutex<HashSet<i64>>>,
    published: Arc<Mutex<HashMap<i64, post::Model>>>,
    wake: Arc<Notify>,
}

impl Likes {
    /// Starts the flusher (one per node; each node publishes the posts liked through it).
    pub fn start(db: DatabaseConnection, broker: Arc<dyn Broker>) -> Likes {
        let likes = Likes {
            db,
            broker,
            dirty: Arc::default(),
            published: Arc::default(),
            wake: Arc::default(),
        };
        tokio::spawn(likes.clone().flush_loop());
        likes
    }

    /// One like of post `id`, stored before this returns; `not_found` if there is no such post.
    pub async fn like(&self, id: i64) -> Result<(), Error> {
        let backend = self.db.get_database_backend();
        let sql = match backend {
            DbBackend::Postgres => "UPDATE post SET likes = likes + 1 WHERE id = $1",
            _ => "UPDATE post SET likes = likes + 1 WHERE id = ?",
        };
        let done = self
            .db
            .execute_raw(Statement::from_sql_and_values(backend, sql, [id.into()]))
            .await?;
        if done.rows_affected() == 0 {
            return Err(Error::NotFound);
        }
        self.dirty.lock().expect("likes lock").insert(id);
        self.wake.notify_one();
        Ok(())
    }

    async fn flush_loop(self) {
        loop {
            self.wake.notified().await;
            tokio::time::sleep(FLUSH_EVERY).await;
            let ids: Vec<i64> = self.dirty.lock().expect("likes lock").drain().collect();
            for id in ids {
                if let Err(err) = self.flush(id).await {
                    tracing::warn!(post = id, error = %err, "could not publish a like count");
                }
            }
        }
    }

    /// Publishes post `id` as it is now, as an update of what was published last.
    async fn flush(&self, id: i64) -> Result<(), Error> {
        let Some(now) = post::Entity::find_by_id(id).one(&self.db).await? else {
            return Ok(()); // deleted meanwhile: its deletion was published
        };
        let before = self
            .published
            .lock()
            .expect("likes lock")
            .insert(id, now.clone())
            .unwrap_or_else(|| post::Model {
                likes: now.likes - 1,
                ..now.clone()
            });
        let publish = dragon_core::model::publish_updated(&before, &now);
        dragon_core::publish::with_broker(self.broker.clone(), publish).await;
        Ok(())
    }
}
