//! A connection's id: what names a connection in presence, in revocations and in the events
//! its own requests should not echo back to it.

use std::borrow::Borrow;
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

/// A connection's id, `c{n}-{uuid}`: unique across nodes and restarts, so another node can
/// name it (a presence member, a revoked connection). Cloning shares it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ConnId(Arc<str>);

impl ConnId {
    /// A new id for this node's `n`th connection.
    pub(crate) fn generate(n: u64) -> Self {
        ConnId(Arc::from(format!("c{n}-{}", uuid::Uuid::new_v4().simple())))
    }

    /// An id chosen by a test.
    #[cfg(test)]
    pub(crate) fn test(id: &str) -> Self {
        ConnId(Arc::from(id))
    }

    /// The id as sent to clients (`hello`'s `conn`, presence members).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl Deref for ConnId {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl Borrow<str> for ConnId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ConnId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl serde::Serialize for ConnId {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

/// Any string: ids of other nodes' connections arrive on the wire (presence members).
impl<'de> serde::Deserialize<'de> for ConnId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Arc::<str>::deserialize(d).map(ConnId)
    }
}
