//! One connection's presence: the keys it joined or watches, and its update budget.

use std::collections::HashMap;
use std::sync::Mutex;

use super::limiter::Limiter;
use super::registry::ViewKey;
use crate::error::Error;

/// What a connection is on one key. Members always watch too.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Role {
    pub(crate) member: bool,
}

#[derive(Default)]
struct Keys {
    closed: bool,
    roles: HashMap<ViewKey, Role>,
}

pub(crate) struct Session {
    keys: Mutex<Keys>,
    max_keys: usize,
    pub(crate) limiter: Limiter,
}

impl Session {
    pub(crate) fn new(max_keys: usize, updates_per_second: u32) -> Self {
        Session {
            keys: Mutex::new(Keys::default()),
            max_keys,
            limiter: Limiter::new(updates_per_second),
        }
    }

    /// Starts tracking `key`; true if it is new for this connection. Past the limit of keys,
    /// `rate_limited`.
    pub(crate) fn track(&self, key: &ViewKey) -> Result<bool, Error> {
        let mut keys = self.keys.lock().expect("presence keys lock");
        if keys.roles.contains_key(key) {
            return Ok(false);
        }
        if keys.roles.len() >= self.max_keys {
            return Err(Error::RateLimited(format!(
                "at most {} presence keys per connection",
                self.max_keys
            )));
        }
        keys.roles.insert(key.clone(), Role::default());
        Ok(true)
    }

    /// Marks the connection a member of `key`; false if it closed meanwhile (the caller
    /// must then take the join back).
    pub(crate) fn joined(&self, key: &ViewKey) -> bool {
        let mut keys = self.keys.lock().expect("presence keys lock");
        if keys.closed {
            return false;
        }
        keys.roles.entry(key.clone()).or_default().member = true;
        true
    }

    pub(crate) fn is_member(&self, key: &ViewKey) -> bool {
        let keys = self.keys.lock().expect("presence keys lock");
        keys.roles.get(key).is_some_and(|r| r.member)
    }

    /// Stops tracking `key`; what the connection was there.
    pub(crate) fn forget(&self, key: &ViewKey) -> Option<Role> {
        self.keys
            .lock()
            .expect("presence keys lock")
            .roles
            .remove(key)
    }

    /// The connection is closing: every key it had, once.
    pub(crate) fn close(&self) -> Vec<(ViewKey, Role)> {
        let mut keys = self.keys.lock().expect("presence keys lock");
        keys.closed = true;
        keys.roles.drain().collect()
    }

    /// The connection's user changed: every key it had, and it may join afresh.
    pub(crate) fn reset(&self) -> Vec<(ViewKey, Role)> {
        self.keys
            .lock()
            .expect("presence keys lock")
            .roles
            .drain()
            .collect()
    }
}
