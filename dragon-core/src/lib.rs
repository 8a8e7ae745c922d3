//! # Dragon
//!
//! Realtime web apps over one WebSocket: sea-orm models publish their committed changes,
//! routers expose `get_list`, `get_single`, `create`, `update`, `delete` and `subscribe`, and
//! clients see every change that matches their filters, live.
//!
//! The pieces, one module each: [`protocol`] (wire types), [`filter`] (one predicate for
//! queries and live matching), [`model`] and [`publish`] (self-publishing models),
//! [`router`] (verbs), `hub` (subscriptions and fan-out, internal), [`broker`] (between nodes),
//! [`presence`] (who is on each key, live), [`server`] (axum) and [`client`] (Rust client).

#![warn(missing_docs)]
pub mod auth;
pub mod broker;
pub mod changelog;
pub mod client;
pub mod db;
pub mod error;
pub mod filter;
pub(crate) mod hub;
pub mod metrics;
pub mod model;
pub mod prelude;
pub mod presence;
pub mod protocol;
pub mod publish;
pub mod router;
pub mod schema;
pub mod server;
pub mod testing;
pub mod time;

pub use auth::Authenticator;
pub use dragon_derive::DragonModel;
pub use error::{Error, Result};
pub use model::{ModelHooks, Publish};
/// The metrics library of `/metrics`, for registering an app's own metrics
/// ([`server::Builder::metrics_registry`]) with the same version Dragon encodes.
pub use prometheus_client;
pub use publish::transaction;
pub use router::{Ctx, ModelRouter, Router, Validator};
pub use server::{BuildError, Dragon, Limits};
pub use time::now;

/// `docs/getting-started.md`, compiled as doc tests so its code stays true.
#[cfg(doctest)]
#[doc = include_str!("../../docs/getting-started.md")]
pub struct GettingStarted;

/// `docs/auth.md`, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/auth.md")]
pub struct AuthDoc;

/// `docs/routers.md`, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/routers.md")]
pub struct RoutersDoc;

/// `docs/changelog.md`, compiled as doc tests.
#[cfg(doctest)]
#[doc = include_str!("../../docs/changelog.md")]
pub struct ChangelogDoc;

/// `docs/limits.md`'s example, compiled.
#[cfg(doctest)]
#[doc = include_str!("../../docs/limits.md")]
pub struct LimitsDoc;

/// What the derive's generated code names; not for direct use.
#[doc(hidden)]
pub mod __private {
    pub use crate::model::published_value;
    pub use async_trait::async_trait;
    pub use sea_orm;
    pub use serde_json;
}
