//! [`Verbs`]: a router of your own verbs, written as functions with typed arguments and
//! replies, with per-verb rules (deny by default once declared) and a per-user rule on
//! the events its subscriptions may see.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::rules::{RowRule, RowRuleKind, Rule, VerbRules, row_filter};
use super::{Ctx, Router};
use crate::error::Error;
use crate::hub::Start;
use crate::protocol::Output;
use crate::schema::Schema;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;
type Handler<S> = Arc<dyn Fn(S, Ctx, Value) -> BoxFuture<Result<Reply, Error>> + Send + Sync>;

/// What a verb answers: data, or a subscription the router makes for it.
enum Reply {
    Data(Value),
    Subscribe(Subscribe),
}

/// A subscription a verb asks for: its handler returns it, the router applies its rules,
/// joins the stream, and the connection sends the one reply (`{"sub", "position"}`).
#[derive(Debug, Clone, Default)]
pub struct Subscribe {
    filter: Option<Value>,
    since: Option<String>,
}

impl Subscribe {
    /// Events matching `filter` (the client filter language over the route's event fields).
    pub fn filter(filter: Value) -> Self {
        Subscribe {
            filter: Some(filter),
            since: None,
        }
    }

    /// Every event the caller may see.
    pub fn all() -> Self {
        Subscribe::default()
    }

    /// Replays what was missed after `position` first (a reconnecting client's last one).
    pub fn since(mut self, position: Option<String>) -> Self {
        self.since = position;
        self
    }
}

/// A router of your own verbs.
///
/// ```
/// use dragon_core::router::{Rule, Subscribe, Verbs};
/// use dragon_core::schema::{FieldType, Schema};
/// use dragon_core::{Ctx, Error};
/// use serde::Deserialize;
/// use serde_json::json;
///
/// #[derive(Deserialize)]
/// struct Send { room: String, text: String }
///
/// #[derive(Deserialize)]
/// struct Join { room: String, since: Option<String> }
///
/// let chat = Verbs::new("chat", ())
///     .events(Schema::new(vec![]).field("room", FieldType::Text, false))
///     .verb("send", |_, ctx: Ctx, args: Send| async move {
///         let user = ctx.require_user()?;
///         ctx.publish("chat", "message", json!({"room": args.room, "text": args.text,
///             "user": user["name"]})).await?;
///         Ok(json!({"sent": true}))
///     })
///     .subscription("join", |_, _ctx: Ctx, args: Join| async move {
///         Ok(Subscribe::filter(json!({"room": args.room})).since(args.since))
///     })
///     // Only staff see the staff room, whatever they subscribe to.
///     .readable_by(|user| Ok(match user {
///         Some(u) if u["staff"] == true => json!({}),
///         _ => json!({"room__ne": "staff"}),
///     }))
///     .permit(&["send", "join", "subscribe"], Rule::Authenticated);
/// # let _ = chat;
/// ```
///
/// With [`Verbs::events`], the route also answers `subscribe` (`filter`, `since`) and
/// `unsubscribe` by itself. A handler can never answer twice: it returns its reply, or the
/// subscription it wants, and the connection sends the one reply.
pub struct Verbs<S = ()> {
    name: String,
    state: S,
    handlers: HashMap<String, Handler<S>>,
    rules: VerbRules,
    readable: Option<RowRule>,
    events: Option<Schema>,
}

/// A verb handler over JSON: arguments in, reply out.
pub(crate) type DataHandler =
    Arc<dyn Fn(Ctx, Value) -> BoxFuture<Result<Value, Error>> + Send + Sync>;

/// A typed handler as a [`DataHandler`]: arguments deserialized into `A` (`bad_request`
/// naming what does not fit), the reply serialized from `R`.
pub(crate) fn data_handler<A, R, F, Fut>(handler: F) -> DataHandler
where
    A: DeserializeOwned + Send + 'static,
    R: Serialize + 'static,
    F: Fn(Ctx, A) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<R, Error>> + Send + 'static,
{
    let handler = Arc::new(handler);
    Arc::new(move |ctx, args| {
        let handler = handler.clone();
        Box::pin(async move {
            let reply = handler(ctx, parse_args(args)?).await?;
            serde_json::to_value(reply)
                .map_err(|e| Error::Internal(format!("the reply does not serialize: {e}")))
        })
    })
}

/// Parses a verb's arguments; a `bad_request` naming what does not fit.
fn parse_args<A: DeserializeOwned>(args: Value) -> Result<A, Error> {
    let args = if args.is_null() {
        Value::Object(Default::default())
    } else {
        args
    };
    serde_json::from_value(args).map_err(|e| Error::bad_request(format!("invalid args: {e}")))
}

impl<S: Clone + Send + Sync + 'static> Verbs<S> {
    /// A router named `name`; `state` (a pool, a config; cheap to clone) goes to every handler.
    pub fn new(name: impl Into<String>, state: S) -> Self {
        Verbs {
            name: name.into(),
            state,
            handlers: HashMap::new(),
            rules: VerbRules::default(),
            readable: None,
            events: None,
        }
    }

    /// A verb: its arguments are deserialized into `A` (`bad_request` if they do not fit),
    /// its reply serialized from `R`.
    #[track_caller]
    pub fn verb<A, R, F, Fut>(self, name: &str, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        R: Serialize + 'static,
        F: Fn(S, Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<R, Error>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.add(
            name,
            Arc::new(move |state: S, ctx, args| {
                let handler = handler.clone();
                let typed = data_handler(move |ctx, a: A| handler(state.clone(), ctx, a));
                Box::pin(async move { Ok(Reply::Data(typed(ctx, args).await?)) })
            }),
        )
    }

    /// A verb that subscribes its caller: the handler says to what, the router adds its
    /// [`Verbs::readable_by`] rule, and the one reply is the subscription's.
    #[track_caller]
    pub fn subscription<A, F, Fut>(self, name: &str, handler: F) -> Self
    where
        A: DeserializeOwned + Send + 'static,
        F: Fn(S, Ctx, A) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Subscribe, Error>> + Send + 'static,
    {
        let handler = Arc::new(handler);
        self.add(
            name,
            Arc::new(move |state, ctx, args| {
                let handler = handler.clone();
                Box::pin(async move {
                    Ok(Reply::Subscribe(
                        handler(state, ctx, parse_args(args)?).await?,
                    ))
                })
            }),
        )
    }

    #[track_caller]
    fn add(mut self, name: &str, handler: Handler<S>) -> Self {
        assert!(
            self.handlers.insert(name.to_owned(), handler).is_none(),
            "dragon: verb {name:?} of {:?} is declared twice",
            self.name
        );
        self
    }

    /// The fields of this route's events that subscriptions may filter on; also enables the
    /// built-in `subscribe` (`filter`, `since`) and `unsubscribe`.
    pub fn events(mut self, schema: Schema) -> Self {
        self.events = Some(schema);
        self
    }

    /// The events a user may receive: a filter over the event fields, built from the user,
    /// ANDed to every subscription of this route (so to every event and replay).
    pub fn readable_by(
        mut self,
        rule: impl Fn(Option<&Value>) -> Result<Value, Error> + Send + Sync + 'static,
    ) -> Self {
        self.readable = Some(Arc::new(rule));
        self
    }

    /// Who may call `verbs`. Once any rule is declared, verbs without one are refused.
    pub fn permit(mut self, verbs: &[&str], rule: Rule) -> Self {
        self.rules.permit(verbs.iter().copied(), rule);
        self
    }

    async fn subscribe(&self, ctx: &Ctx, sub: Subscribe) -> Result<Output, Error> {
        let schema = self.events.as_ref().ok_or_else(|| {
            Error::Internal(format!(
                "route {:?} subscribes without declaring its event fields (Verbs::events)",
                self.name
            ))
        })?;
        let readable = row_filter(
            ctx,
            &self.name,
            RowRuleKind::Read,
            self.readable.as_ref(),
            schema,
        )?;
        let filter = readable.and(ctx.client_filter(sub.filter.as_ref(), schema)?);
        let slot = ctx.reserve_subscription()?;
        let start = match sub.since.as_deref() {
            None => Start::Now,
            Some(p) => p.parse().map_or(Start::Unknown, Start::After),
        };
        let data = ctx
            .subscribe(slot, &self.name, filter, start, sub.since.is_some(), None)
            .await?;
        Ok(Output::data(data))
    }
}

/// The built-in `subscribe` verb's arguments.
#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct SubscribeArgs {
    filter: Option<Value>,
    since: Option<String>,
}

#[async_trait::async_trait]
impl<S: Clone + Send + Sync + 'static> Router for Verbs<S> {
    fn name(&self) -> &str {
        &self.name
    }

    async fn call(&self, ctx: &Ctx, verb: &str, args: Value) -> Result<Output, Error> {
        let built_in = self.events.is_some() && matches!(verb, "subscribe" | "unsubscribe");
        if !built_in && !self.handlers.contains_key(verb) {
            return Err(Error::UnknownVerb {
                route: self.name.clone(),
                verb: verb.to_owned(),
            });
        }
        self.rules.check(verb, ctx.user().as_ref())?;
        let reply = match self.handlers.get(verb) {
            Some(handler) => handler(self.state.clone(), ctx.clone(), args).await?,
            None if verb == "subscribe" && self.events.is_some() => {
                let a: SubscribeArgs = parse_args(args)?;
                Reply::Subscribe(Subscribe {
                    filter: a.filter,
                    since: a.since,
                })
            }
            None if verb == "unsubscribe" && self.events.is_some() => {
                let sub = crate::error::arg(&args, "sub")?
                    .as_str()
                    .ok_or_else(|| Error::bad_request("sub must be a string"))?;
                return ctx.unsubscribe(sub);
            }
            None => {
                return Err(Error::UnknownVerb {
                    route: self.name.clone(),
                    verb: verb.to_owned(),
                });
            }
        };
        match reply {
            Reply::Data(data) => Ok(Output::data(data)),
            Reply::Subscribe(sub) => self.subscribe(ctx, sub).await,
        }
    }
}
