//! The model router: one sea-orm model's CRUD, queries and live subscriptions on a route.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::sync::Arc;

use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, ColumnTrait, ColumnType, Condition, DatabaseConnection,
    EntityTrait, FromQueryResult, IdenStatic, IntoActiveModel, Iterable, PaginatorTrait,
    QueryFilter, TransactionError, TryIntoModel,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value, json};

mod read;

use super::rules::{RowRule, RowRuleKind, Rule, Verb, VerbRules, row_filter};
use super::validate::Validator;
use super::{Ctx, Router};
use crate::error::{Error, FieldErrors, arg};
use crate::filter::{Filter, Op, Operand};
use crate::model::{ActiveOf, ModelHooks, with_known_state};
use crate::presence::{Keys, Presence, PresenceKey};
use crate::protocol::Output;
use crate::publish;
use crate::schema::{Field, FieldType, Schema};

type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;
type ServerSet = Arc<dyn Fn(&Ctx) -> Value + Send + Sync>;
type Exists =
    Arc<dyn Fn(DatabaseConnection, Value) -> BoxFuture<'static, Result<bool, Error>> + Send + Sync>;
type Scope = Arc<dyn Fn(&Ctx) -> Result<Value, Error> + Send + Sync>;
type Authorize = Arc<dyn Fn(&Ctx, &str) -> Result<(), Error> + Send + Sync>;

const DEFAULT_MAX_SNAPSHOT: usize = 10_000;

/// Serves model `M` (a `#[derive(DragonModel)]` sea-orm model) on its route.
///
/// Nothing is filterable, orderable or writable until declared: the published fields are
/// readable, the primary key is `id`.
pub struct ModelRouter<M> {
    db: DatabaseConnection,
    schema: Schema,
    /// The same fields, all filterable: scopes may use any published field.
    scope_schema: Schema,
    writable: HashSet<String>,
    defaults: HashSet<String>,
    server_set: Vec<(String, ServerSet)>,
    validators: Vec<(String, Validator)>,
    references: Vec<Reference>,
    scope: Option<Scope>,
    authorize: Option<Authorize>,
    verb_rules: VerbRules,
    readable: Option<RowRule>,
    writable_rows: Option<RowRule>,
    deletable_rows: Option<RowRule>,
    max_snapshot: usize,
    presence: Option<Presence>,
    verbs: HashMap<String, super::verbs::DataHandler>,
    _model: PhantomData<fn() -> M>,
}

fn field_type(ty: &ColumnType) -> FieldType {
    match ty {
        ColumnType::TinyInteger
        | ColumnType::SmallInteger
        | ColumnType::Integer
        | ColumnType::BigInteger
        | ColumnType::TinyUnsigned
        | ColumnType::SmallUnsigned
        | ColumnType::Unsigned
        | ColumnType::BigUnsigned => FieldType::Integer,
        ColumnType::Float | ColumnType::Double => FieldType::Float,
        ColumnType::Char(_) | ColumnType::String(_) | ColumnType::Text => FieldType::Text,
        ColumnType::Boolean => FieldType::Bool,
        ColumnType::TimestampWithTimeZone => FieldType::Timestamp,
        _ => FieldType::Json,
    }
}

impl<M> ModelRouter<M>
where
    M: ModelHooks + Serialize + DeserializeOwned + FromQueryResult,
    M::Entity: EntityTrait<Model = M>,
    ActiveOf<M>:
        ActiveModelBehavior + ActiveModelTrait<Entity = M::Entity> + TryIntoModel<M> + Send + Sync,
    M: IntoActiveModel<ActiveOf<M>>,
{
    /// A router for `M` over `db`. Panics if a published field is not a column of the same
    /// name, or if there is no `id`: a programming error found at startup.
    #[track_caller]
    pub fn new(db: DatabaseConnection) -> Self {
        let mut fields = Vec::new();
        let mut defaults = HashSet::new();
        for name in M::FIELDS {
            let col = <M::Entity as EntityTrait>::Column::iter()
                .find(|c| c.as_str() == *name)
                .unwrap_or_else(|| {
                    panic!(
                        "dragon: published field {name:?} of route {:?} is not a column",
                        M::ROUTE
                    )
                });
            let def = col.def();
            if def.get_column_default().is_some() {
                defaults.insert(name.to_string());
            }
            fields.push(Field {
                name: name.to_string(),
                ty: field_type(def.get_column_type()),
                nullable: def.is_null(),
                filterable: false,
                orderable: false,
            });
        }
        assert!(
            fields.iter().any(|f| f.name == "id"),
            "dragon: route {:?} publishes no `id` field",
            M::ROUTE
        );
        let schema = Schema::new(fields);
        let mut scope_schema = schema.clone();
        for f in schema.fields() {
            if let Some(s) = scope_schema.get_mut(&f.name) {
                s.filterable = f.ty != FieldType::Json;
            }
        }
        ModelRouter {
            db,
            schema,
            scope_schema,
            writable: HashSet::new(),
            defaults,
            server_set: Vec::new(),
            validators: Vec::new(),
            references: Vec::new(),
            scope: None,
            authorize: None,
            verb_rules: VerbRules::default(),
            readable: None,
            writable_rows: None,
            deletable_rows: None,
            max_snapshot: DEFAULT_MAX_SNAPSHOT,
            presence: None,
            verbs: HashMap::new(),
            _model: PhantomData,
        }
    }

    #[track_caller]
    fn declared<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
        what: &str,
    ) -> Vec<String> {
        names
            .into_iter()
            .map(|n| {
                assert!(
                    self.schema.get(n).is_some(),
                    "dragon: {what} field {n:?} is not published on {:?}",
                    M::ROUTE
                );
                n.to_owned()
            })
            .collect()
    }

    /// Marks scalar fields with `flag` (JSON fields can be neither filtered nor ordered).
    #[track_caller]
    fn mark<'a>(
        &mut self,
        names: impl IntoIterator<Item = &'a str>,
        what: &str,
        flag: fn(&mut Field),
    ) {
        for n in self.declared(names, what) {
            let f = self.schema.get_mut(&n).expect("declared");
            assert!(f.ty != FieldType::Json, "dragon: {n:?} cannot be {what}");
            flag(f);
        }
    }

    /// Fields clients may filter on.
    #[track_caller]
    pub fn filterable<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        self.mark(names, "filterable", |f| f.filterable = true);
        self
    }

    /// Fields clients may order by.
    #[track_caller]
    pub fn orderable<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        self.mark(names, "orderable", |f| f.orderable = true);
        self
    }

    /// Fields clients may set on create and update. `id` never is.
    #[track_caller]
    pub fn writable<'a>(mut self, names: impl IntoIterator<Item = &'a str>) -> Self {
        for n in self.declared(names, "writable") {
            assert!(n != "id", "dragon: id is never writable");
            self.writable.insert(n);
        }
        self
    }

    /// A field the server sets on create (clients may not).
    #[track_caller]
    pub fn server_set(
        mut self,
        name: &str,
        value: impl Fn(&Ctx) -> Value + Send + Sync + 'static,
    ) -> Self {
        self.declared([name], "server-set");
        self.server_set.push((name.to_owned(), Arc::new(value)));
        self
    }

    /// A check on a writable field's new value.
    #[track_caller]
    pub fn validate(mut self, name: &str, validator: Validator) -> Self {
        self.declared([name], "validated");
        self.validators.push((name.to_owned(), validator));
        self
    }

    /// The field must hold the id of a row of `R` the caller may see: if this server serves
    /// `R`'s route, with every rule of that route for the caller (as its `get_single` would
    /// answer), else a row that exists. A row that is missing and one the caller may not see
    /// get the same `validation` error, so ids cannot be probed.
    #[track_caller]
    pub fn references<R: EntityTrait>(mut self, name: &str) -> Self
    where
        R::Model: FromQueryResult + crate::model::Publish + Sync,
    {
        self.declared([name], "reference");
        let exists: Exists = Arc::new(|db, value| {
            Box::pin(async move {
                let Some(pk) = <R::PrimaryKey as Iterable>::iter().next() else {
                    return Ok(false);
                };
                let col = sea_orm::PrimaryKeyToColumn::into_column(pk);
                let v = match value {
                    Value::Number(n) => match n.as_i64() {
                        Some(i) => sea_orm::Value::from(i),
                        None => return Ok(false),
                    },
                    Value::String(s) => sea_orm::Value::from(s),
                    _ => return Ok(false),
                };
                let n = R::find().filter(col.eq(v)).count(&db).await?;
                Ok(n > 0)
            })
        });
        self.references.push(Reference {
            field: name.to_owned(),
            route: <R::Model as crate::model::Publish>::ROUTE,
            exists,
        });
        self
    }

    /// A filter (JSON, section 4) forced onto every query and subscription, e.g.
    /// `{"owner_id": <the user's id>}`. Objects outside it are invisible (`not_found`) and
    /// cannot be created or moved there (`forbidden`).
    pub fn scope(
        mut self,
        scope: impl Fn(&Ctx) -> Result<Value, Error> + Send + Sync + 'static,
    ) -> Self {
        self.scope = Some(Arc::new(scope));
        self
    }

    /// Who may use `verbs`. Once a route declares any rule, every verb without one is
    /// refused (`unauthenticated` to anonymous callers, `forbidden` to users): deny by
    /// default. `unsubscribe` is always allowed.
    ///
    /// ```no_run
    /// # mod todo_item {
    /// #     use sea_orm::entity::prelude::*;
    /// #     use serde::{Deserialize, Serialize};
    /// #     #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, dragon_core::DragonModel)]
    /// #     #[sea_orm(table_name = "todo_item")]
    /// #     #[dragon(route = "todo-item")]
    /// #     pub struct Model {
    /// #         #[sea_orm(primary_key)]
    /// #         pub id: i64,
    /// #         pub text: String,
    /// #     }
    /// #     #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    /// #     pub enum Relation {}
    /// # }
    /// # use dragon_core::prelude::*;
    /// # fn routes(db: DatabaseConnection) -> ModelRouter<todo_item::Model> {
    /// # let router = ModelRouter::<todo_item::Model>::new(db);
    /// router
    ///     .permit(&Verb::READ, Rule::Anyone)
    ///     .permit(&Verb::WRITE, Rule::user(|u| u["staff"] == true))
    /// # }
    /// ```
    pub fn permit(mut self, verbs: &[Verb], rule: Rule) -> Self {
        self.verb_rules
            .permit(verbs.iter().map(|v| v.as_str()), rule);
        self
    }

    /// The rows a user may read: a filter (JSON, as clients write them, over any published
    /// field) built from the user, e.g. `|u| Ok(json!({"owner_id": u?["id"]}))`. Compiled
    /// once per connection and user, and applied to `get_list`, `get_single`, every
    /// subscription and so every live event, replay and coalesced frame, presence keys and
    /// references. A row that leaves a subscriber's readable set reaches it as `deleted` with
    /// the last state it was allowed to see. Return `Err(Error::Unauthenticated)` (or
    /// `Forbidden`) to refuse a user outright. The fields must be published (to hide a
    /// column's value, publish another column derived from it).
    pub fn readable_by(
        mut self,
        rule: impl Fn(Option<&Value>) -> Result<Value, Error> + Send + Sync + 'static,
    ) -> Self {
        self.readable = Some(Arc::new(rule));
        self
    }

    /// The rows a user may write: checked on the stored row before an update or delete
    /// (`forbidden` if it does not match) and on the row after a create or update (the
    /// write is rolled back if it does not). Rows outside the readable set are `not_found`
    /// first.
    pub fn writable_by(
        mut self,
        rule: impl Fn(Option<&Value>) -> Result<Value, Error> + Send + Sync + 'static,
    ) -> Self {
        self.writable_rows = Some(Arc::new(rule));
        self
    }

    /// A verb of the route's own beside the model ones (`post.like`, say), with typed
    /// arguments and reply like [`super::Verbs::verb`]; subject to [`ModelRouter::permit`]
    /// under its name.
    #[track_caller]
    pub fn verb<A, R, F, Fut>(mut self, name: &str, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
    {
        assert!(
            name.parse::<Verb>().is_err(),
            "dragon: {name:?} is a model verb of {:?}",
            M::ROUTE
        );
        self.verbs
            .insert(name.to_owned(), super::verbs::data_handler(handler));
        self
    }

    /// Who may use custom verbs declared with [`ModelRouter::verb`].
    pub fn permit_verbs(mut self, verbs: &[&str], rule: Rule) -> Self {
        self.verb_rules.permit(verbs.iter().copied(), rule);
        self
    }

    /// The rows a user may delete, when that differs from [`ModelRouter::writable_by`]
    /// (e.g. moderators delete anyone's messages but edit only their own).
    pub fn deletable_by(
        mut self,
        rule: impl Fn(Option<&Value>) -> Result<Value, Error> + Send + Sync + 'static,
    ) -> Self {
        self.deletable_rows = Some(Arc::new(rule));
        self
    }

    /// The most objects a `subscribe` snapshot may return (default 10,000); more is a
    /// `bad_request`, so one subscription cannot make the server load a whole table.
    pub fn max_snapshot(mut self, n: usize) -> Self {
        self.max_snapshot = n;
        self
    }

    /// Decides whether the caller may use a verb at all (e.g. writes only for staff).
    pub fn authorize(
        mut self,
        f: impl Fn(&Ctx, &str) -> Result<(), Error> + Send + Sync + 'static,
    ) -> Self {
        self.authorize = Some(Arc::new(f));
        self
    }

    /// Enables presence on this route (`presence_join`, `presence_update`, `presence_leave`,
    /// `presence_watch`; see [`crate::presence`]). With [`Keys::Objects`] or
    /// [`Keys::ObjectsOrStrings`], an id key must name an object the caller can
    /// `get_single` (`not_found` otherwise).
    pub fn presence(mut self, presence: Presence) -> Self {
        self.presence = Some(presence);
        self
    }

    /// Whether the caller may be present on `key` under `rule` (see [`Keys`]).
    async fn presence_key_visible(
        &self,
        ctx: &Ctx,
        key: PresenceKey,
        rule: Keys,
    ) -> Result<(), Error> {
        let id_ty = self.schema.get("id").expect("id is published").ty;
        match (rule, &key) {
            (Keys::Any, _) => Ok(()),
            (Keys::ObjectsOrStrings, PresenceKey::Str(_)) if id_ty != FieldType::Text => Ok(()),
            _ => {
                let by_id = self
                    .id_filter(ctx, &json!({ "id": key.to_json() }))
                    .map_err(|_| {
                        Error::bad_request(format!(
                            "key must be the id of a {:?} object (a {})",
                            M::ROUTE,
                            id_ty.name()
                        ))
                    })?;
                self.find_one(&by_id).await.map(|_| ())
            }
        }
    }

    /// A route that takes writes must be able to fill every required column: written by
    /// clients, set by the server, defaulted, nullable, or the primary key.
    fn check_required(&self) -> Result<(), String> {
        if self.writable.is_empty() {
            return Ok(()); // a read-only route
        }
        let keys: Vec<String> = <M::Entity as EntityTrait>::PrimaryKey::iter()
            .map(|pk| {
                sea_orm::PrimaryKeyToColumn::into_column(pk)
                    .as_str()
                    .to_owned()
            })
            .collect();
        for col in <M::Entity as EntityTrait>::Column::iter() {
            let name = col.as_str();
            let def = col.def();
            let filled = keys.iter().any(|k| k == name)
                || def.is_null()
                || def.get_column_default().is_some()
                || self.writable.contains(name)
                || self.server_set.iter().any(|(n, _)| n == name);
            if !filled {
                return Err(format!(
                    "route {:?}: column `{name}` is required, but clients may not write it and \
                     the server does not set it, so every create would fail; add \
                     .writable([\"{name}\"]) or .server_set(\"{name}\", |_| dragon_core::now()) \
                     (or another value), or make it an Option or give it a default",
                    M::ROUTE
                ));
            }
        }
        Ok(())
    }

    /// The route's published fields as clients may use them.
    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    fn backend(&self) -> sea_orm::DbBackend {
        self.db.get_database_backend()
    }

    /// What the caller may read: the route's scope and its readable rule for the user.
    fn scope_filter(&self, ctx: &Ctx) -> Result<Filter, Error> {
        let scope = match &self.scope {
            None => Filter::all(),
            Some(scope) => self.rule_filter(&scope(ctx)?, "scope")?,
        };
        Ok(scope.and(self.row_rule(ctx, RowRuleKind::Read)?))
    }

    /// A row rule compiled for the caller's user (once per connection and user).
    fn row_rule(&self, ctx: &Ctx, kind: RowRuleKind) -> Result<Filter, Error> {
        let rule = match kind {
            RowRuleKind::Read => &self.readable,
            RowRuleKind::Write => &self.writable_rows,
            // Deletes follow the write rule unless the route has one of their own.
            RowRuleKind::Delete if self.deletable_rows.is_none() => &self.writable_rows,
            RowRuleKind::Delete => &self.deletable_rows,
        };
        row_filter(ctx, M::ROUTE, kind, rule.as_ref(), &self.scope_schema)
    }

    fn rule_filter(&self, value: &Value, what: &str) -> Result<Filter, Error> {
        Filter::parse(Some(value), &self.scope_schema)
            .map_err(|e| Error::Internal(format!("the {what} of {:?} is invalid: {e}", M::ROUTE)))
    }

    /// The client's filter with the router's scope forced on.
    fn visible(&self, ctx: &Ctx, args: &Value) -> Result<Filter, Error> {
        let filter = ctx.client_filter(args.get("filter"), &self.schema)?;
        Ok(self.scope_filter(ctx)?.and(filter))
    }

    fn id_filter(&self, ctx: &Ctx, args: &Value) -> Result<Filter, Error> {
        let raw = arg(args, "id")?;
        let id = self.schema.get("id").expect("id is published");
        let value = id
            .ty
            .scalar(raw)
            .ok_or_else(|| Error::bad_request(format!("id must be a {}", id.ty.name())))?;
        let by_id = Filter::Cmp {
            field: "id".into(),
            ty: id.ty,
            nullable: false,
            op: Op::Eq,
            operand: Operand::One(value),
        };
        Ok(self.scope_filter(ctx)?.and(by_id))
    }

    fn condition(&self, filter: &Filter) -> Condition {
        filter.to_condition(self.backend())
    }

    /// Checks `data` against the declared fields; `create` also demands the required ones.
    async fn check_data(&self, data: &Map<String, Value>, create: bool) -> Result<(), Error> {
        let mut errors = FieldErrors::new();
        let mut add = |f: &str, m: String| errors.entry(f.to_owned()).or_default().push(m);
        for (key, value) in data {
            let Some(field) = self.schema.get(key) else {
                add(key, "unknown field".into());
                continue;
            };
            if !self.writable.contains(key) {
                add(key, "read-only field".into());
                continue;
            }
            if value.is_null() {
                if !field.nullable {
                    add(key, "may not be null".into());
                }
                continue;
            }
            if !field.ty.accepts(value) {
                add(key, format!("must be a value of type {}", field.ty.name()));
                continue;
            }
            for (name, v) in &self.validators {
                if name == key
                    && let Err(msg) = v.check(value)
                {
                    add(key, msg);
                }
            }
        }
        if create {
            for f in self.schema.fields() {
                let required = self.writable.contains(&f.name)
                    && !f.nullable
                    && !self.defaults.contains(&f.name)
                    && !data.contains_key(&f.name);
                if required {
                    add(&f.name, "this field is required".into());
                }
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(Error::Validation(errors))
        }
    }

    /// Refuses, as `forbidden`, data that would put the object outside the caller's scope,
    /// before anything else looks at it: so referencing another tenant's rows cannot tell
    /// whether they exist. (Scopes over fields the data does not give are checked on the
    /// stored row instead.)
    fn refuse_outside(scope: &Filter, object: &Map<String, Value>) -> Result<(), Error> {
        let judged = scope.fields().iter().all(|f| object.contains_key(*f));
        if judged && !scope.matches(object) {
            return Err(Error::Forbidden("outside your scope".into()));
        }
        Ok(())
    }

    fn data_arg(args: &Value) -> Result<&Map<String, Value>, Error> {
        arg(args, "data")?
            .as_object()
            .ok_or_else(|| Error::bad_request("data must be an object"))
    }

    async fn create(&self, ctx: &Ctx, args: Value) -> Result<Output, Error> {
        let data = Self::data_arg(&args)?;
        self.check_data(data, true).await?;
        let mut object = data.clone();
        for (name, value) in &self.server_set {
            object.insert(name.clone(), value(ctx));
        }
        let scope = self
            .scope_filter(ctx)?
            .and(self.row_rule(ctx, RowRuleKind::Write)?);
        Self::refuse_outside(&scope, &object)?;
        check_references(ctx, &self.references, &self.db, data).await?;
        let am = ActiveOf::<M>::from_json(Value::Object(object)).map_err(|e| {
            // Client data was checked field by field; a missing field is the router's
            // mistake (a required column no one sets), not the client's.
            let msg = e.to_string();
            if msg.contains("missing field") {
                Error::Internal(format!("create on {:?}: {msg}", M::ROUTE))
            } else {
                Error::bad_request(format!("data does not fit the model: {msg}"))
            }
        })?;
        let model = transact(ctx, &self.db, move |txn| {
            Box::pin(async move {
                let model = am.insert(txn).await?;
                ensure_in_scope(&scope, model)
            })
        })
        .await?;
        Ok(Output::data(Value::Object(model.to_published())))
    }

    async fn update(&self, ctx: &Ctx, args: Value) -> Result<Output, Error> {
        let by_id = self.id_filter(ctx, &args)?;
        let data = Self::data_arg(&args)?.clone();
        self.check_data(&data, false).await?;
        let write_rule = self.row_rule(ctx, RowRuleKind::Write)?;
        let scope = self.scope_filter(ctx)?.and(write_rule.clone());
        // Fields the data leaves alone keep the row in scope (it was found through it).
        Self::refuse_outside(&scope, &data)?;
        check_references(ctx, &self.references, &self.db, &data).await?;
        let cond = self.condition(&by_id);
        let model = transact(ctx, &self.db, move |txn| {
            Box::pin(async move {
                let old = locked(M::Entity::find().filter(cond), txn)
                    .one(txn)
                    .await?
                    .ok_or(Error::NotFound)?;
                writable(&write_rule, &old)?;
                let mut merged = serde_json::to_value(&old)?;
                let obj = merged
                    .as_object_mut()
                    .ok_or_else(|| Error::Internal("model is no object".into()))?;
                for (k, v) in &data {
                    obj.insert(k.clone(), v.clone());
                }
                let new: M = serde_json::from_value(merged)
                    .map_err(|e| Error::bad_request(format!("data does not fit the model: {e}")))?;
                let mut am: ActiveOf<M> = old.clone().into_active_model();
                for col in <M::Entity as EntityTrait>::Column::iter() {
                    if data.contains_key(col.as_str()) {
                        am.set(col, new.get(col));
                    }
                }
                let model = if am.is_changed() {
                    // The hooks get the state just read instead of reading it again.
                    with_known_state(&old, am.update(txn)).await?
                } else {
                    new
                };
                ensure_in_scope(&scope, model)
            })
        })
        .await?;
        Ok(Output::data(Value::Object(model.to_published())))
    }

    async fn delete(&self, ctx: &Ctx, args: Value) -> Result<Output, Error> {
        let by_id = self.id_filter(ctx, &args)?;
        let id = arg(&args, "id")?.clone();
        let cond = self.condition(&by_id);
        let write_rule = self.row_rule(ctx, RowRuleKind::Delete)?;
        transact(ctx, &self.db, move |txn| {
            Box::pin(async move {
                let row = locked(M::Entity::find().filter(cond), txn)
                    .one(txn)
                    .await?
                    .ok_or(Error::NotFound)?;
                writable(&write_rule, &row)?;
                with_known_state(&row, row.clone().delete(txn)).await?;
                Ok(())
            })
        })
        .await?;
        Ok(Output::data(json!({ "id": id })))
    }
}

/// A field holding the id of another route's object.
struct Reference {
    field: String,
    route: &'static str,
    exists: Exists,
}

/// `validation` errors for referenced rows that do not exist or the caller may not see.
async fn check_references(
    ctx: &Ctx,
    references: &[Reference],
    db: &DatabaseConnection,
    data: &Map<String, Value>,
) -> Result<(), Error> {
    let mut errors = FieldErrors::new();
    for r in references {
        let Some(value) = data.get(&r.field).filter(|v| !v.is_null()) else {
            continue;
        };
        let ok = if ctx.routers.contains_key(r.route) {
            ctx.can_see(r.route, value).await?
        } else {
            (r.exists)(db.clone(), value.clone()).await?
        };
        if !ok {
            errors
                .entry(r.field.clone())
                .or_default()
                .push("does not exist".into());
        }
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(Error::Validation(errors))
    }
}

/// The row a write reads first, locked until the transaction ends where the database can
/// (PostgreSQL: `FOR UPDATE`; SQLite serializes writers anyway): two writes racing on one row
/// then each compare against the state the other committed, and none publishes a stale diff.
fn locked<E: EntityTrait>(
    query: sea_orm::Select<E>,
    txn: &sea_orm::DatabaseTransaction,
) -> sea_orm::Select<E> {
    use sea_orm::{ConnectionTrait, QuerySelect};
    if txn.get_database_backend() == sea_orm::DbBackend::Postgres {
        query.lock_exclusive()
    } else {
        query
    }
}

/// `forbidden` unless the stored row matches the caller's write rule.
fn writable<M: crate::model::Publish>(rule: &Filter, row: &M) -> Result<(), Error> {
    if rule.matches(&row.to_published()) {
        Ok(())
    } else {
        Err(Error::Forbidden("you may not change this object".into()))
    }
}

/// The written object, or `forbidden` (rolling the write back) if it left the caller's scope.
fn ensure_in_scope<M: crate::model::Publish>(scope: &Filter, model: M) -> Result<M, Error> {
    if scope.matches(&model.to_published()) {
        Ok(model)
    } else {
        Err(Error::Forbidden("outside your scope".into()))
    }
}

/// How long a write's reply waits for its changes to be relayed (see [`transact`]).
const RELAY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// Runs a write in a Dragon transaction, mapping errors; once it has committed, waits (at
/// most [`RELAY_WAIT`]) until this node has dispatched the changes it recorded, so the
/// reply follows its own events: a client that subscribes after "done" does not get its own
/// change as news.
async fn transact<T, F>(ctx: &Ctx, db: &DatabaseConnection, f: F) -> Result<T, Error>
where
    T: Send,
    F: for<'c> FnOnce(&'c sea_orm::DatabaseTransaction) -> publish::TxnFuture<'c, T, Error> + Send,
{
    let (result, recorded) = crate::changelog::recording(publish::transaction(db, f)).await;
    let value = match result {
        Ok(v) => v,
        Err(TransactionError::Connection(e)) => return Err(e.into()),
        Err(TransactionError::Transaction(e)) => return Err(e),
    };
    for (route, version) in recorded {
        if !ctx
            .hub
            .relayed(&ctx.conn.outbox, &route, version, RELAY_WAIT)
            .await
        {
            tracing::warn!(%route, version, "a committed change is not relayed yet; answering anyway");
        }
    }
    Ok(value)
}

#[async_trait::async_trait]
impl<M> Router for ModelRouter<M>
where
    M: ModelHooks + Serialize + DeserializeOwned + FromQueryResult,
    M::Entity: EntityTrait<Model = M>,
    ActiveOf<M>:
        ActiveModelBehavior + ActiveModelTrait<Entity = M::Entity> + TryIntoModel<M> + Send + Sync,
    M: IntoActiveModel<ActiveOf<M>>,
{
    fn name(&self) -> &str {
        M::ROUTE
    }

    fn check(&self) -> Result<(), String> {
        self.check_required()
    }

    fn database(&self) -> Option<&DatabaseConnection> {
        Some(&self.db)
    }

    async fn check_services(&self) -> Result<(), String> {
        let probe = sea_orm::Statement::from_string(
            sea_orm::DbBackend::Sqlite,
            format!("SELECT {}('A')", crate::filter::SQLITE_LOWER_FN),
        );
        let log = sea_orm::Statement::from_string(
            self.backend(),
            "SELECT COUNT(*) AS n FROM dragon_relayed",
        );
        if sea_orm::ConnectionTrait::query_one_raw(&self.db, log)
            .await
            .is_err()
        {
            return Err(format!(
                "the database of route {:?} has no change log (it was opened with \
                 sea_orm::Database::connect?): open it with dragon_core::db::connect(url), or \
                 run dragon_core::changelog::migrate(&db) first",
                M::ROUTE
            ));
        }
        if self.backend() != sea_orm::DbBackend::Sqlite {
            return Ok(());
        }
        match sea_orm::ConnectionTrait::query_one_raw(&self.db, probe).await {
            Ok(_) => Ok(()),
            Err(_) => Err(format!(
                "the database of route {:?} lacks Dragon's SQL functions (it was opened with \
                 sea_orm::Database::connect?): open it with dragon_core::db::connect(url)",
                M::ROUTE
            )),
        }
    }

    async fn call(&self, ctx: &Ctx, verb: &str, args: Value) -> Result<Output, Error> {
        // Before any rule, so a verb the route lacks (presence without `.presence`) answers
        // `unknown_verb` whoever asks, and `/metrics` counts it as such.
        let offered = match verb.parse::<Verb>() {
            Ok(_) => !Presence::handles(verb) || self.presence.is_some(),
            Err(_) => self.verbs.contains_key(verb),
        };
        if !offered {
            return Err(Error::UnknownVerb {
                route: M::ROUTE.to_owned(),
                verb: verb.to_owned(),
            });
        }
        self.verb_rules.check(verb, ctx.user().as_ref())?;
        if let Some(authorize) = &self.authorize {
            authorize(ctx, verb)?;
        }
        match verb {
            "get_list" => self.get_list(ctx, args).await,
            "get_single" => {
                let row = self.find_one(&self.id_filter(ctx, &args)?).await?;
                Ok(Output::data(Value::Object(row.to_published())))
            }
            "create" => self.create(ctx, args).await,
            "update" => self.update(ctx, args).await,
            "delete" => self.delete(ctx, args).await,
            "subscribe" => self.subscribe(ctx, args).await,
            v if Presence::handles(v) && self.presence.is_some() => {
                let presence = self.presence.as_ref().expect("checked");
                let rule = presence.key_rule();
                presence
                    .call(ctx, M::ROUTE, v, args, |key| {
                        self.presence_key_visible(ctx, key, rule)
                    })
                    .await
            }
            "unsubscribe" => {
                let sub = arg(&args, "sub")?
                    .as_str()
                    .ok_or_else(|| Error::bad_request("sub must be a string"))?;
                ctx.unsubscribe(sub)
            }
            v => match self.verbs.get(v) {
                Some(handler) => Ok(Output::data(handler(ctx.clone(), args).await?)),
                None => Err(Error::UnknownVerb {
                    route: M::ROUTE.to_owned(),
                    verb: verb.to_owned(),
                }),
            },
        }
    }
}
