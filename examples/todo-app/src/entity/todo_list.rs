//! A todo list: `todo-list` {id, name, created_at}.

use dragon_core::DragonModel;
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
#[sea_orm(table_name = "todo_list")]
#[dragon(route = "todo-list", hooks)]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    pub name: String,
    pub created_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(has_many = "super::todo_item::Entity")]
    Items,
}

impl Related<super::todo_item::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::Items.def()
    }
}

/// Deleting a list deletes its items one by one, so each deletion is published.
#[dragon_core::__private::async_trait]
impl dragon_core::ModelHooks for Model {
    async fn before_delete<C: ConnectionTrait>(
        am: ActiveModel,
        db: &C,
    ) -> Result<ActiveModel, DbErr>
    where
        ActiveModel: Send,
    {
        if let Some(id) = am.id.clone().into_value() {
            let items = super::todo_item::Entity::find()
                .filter(super::todo_item::Column::ListId.eq(id))
                .all(db)
                .await?;
            for item in items {
                item.delete(db).await?;
            }
        }
        Ok(am)
    }
}
