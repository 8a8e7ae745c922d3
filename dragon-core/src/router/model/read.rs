//! The model router's reads: `get_list`, `get_single` and `subscribe`.

use sea_orm::sea_query::{NullOrdering, Order};
use sea_orm::{
    ActiveModelBehavior, ActiveModelTrait, EntityTrait, FromQueryResult, IntoActiveModel,
    PaginatorTrait, QueryFilter, QuerySelect, Select, TryIntoModel,
};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::ModelRouter;
use crate::error::Error;
use crate::filter::Filter;
use crate::hub::Start;
use crate::model::{ActiveOf, ModelHooks};
use crate::protocol::Output;
use crate::router::Ctx;
use crate::schema::FieldType;

const DEFAULT_PER_PAGE: u64 = 50;
const MAX_PER_PAGE: u64 = 500;

impl<M> ModelRouter<M>
where
    M: ModelHooks + Serialize + DeserializeOwned + FromQueryResult,
    M::Entity: EntityTrait<Model = M>,
    ActiveOf<M>:
        ActiveModelBehavior + ActiveModelTrait<Entity = M::Entity> + TryIntoModel<M> + Send + Sync,
    M: IntoActiveModel<ActiveOf<M>>,
{
    pub(super) async fn get_list(&self, ctx: &Ctx, args: Value) -> Result<Output, Error> {
        let filter = self.visible(ctx, &args)?;
        let order = self.order_by(&args)?;
        let per_page = page_arg(&args, "per_page", DEFAULT_PER_PAGE, MAX_PER_PAGE)?;
        // The row offset must fit the database's signed 64-bit integers.
        let page = page_arg(&args, "page", 1, i64::MAX as u64 / per_page)?;
        let position = ctx.position(M::ROUTE).await?;
        let select = M::Entity::find().filter(self.condition(&filter));
        let total = select.clone().count(&self.db).await?;
        let select = self.ordered(select, &order);
        let offset = (page - 1).saturating_mul(per_page);
        let rows = select.offset(offset).limit(per_page).all(&self.db).await?;
        let items: Vec<Value> = rows
            .iter()
            .map(|m| Value::Object(m.to_published()))
            .collect();
        let pages = total.div_ceil(per_page);
        Ok(Output::with_meta(
            Value::Array(items),
            json!({"page": page, "per_page": per_page, "total": total, "pages": pages,
                   "position": position.to_string()}),
        ))
    }

    /// Sorts by code point on every backend, nulls lowest.
    fn ordered(
        &self,
        mut select: Select<M::Entity>,
        order: &[(String, bool)],
    ) -> Select<M::Entity> {
        for (field, desc) in order {
            let ty = self.schema.get(field).map_or(FieldType::Integer, |f| f.ty);
            let expr = crate::filter::ordered_col(self.backend(), field, ty);
            let (o, nulls) = if *desc {
                (Order::Desc, NullOrdering::Last)
            } else {
                (Order::Asc, NullOrdering::First)
            };
            QuerySelect::query(&mut select).order_by_expr_with_nulls(expr, o, nulls);
        }
        select
    }

    fn order_by(&self, args: &Value) -> Result<Vec<(String, bool)>, Error> {
        let mut order = Vec::new();
        match args.get("order_by") {
            None | Some(Value::Null) => {}
            Some(Value::Array(items)) => {
                for item in items {
                    let name = item
                        .as_str()
                        .ok_or_else(|| Error::bad_request("order_by takes field names"))?;
                    let (field, desc) = match name.strip_prefix('-') {
                        Some(f) => (f, true),
                        None => (name, false),
                    };
                    if !self.schema.get(field).is_some_and(|f| f.orderable) {
                        return Err(Error::bad_request(format!(
                            "field {field:?} is unknown or not orderable"
                        )));
                    }
                    order.push((field.to_owned(), desc));
                }
            }
            Some(_) => return Err(Error::bad_request("order_by must be an array")),
        }
        // Ties break by id, so pages never overlap or skip.
        if !order.iter().any(|(f, _)| f == "id") {
            order.push(("id".to_owned(), false));
        }
        Ok(order)
    }

    pub(super) async fn find_one(&self, filter: &Filter) -> Result<M, Error> {
        M::Entity::find()
            .filter(self.condition(filter))
            .one(&self.db)
            .await?
            .ok_or(Error::NotFound)
    }

    pub(super) async fn subscribe(&self, ctx: &Ctx, args: Value) -> Result<Output, Error> {
        let filter = self.visible(ctx, &args)?;
        let slot = ctx.reserve_subscription()?;
        let since = match args.get("since") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) => Some(s.parse().ok()),
            Some(_) => return Err(Error::bad_request("since must be a position string")),
        };
        let snapshot = match args.get("snapshot") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(Error::bad_request("snapshot must be true or false")),
        };
        let show_recovered = since.is_some();
        if snapshot {
            let position = ctx.position(M::ROUTE).await?;
            let by_id = [("id".to_owned(), false)];
            let rows = self
                .ordered(M::Entity::find().filter(self.condition(&filter)), &by_id)
                .limit(self.max_snapshot as u64 + 1)
                .all(&self.db)
                .await?;
            if rows.len() > self.max_snapshot {
                return Err(Error::bad_request(format!(
                    "the snapshot would hold more than {} objects: narrow the filter, or page \
                     with get_list and subscribe with its position as `since`",
                    self.max_snapshot
                )));
            }
            let items = rows
                .iter()
                .map(|m| Value::Object(m.to_published()))
                .collect();
            let start = Start::After(position);
            let data = ctx
                .subscribe(slot, M::ROUTE, filter, start, show_recovered, Some(items))
                .await?;
            return Ok(Output::data(data));
        }
        let start = match since {
            None => Start::Now,
            Some(Some(p)) => Start::After(p),
            Some(None) => Start::Unknown,
        };
        Ok(Output::data(
            ctx.subscribe(slot, M::ROUTE, filter, start, show_recovered, None)
                .await?,
        ))
    }
}

fn page_arg(args: &Value, name: &str, default: u64, max: u64) -> Result<u64, Error> {
    match args.get(name) {
        None | Some(Value::Null) => Ok(default),
        Some(v) => match v.as_u64() {
            Some(n) if n >= 1 && n <= max => Ok(n),
            _ => Err(Error::bad_request(format!(
                "{name} must be an integer from 1 to {max}"
            ))),
        },
    }
}
