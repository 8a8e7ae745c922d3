//! A todo item: `todo-item` {id, list_id, text, done, position, created_at}.

use dragon_core::DragonModel;
use sea_orm::entity::prelude::*;
use serde::{Deserialize, Serialize};

#[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
#[sea_orm(table_name = "todo_item")]
#[dragon(route = "todo-item")]
pub struct Model {
    #[sea_orm(primary_key)]
    pub id: i64,
    #[sea_orm(indexed)]
    pub list_id: i64,
    pub text: String,
    #[sea_orm(default_value = false)]
    pub done: bool,
    #[sea_orm(default_value = 0)]
    pub position: i64,
    pub created_at: ChronoDateTimeUtc,
}

#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {
    #[sea_orm(
        belongs_to = "super::todo_list::Entity",
        from = "Column::ListId",
        to = "super::todo_list::Column::Id",
        on_delete = "Cascade"
    )]
    List,
}

impl Related<super::todo_list::Entity> for Entity {
    fn to() -> RelationDef {
        Relation::List.def()
    }
}
