//! Helpers for presence tests: reading `presence` events and member lists.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use dragon_core::client::Client;
use dragon_core::protocol::{Event, ServerFrame};
use serde_json::Value;

use crate::common::{QUIET, WAIT};

/// The next `presence` event within `limit`.
pub async fn presence_event(c: &Client, limit: Duration) -> Option<Event> {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match c.next_other(left).await? {
            ServerFrame::Event(e) if e.event == "presence" => return Some(e),
            _ => continue,
        }
    }
}

pub async fn expect_presence(c: &Client) -> Event {
    presence_event(c, WAIT).await.expect("a presence event")
}

pub async fn expect_no_presence(c: &Client) {
    if let Some(e) = presence_event(c, QUIET).await {
        panic!("unexpected presence event {e:?}");
    }
}

/// The connection ids of a member list, sorted.
pub fn conns(list: &Value) -> Vec<String> {
    let mut out: Vec<String> = list
        .as_array()
        .expect("a member list")
        .iter()
        .map(|m| m["conn"].as_str().expect("conn").to_owned())
        .collect();
    out.sort();
    out
}

pub fn conn_of(c: &Client) -> String {
    c.hello()["conn"].as_str().expect("conn").to_owned()
}

/// A key's members as a client sees them: the reply's list, then every event applied.
pub struct Mirror {
    pub members: BTreeMap<String, Value>,
}

impl Mirror {
    pub fn new(list: &Value) -> Mirror {
        let mut m = Mirror {
            members: BTreeMap::new(),
        };
        for member in list.as_array().expect("a member list") {
            m.members
                .insert(member["conn"].as_str().unwrap().to_owned(), member.clone());
        }
        m
    }

    pub fn apply(&mut self, e: &Event) {
        for l in e.extra["leaves"].as_array().into_iter().flatten() {
            self.members.remove(l["conn"].as_str().unwrap());
        }
        for j in e.extra["joins"].as_array().into_iter().flatten() {
            self.members
                .insert(j["conn"].as_str().unwrap().to_owned(), j.clone());
        }
    }

    pub fn conns(&self) -> Vec<String> {
        self.members.keys().cloned().collect()
    }

    /// Applies `c`'s events until the members are exactly `want`; how long it took, or
    /// `None` if they were not within `limit`.
    pub async fn until(
        &mut self,
        c: &Client,
        want: &[String],
        limit: Duration,
    ) -> Option<Duration> {
        let started = Instant::now();
        let mut want: Vec<String> = want.to_vec();
        want.sort();
        loop {
            if self.conns() == want {
                return Some(started.elapsed());
            }
            let left = limit.saturating_sub(started.elapsed());
            let e = presence_event(c, left).await?;
            self.apply(&e);
        }
    }
}
