//! The connection-level `dragon` route: `ping`, `auth`, `whoami`.

use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use super::Dragon;
use crate::error::{Error, arg};
use crate::protocol::Output;
use crate::router::Ctx;

pub(super) async fn call(
    dragon: &Dragon,
    ctx: &Ctx,
    verb: &str,
    args: Value,
) -> Result<Output, Error> {
    match verb {
        "ping" => {
            let ms = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_millis() as u64)
                .unwrap_or(0);
            Ok(Output::data(json!({ "time": ms })))
        }
        "auth" => {
            let token = arg(&args, "token")?
                .as_str()
                .ok_or_else(|| Error::bad_request("token must be a string"))?;
            let auth = dragon.inner.auth.as_ref().ok_or(Error::Unauthenticated)?;
            let identity = auth.identify(token).await?.ok_or(Error::Unauthenticated)?;
            let user = identity.user;
            ctx.conn.set_expiry(identity.expires_at);
            let previous = ctx
                .conn
                .user
                .write()
                .expect("user lock")
                .replace(user.clone());
            ctx.conn.rules.clear();
            if previous.is_some_and(|p| p != user) {
                // Subscriptions were scoped for the previous user: end them, so nothing
                // they let through reaches the new one (clients subscribe again).
                ctx.conn.end_subscriptions(&ctx.hub);
                crate::presence::reset(&ctx.conn, ctx.hub.presence());
            }
            Ok(Output::data(user))
        }
        "whoami" => Ok(Output::data(ctx.user().unwrap_or(Value::Null))),
        _ => Err(Error::UnknownVerb {
            route: super::CONTROL_ROUTE.into(),
            verb: verb.into(),
        }),
    }
}
