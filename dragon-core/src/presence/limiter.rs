//! One connection's budget of presence state changes: a token bucket (a rate per second, a
//! burst of as many). Past it, updates to a key are coalesced: the newest state waits for
//! the next token and replaces any older one still waiting; every waiting request is
//! answered once the state it was folded into has been applied. Nothing is dropped.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;
use tokio::sync::oneshot;

use super::registry::ViewKey;

/// Why a coalesced update was not applied.
#[derive(Debug, Clone)]
pub(crate) enum Dropped {
    /// The connection left the key before its turn came.
    Left,
    /// The broker refused it.
    Broker(String),
}

pub(crate) type Waiter = oneshot::Sender<Result<u64, Dropped>>;

/// What `admit` decided.
pub(crate) enum Admit {
    /// Apply it now.
    Now,
    /// A later update of the key came first: answer without applying.
    Superseded,
    /// Wait for the answer; `flush` is true if the caller must start the flusher.
    Later {
        answer: oneshot::Receiver<Result<u64, Dropped>>,
        flush: bool,
    },
}

/// What the flusher does next.
pub(crate) enum Next {
    /// Apply this state and answer these waiters.
    Apply(ViewKey, Value, Vec<Waiter>),
    /// Nothing may go yet: wait this long.
    Wait(Duration),
    /// Nothing is waiting; the flusher stops.
    Done,
}

struct State {
    tokens: f64,
    at: Instant,
    /// Keys with a waiting state, oldest first.
    queue: VecDeque<ViewKey>,
    waiting: HashMap<ViewKey, (Value, Vec<Waiter>)>,
    /// Per key, the place of the newest update admitted.
    newest: HashMap<ViewKey, u64>,
    flushing: bool,
}

pub(crate) struct Limiter {
    rate: f64,
    state: Mutex<State>,
}

impl Limiter {
    pub(crate) fn new(per_second: u32) -> Self {
        let rate = f64::from(per_second.max(1));
        Limiter {
            rate,
            state: Mutex::new(State {
                tokens: rate,
                at: Instant::now(),
                queue: VecDeque::new(),
                waiting: HashMap::new(),
                newest: HashMap::new(),
                flushing: false,
            }),
        }
    }

    fn refill(&self, s: &mut State) {
        let now = Instant::now();
        s.tokens = (s.tokens + now.duration_since(s.at).as_secs_f64() * self.rate).min(self.rate);
        s.at = now;
    }

    /// Takes a token for an update of `key` to `state` (request number `seq` of the
    /// connection), or queues the state.
    pub(crate) fn admit(&self, key: &ViewKey, state: &Value, seq: u64) -> Admit {
        let mut s = self.state.lock().expect("limiter lock");
        match s.newest.get_mut(key) {
            Some(newest) if *newest > seq => return Admit::Superseded,
            Some(newest) => *newest = seq,
            None => {
                s.newest.insert(key.clone(), seq);
            }
        }
        self.refill(&mut s);
        if s.tokens >= 1.0 && !s.waiting.contains_key(key) {
            s.tokens -= 1.0;
            return Admit::Now;
        }
        let (tx, rx) = oneshot::channel();
        match s.waiting.get_mut(key) {
            Some((waiting, waiters)) => {
                *waiting = state.clone();
                waiters.push(tx);
            }
            None => {
                s.queue.push_back(key.clone());
                s.waiting.insert(key.clone(), (state.clone(), vec![tx]));
            }
        }
        let flush = !std::mem::replace(&mut s.flushing, true);
        Admit::Later { answer: rx, flush }
    }

    /// Forgets a key the connection left.
    pub(crate) fn forget(&self, key: &ViewKey) {
        self.state.lock().expect("limiter lock").newest.remove(key);
    }

    /// The flusher's next step.
    pub(crate) fn next(&self) -> Next {
        let mut s = self.state.lock().expect("limiter lock");
        self.refill(&mut s);
        let Some(key) = s.queue.front().cloned() else {
            s.flushing = false;
            return Next::Done;
        };
        if s.tokens < 1.0 {
            let wait = (1.0 - s.tokens) / self.rate;
            return Next::Wait(Duration::from_secs_f64(wait));
        }
        s.tokens -= 1.0;
        s.queue.pop_front();
        let (state, waiters) = s.waiting.remove(&key).expect("queued keys wait");
        Next::Apply(key, state, waiters)
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::presence::PresenceKey;

    #[test]
    fn a_burst_then_coalescing_last_state_wins() {
        let limiter = Limiter::new(2);
        let key: ViewKey = (Arc::from("r"), PresenceKey::Int(1));
        assert!(matches!(
            limiter.admit(&key, &Value::from(1), 1),
            Admit::Now
        ));
        assert!(matches!(
            limiter.admit(&key, &Value::from(2), 2),
            Admit::Now
        ));
        let Admit::Later { flush: true, .. } = limiter.admit(&key, &Value::from(3), 3) else {
            panic!("the third update in a burst of two waits, and starts the flusher");
        };
        let Admit::Later { flush: false, .. } = limiter.admit(&key, &Value::from(4), 5) else {
            panic!("a fourth joins the waiting one");
        };
        assert!(
            matches!(limiter.admit(&key, &Value::from(0), 4), Admit::Superseded),
            "an update overtaken by a later one of the same connection is not applied"
        );
        assert!(matches!(limiter.next(), Next::Wait(_)));
        std::thread::sleep(Duration::from_millis(550));
        let Next::Apply(_, state, waiters) = limiter.next() else {
            panic!("a token came back");
        };
        assert_eq!(state, Value::from(4), "the last state wins");
        assert_eq!(waiters.len(), 2, "both waiting requests are answered");
        assert!(matches!(limiter.next(), Next::Done));
    }
}
