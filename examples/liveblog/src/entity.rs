//! The live blog's tables: blogs and their posts (both published).

/// A blog: `blog` {id, slug, title, created_at}.
pub mod blog {
    use dragon_core::DragonModel;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
    #[sea_orm(table_name = "blog")]
    #[dragon(route = "blog")]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(unique)]
        pub slug: String,
        pub title: String,
        pub created_at: ChronoDateTimeUtc,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}
}

/// A post: `post` {id, blog_id, title, body, published_at, updated_at, likes}.
pub mod post {
    use dragon_core::DragonModel;
    use sea_orm::entity::prelude::*;
    use serde::{Deserialize, Serialize};

    #[derive(Clone, Debug, PartialEq, DeriveEntityModel, Serialize, Deserialize, DragonModel)]
    #[sea_orm(table_name = "post")]
    #[dragon(route = "post", hooks)]
    pub struct Model {
        #[sea_orm(primary_key)]
        pub id: i64,
        #[sea_orm(indexed)]
        pub blog_id: i64,
        pub title: String,
        pub body: String,
        pub published_at: ChronoDateTimeUtc,
        pub updated_at: Option<ChronoDateTimeUtc>,
        #[sea_orm(default_value = 0)]
        pub likes: i64,
    }

    #[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
    pub enum Relation {}

    /// An edit stamps `updated_at`.
    #[dragon_core::__private::async_trait]
    impl dragon_core::ModelHooks for Model {
        async fn before_save<C: ConnectionTrait>(
            mut am: ActiveModel,
            _db: &C,
            insert: bool,
        ) -> Result<ActiveModel, DbErr>
        where
            ActiveModel: Send,
        {
            if !insert && (am.title.is_set() || am.body.is_set()) {
                am.updated_at = sea_orm::Set(Some(chrono::Utc::now()));
            }
            Ok(am)
        }
    }
}
