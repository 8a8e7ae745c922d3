//! Who may do what on a model route: per-verb rules, denying every verb without one once a
//! route declares any, and per-user row rules (`readable_by`, `writable_by`) turned into
//! Dragon filters once per connection and user.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;

use serde_json::Value;

use crate::error::Error;
use crate::filter::Filter;

/// A model route's verbs, as named on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verb {
    /// `get_list`: read the objects matching a filter.
    GetList,
    /// `get_single`: read one object by id.
    GetSingle,
    /// `create`: insert an object.
    Create,
    /// `update`: change an object's fields.
    Update,
    /// `delete`: remove an object.
    Delete,
    /// `subscribe`: receive live changes matching a filter.
    Subscribe,
    /// `unsubscribe`: end a subscription; always allowed once rules are declared.
    Unsubscribe,
    /// `presence_join`: join a presence key with a state.
    PresenceJoin,
    /// `presence_update`: replace one's state on a key already joined.
    PresenceUpdate,
    /// `presence_leave`: leave a key and stop watching it.
    PresenceLeave,
    /// `presence_watch`: see a key's members without joining.
    PresenceWatch,
}

impl Verb {
    /// Every verb, in declaration order.
    pub const ALL: [Verb; 11] = [
        Verb::GetList,
        Verb::GetSingle,
        Verb::Create,
        Verb::Update,
        Verb::Delete,
        Verb::Subscribe,
        Verb::Unsubscribe,
        Verb::PresenceJoin,
        Verb::PresenceUpdate,
        Verb::PresenceLeave,
        Verb::PresenceWatch,
    ];
    /// The verbs that only read.
    pub const READ: [Verb; 3] = [Verb::GetList, Verb::GetSingle, Verb::Subscribe];
    /// The verbs that write.
    pub const WRITE: [Verb; 3] = [Verb::Create, Verb::Update, Verb::Delete];

    /// The verb's name on the wire (`get_list`, `presence_join`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::GetList => "get_list",
            Verb::GetSingle => "get_single",
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Delete => "delete",
            Verb::Subscribe => "subscribe",
            Verb::Unsubscribe => "unsubscribe",
            Verb::PresenceJoin => "presence_join",
            Verb::PresenceUpdate => "presence_update",
            Verb::PresenceLeave => "presence_leave",
            Verb::PresenceWatch => "presence_watch",
        }
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is none of the model verbs.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a model verb: {0:?}")]
pub struct ParseVerbError(String);

impl FromStr for Verb {
    type Err = ParseVerbError;
    fn from_str(s: &str) -> Result<Self, ParseVerbError> {
        Verb::ALL
            .into_iter()
            .find(|v| v.as_str() == s)
            .ok_or_else(|| ParseVerbError(s.to_owned()))
    }
}

type Check = Arc<dyn Fn(&Value) -> bool + Send + Sync>;

/// Who may use a verb.
#[derive(Clone)]
pub enum Rule {
    /// Everyone, signed in or not.
    Anyone,
    /// Any signed-in user.
    Authenticated,
    /// Signed-in users for whom the check holds (e.g. `Rule::user(|u| u["staff"] == true)`).
    User(Check),
}

impl Rule {
    /// Signed-in users for whom `check` holds.
    pub fn user(check: impl Fn(&Value) -> bool + Send + Sync + 'static) -> Rule {
        Rule::User(Arc::new(check))
    }

    /// `unauthenticated` without a user, `forbidden` if the check fails.
    pub(crate) fn admit(&self, user: Option<&Value>, verb: &str) -> Result<(), Error> {
        match (self, user) {
            (Rule::Anyone, _) => Ok(()),
            (_, None) => Err(Error::Unauthenticated),
            (Rule::Authenticated, Some(_)) => Ok(()),
            (Rule::User(check), Some(user)) if check(user) => Ok(()),
            (Rule::User(_), Some(_)) => Err(Error::Forbidden(format!("you may not {verb} here"))),
        }
    }
}

/// A route's verb rules, by verb name. Empty: every verb is allowed (subject to row rules).
#[derive(Clone, Default)]
pub(crate) struct VerbRules(HashMap<String, Rule>);

impl VerbRules {
    pub(crate) fn permit<'a>(&mut self, verbs: impl IntoIterator<Item = &'a str>, rule: Rule) {
        for v in verbs {
            self.0.insert(v.to_owned(), rule.clone());
        }
    }

    /// Checks `verb` for `user`: once any rule is declared, a verb without one is refused
    /// (`unsubscribe` is always allowed: ending what one has is no privilege).
    pub(crate) fn check(&self, verb: &str, user: Option<&Value>) -> Result<(), Error> {
        if self.0.is_empty() || verb == "unsubscribe" {
            return Ok(());
        }
        match (self.0.get(verb), user) {
            (Some(rule), _) => rule.admit(user, verb),
            (None, None) => Err(Error::Unauthenticated),
            (None, Some(_)) => Err(Error::Forbidden(format!("you may not {verb} here"))),
        }
    }
}

/// A per-user row rule: the filter (JSON, as clients write them) a user's rows must match.
/// `Err` refuses the user outright (`Error::Unauthenticated`, `Error::Forbidden`).
pub type RowRule = Arc<dyn Fn(Option<&Value>) -> Result<Value, Error> + Send + Sync>;

/// Which row rule a cached filter comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum RowRuleKind {
    Read,
    Write,
    Delete,
}

/// `rule` for the caller's user as a filter over `schema` (everything without a rule),
/// compiled once per connection, route and user.
pub(crate) fn row_filter(
    ctx: &super::Ctx,
    route: &str,
    kind: RowRuleKind,
    rule: Option<&RowRule>,
    schema: &crate::schema::Schema,
) -> Result<Filter, Error> {
    let Some(rule) = rule else {
        return Ok(Filter::all());
    };
    ctx.conn.rules.get_or_compile(route, kind, || {
        let value = rule(ctx.user().as_ref())?;
        Filter::parse(Some(&value), schema)
            .map_err(|e| Error::Internal(format!("the row rule of {route:?} is invalid: {e}")))
    })
}

/// Row-rule filters compiled for one connection's current user, per route and kind;
/// cleared when the user changes (`dragon.auth`).
#[derive(Default)]
pub(crate) struct Compiled(std::sync::Mutex<HashMap<(Arc<str>, RowRuleKind), Filter>>);

impl Compiled {
    pub(crate) fn get_or_compile(
        &self,
        route: &str,
        kind: RowRuleKind,
        compile: impl FnOnce() -> Result<Filter, Error>,
    ) -> Result<Filter, Error> {
        let key = (Arc::from(route), kind);
        if let Some(f) = self.0.lock().expect("rules lock").get(&key) {
            return Ok(f.clone());
        }
        let filter = compile()?;
        self.0
            .lock()
            .expect("rules lock")
            .insert(key, filter.clone());
        Ok(filter)
    }

    pub(crate) fn clear(&self) {
        self.0.lock().expect("rules lock").clear();
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn verbs_round_trip_their_wire_names() {
        for v in Verb::ALL {
            assert_eq!(v.as_str().parse::<Verb>(), Ok(v));
        }
        assert!("drop_table".parse::<Verb>().is_err());
    }

    #[test]
    fn declared_rules_deny_every_other_verb() {
        let mut rules = VerbRules::default();
        assert!(rules.check("delete", None).is_ok(), "no rules: open");
        rules.permit(Verb::READ.map(Verb::as_str), Rule::Anyone);
        rules.permit(["create"], Rule::Authenticated);
        rules.permit(["delete"], Rule::user(|u| u["staff"] == true));
        let (bob, alice) = (json!({"id": 2}), json!({"id": 1, "staff": true}));
        assert!(rules.check("get_list", None).is_ok());
        assert!(matches!(
            rules.check("create", None),
            Err(Error::Unauthenticated)
        ));
        assert!(rules.check("create", Some(&bob)).is_ok());
        assert!(matches!(
            rules.check("delete", Some(&bob)),
            Err(Error::Forbidden(_))
        ));
        assert!(rules.check("delete", Some(&alice)).is_ok());
        assert!(matches!(
            rules.check("update", Some(&alice)),
            Err(Error::Forbidden(_))
        ));
        assert!(matches!(
            rules.check("update", None),
            Err(Error::Unauthenticated)
        ));
        assert!(rules.check("unsubscribe", None).is_ok());
    }
}
