//! Self-publishing models: the plain traits `#[derive(DragonModel)]` implements, and the
//! sea-orm hook bodies it calls.
//!
//! The generated `ActiveModelBehavior` runs the user's [`ModelHooks`] first, then these:
//! - `before_save` (updates) loads the row's published state as it was;
//! - `after_save` publishes `created`, or `updated` with the fields that changed (nothing
//!   if none did);
//! - `before_delete` loads the row (nothing to publish if it is absent), `after_delete`
//!   publishes `deleted` with its last state.
//!
//! Changes are recorded in the change log ([`crate::changelog`]) in the write's own
//! transaction, whoever opened it; the relay publishes them once committed. Bulk statements
//! (`insert_many`, `update_many`, `delete_many`, `Entity::delete_by_id`, raw SQL) run no
//! hooks: on PostgreSQL a table trigger logs them ([`crate::changelog::install_trigger`]);
//! elsewhere publish them with [`publish_created`], [`publish_updated`], [`publish_deleted`].

use std::collections::HashMap;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ConnectionTrait, DbErr, EntityTrait,
    Iterable, ModelTrait, PrimaryKeyToColumn, QueryFilter,
};
use serde_json::{Map, Value};

use crate::broker::Message;
use crate::protocol::ChangeKind;
use crate::{changelog, publish};

/// The ActiveModel type of a model.
pub type ActiveOf<M> = <<M as ModelTrait>::Entity as EntityTrait>::ActiveModel;

/// A model that publishes its changes on a route. Implemented by `#[derive(DragonModel)]`.
pub trait Publish: ModelTrait + Clone + Send + Sync + 'static {
    /// The route its changes are published on (and a model router serves it on).
    const ROUTE: &'static str;
    /// The published fields, in order; the primary key is published as `id`.
    const FIELDS: &'static [&'static str];
    /// The object clients see: exactly the published fields.
    fn to_published(&self) -> Map<String, Value>;
}

/// A published field's JSON value, for the derive's `to_published`. A value whose `Serialize`
/// fails (a map with keys that are not text, a custom impl's error) is published as `null`
/// and the failure logged with the route and the field, so it is never silent.
#[doc(hidden)]
pub fn published_value<T: serde::Serialize + ?Sized>(route: &str, field: &str, value: &T) -> Value {
    serde_json::to_value(value).unwrap_or_else(|err| {
        tracing::error!(%route, field, error = %err,
            "a published field could not be serialized; clients get null");
        Value::Null
    })
}

/// Your own save and delete logic beside Dragon's. Every method defaults to doing nothing;
/// implement the trait yourself and mark the model `#[dragon(hooks)]` to use it.
#[async_trait::async_trait]
pub trait ModelHooks: Publish {
    /// Runs before an insert (`insert` is true) or an update, ahead of Dragon's hook; may change
    /// the row, and an error refuses the write.
    async fn before_save<C: ConnectionTrait>(
        am: ActiveOf<Self>,
        _db: &C,
        _insert: bool,
    ) -> Result<ActiveOf<Self>, DbErr>
    where
        ActiveOf<Self>: Send,
    {
        Ok(am)
    }
    /// Runs after an insert or update, before Dragon records the change; the model it returns is
    /// the one published.
    async fn after_save<C: ConnectionTrait>(
        model: Self,
        _db: &C,
        _insert: bool,
    ) -> Result<Self, DbErr> {
        Ok(model)
    }
    /// Runs before a delete, ahead of Dragon loading the row's last state; an error refuses the
    /// delete.
    async fn before_delete<C: ConnectionTrait>(
        am: ActiveOf<Self>,
        _db: &C,
    ) -> Result<ActiveOf<Self>, DbErr>
    where
        ActiveOf<Self>: Send,
    {
        Ok(am)
    }
    /// Runs after a delete, before Dragon records the `deleted` change.
    async fn after_delete<C: ConnectionTrait>(
        am: ActiveOf<Self>,
        _db: &C,
    ) -> Result<ActiveOf<Self>, DbErr>
    where
        ActiveOf<Self>: Send,
    {
        Ok(am)
    }
}

/// Published states loaded before a write, waiting for the hook after it.
/// Keyed by route, primary key and task, so concurrent writers never see each other's.
type StashKey = (&'static str, String, String);
type Stash = HashMap<StashKey, (Instant, Map<String, Value>)>;
static BEFORE: Mutex<Option<Stash>> = Mutex::new(None);

const STALE: Duration = Duration::from_secs(60);

fn stash_key<M: Publish>(pk: &str) -> StashKey {
    let task = tokio::task::try_id()
        .map(|id| format!("task {id}"))
        .unwrap_or_else(|| format!("{:?}", std::thread::current().id()));
    (M::ROUTE, pk.to_owned(), task)
}

fn stash_put<M: Publish>(pk: &str, state: Map<String, Value>) {
    let mut guard = BEFORE.lock().expect("stash lock");
    let map = guard.get_or_insert_with(HashMap::new);
    let now = Instant::now();
    // Entries whose write failed are never taken; drop them once they are old.
    if map.len() > 1024 {
        map.retain(|_, (t, _)| now.duration_since(*t) < STALE);
    }
    map.insert(stash_key::<M>(pk), (now, state));
}

fn stash_take<M: Publish>(pk: &str) -> Option<Map<String, Value>> {
    let mut guard = BEFORE.lock().expect("stash lock");
    guard
        .as_mut()?
        .remove(&stash_key::<M>(pk))
        .map(|(_, state)| state)
}

/// The primary key as stash key; formatted like [`ModelTrait::get_primary_key_value`]'s.
fn pk_string<A: ActiveModelTrait>(am: &A) -> Option<String> {
    am.get_primary_key_value().map(|v| format!("{v:?}"))
}

/// Loads the stored row an ActiveModel's primary key names.
async fn load<M, C>(am: &ActiveOf<M>, db: &C) -> Result<Option<M>, DbErr>
where
    M: Publish,
    C: ConnectionTrait,
    M::Entity: EntityTrait<Model = M>,
{
    let mut query = M::Entity::find();
    for pk in <M::Entity as EntityTrait>::PrimaryKey::iter() {
        let col = pk.into_column();
        match am.get(col).into_value() {
            Some(v) => query = query.filter(col.eq(v)),
            None => return Ok(None),
        }
    }
    query.one(db).await
}

tokio::task_local! {
    /// A row's published state that its writer has just read in the same transaction.
    static KNOWN: (&'static str, String, Map<String, Value>);
}

/// Runs `write` (an update or delete of `row`, which the caller has just read in the same
/// transaction) with `row`'s state known to the hooks, so they do not read it again.
pub(crate) async fn with_known_state<M: Publish, F: Future>(row: &M, write: F) -> F::Output {
    let pk = format!("{:?}", row.get_primary_key_value());
    KNOWN.scope((M::ROUTE, pk, row.to_published()), write).await
}

/// The primary key and published state of the row `am` names, before a write: as the writer
/// passed it in (see [`with_known_state`]), else read from the database.
async fn state_before<M, C>(
    am: &ActiveOf<M>,
    db: &C,
) -> Result<Option<(String, Map<String, Value>)>, DbErr>
where
    M: Publish,
    C: ConnectionTrait,
    M::Entity: EntityTrait<Model = M>,
{
    let Some(pk) = pk_string(am) else {
        return Ok(None);
    };
    let known = KNOWN
        .try_with(|(route, key, state)| (*route == M::ROUTE && *key == pk).then(|| state.clone()))
        .ok()
        .flatten();
    if let Some(state) = known {
        return Ok(Some((pk, state)));
    }
    Ok(load::<M, C>(am, db)
        .await?
        .map(|row| (pk, row.to_published())))
}

fn touches_published<M: Publish>(am: &ActiveOf<M>) -> bool {
    <M::Entity as EntityTrait>::Column::iter()
        .any(|col| am.get(col).is_set() && M::FIELDS.contains(&col.json_key()))
}

#[doc(hidden)]
pub async fn before_save<M, C>(am: ActiveOf<M>, db: &C, insert: bool) -> Result<ActiveOf<M>, DbErr>
where
    M: ModelHooks,
    M::Entity: EntityTrait<Model = M>,
    ActiveOf<M>: ActiveModelBehavior + Send,
    C: ConnectionTrait,
{
    let am = M::before_save(am, db, insert).await?;
    changelog::orm_write_begins(db, M::ROUTE).await?;
    if !insert
        && touches_published::<M>(&am)
        && let Some((pk, old)) = state_before::<M, C>(&am, db).await?
    {
        stash_put::<M>(&pk, old);
    }
    Ok(am)
}

#[doc(hidden)]
pub async fn after_save<M, C>(model: M, db: &C, insert: bool) -> Result<M, DbErr>
where
    M: ModelHooks,
    M::Entity: EntityTrait<Model = M>,
    ActiveOf<M>: ActiveModelBehavior + Send,
    C: ConnectionTrait,
{
    let model = M::after_save(model, db, insert).await?;
    let new = model.to_published();
    if insert {
        changelog::record(db, M::ROUTE, ChangeKind::Created, None, Some(&new)).await?;
    } else {
        let pk = format!("{:?}", model.get_primary_key_value());
        if let Some(old) = stash_take::<M>(&pk)
            && old != new
        {
            changelog::record(db, M::ROUTE, ChangeKind::Updated, Some(&old), Some(&new)).await?;
        }
    }
    Ok(model)
}

#[doc(hidden)]
pub async fn before_delete<M, C>(am: ActiveOf<M>, db: &C) -> Result<ActiveOf<M>, DbErr>
where
    M: ModelHooks,
    M::Entity: EntityTrait<Model = M>,
    ActiveOf<M>: ActiveModelBehavior + Send,
    C: ConnectionTrait,
{
    let am = M::before_delete(am, db).await?;
    changelog::orm_write_begins(db, M::ROUTE).await?;
    if let Some((pk, row)) = state_before::<M, C>(&am, db).await? {
        stash_put::<M>(&pk, row);
    }
    Ok(am)
}

#[doc(hidden)]
pub async fn after_delete<M, C>(am: ActiveOf<M>, db: &C) -> Result<ActiveOf<M>, DbErr>
where
    M: ModelHooks,
    M::Entity: EntityTrait<Model = M>,
    ActiveOf<M>: ActiveModelBehavior + Send,
    C: ConnectionTrait,
{
    let am = M::after_delete(am, db).await?;
    if let Some(old) = pk_string(&am).and_then(|pk| stash_take::<M>(&pk)) {
        changelog::record(db, M::ROUTE, ChangeKind::Deleted, Some(&old), None).await?;
    }
    Ok(am)
}

/// Publishes `created` for a row written without hooks (e.g. `insert_many`), at once (not
/// through the change log: call it after the write commits).
pub async fn publish_created<M: Publish>(model: &M) {
    publish::emit(M::ROUTE, Message::created(model.to_published())).await;
}

/// Publishes `updated` for a row written without hooks; nothing if no published field changed.
pub async fn publish_updated<M: Publish>(before: &M, after: &M) {
    let (old, new) = (before.to_published(), after.to_published());
    if old != new {
        publish::emit(M::ROUTE, Message::updated(old, new)).await;
    }
}

/// Publishes `deleted` for a row removed without hooks (e.g. `delete_many`).
pub async fn publish_deleted<M: Publish>(model: &M) {
    publish::emit(M::ROUTE, Message::deleted(model.to_published())).await;
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use serde_json::{Value, json};

    use super::published_value;

    #[test]
    fn a_field_is_published_as_its_json_value() {
        assert_eq!(published_value("todo-item", "text", "milk"), json!("milk"));
        assert_eq!(
            published_value("todo-item", "tags", &["a", "b"]),
            json!(["a", "b"])
        );
    }

    #[test]
    fn a_field_that_cannot_be_serialized_is_published_as_null() {
        // JSON object keys must be text: a map keyed by byte vectors has no JSON form.
        let unrepresentable = BTreeMap::from([(vec![1u8, 2], 1)]);
        assert_eq!(
            published_value("todo-item", "odd", &unrepresentable),
            Value::Null
        );
    }
}
