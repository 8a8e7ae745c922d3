//! Whisper's tables: accounts (never published), rooms and messages (published).

/// An account: `username`, an argon2 hash of the password, and whether it is staff.
pub mod account {
    use sea_orm::entity::prelude::*;

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel)]
    #[sea_orm(table_name = "account")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub username: String,
        pub password_hash: String,
        pub staff: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    impl ActiveModelBehavior for ActiveModel {}
}

/// A room: `room` {id, name, staff_only, created_at}.
pub mod room {
    use dragon_core::DragonModel;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
    #[sea_orm(table_name = "room")]
    #[dragon(route = "room")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        pub name: String,
        #[sea_orm(default_value = false)]
        pub staff_only: bool,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// A message: `message` {id, room_id, user, text, created_at, edited_at, staff_only}.
/// `staff_only` copies the room's, so the readable rule needs no query per event.
pub mod message {
    use dragon_core::DragonModel;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
    #[sea_orm(table_name = "message")]
    #[dragon(route = "message", hooks)]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(indexed)]
        pub room_id: i64,
        pub user: String,
        pub text: String,
        pub created_at: ChronoDateTimeUtc,
        pub edited_at: Option<ChronoDateTimeUtc>,
        #[sea_orm(default_value = false)]
        pub staff_only: bool,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    /// A new message takes its room's `staff_only`; an edit stamps `edited_at`.
    #[dragon_core::__private::async_trait]
    impl dragon_core::ModelHooks for Model {
        async fn before_save<C: ConnectionTrait>(
            mut am: ActiveModel,
            db: &C,
            insert: bool,
        ) -> Result<ActiveModel, DbErr>
        where
            ActiveModel: Send,
        {
            if insert {
                let room_id = am.room_id.clone().unwrap();
                let room = super::room::Entity::find_by_id(room_id)
                    .one(db)
                    .await?
                    .ok_or_else(|| DbErr::Custom("no such room".into()))?;
                am.staff_only = sea_orm::Set(room.staff_only);
            } else if am.text.is_set() {
                am.edited_at = sea_orm::Set(Some(chrono::Utc::now()));
            }
            Ok(am)
        }
    }
}
