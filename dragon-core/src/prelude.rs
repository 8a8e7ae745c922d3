//! What an app usually needs, in one line: `use dragon_core::prelude::*;`.
//!
//! Models (`DragonModel`), routers (`ModelRouter`, `Router`, `Ctx`, `Output`, `Error`,
//! `async_trait` for your own routers), presence, the server (`Dragon`, `Limits`) and the
//! few helpers the templates use (`now`, `json!`).

pub use crate::auth::Tokens;
pub use crate::error::Error;
pub use crate::model::{ModelHooks, Publish};
pub use crate::presence::{Keys, Presence};
pub use crate::protocol::Output;
pub use crate::router::{Ctx, ModelRouter, Router, Rule, Subscribe, Validator, Verb, Verbs};
pub use crate::server::{Authenticator, BuildError, Builder, Dragon, Limits};
pub use crate::time::now;
pub use crate::{DragonModel, transaction};
pub use async_trait::async_trait;
pub use sea_orm::DatabaseConnection;
pub use serde_json::{Value, json};
