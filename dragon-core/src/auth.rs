//! Identity: what a connection presents (`?token=`, `Authorization: Bearer`, a session
//! cookie, or `dragon.auth` later), who that makes it, and until when.
//!
//! Implement [`Authenticator`] for your own user store, or use [`Tokens`]: signed, expiring
//! JSON Web Tokens (HS256) that carry the user object, usable as bearer tokens and as a
//! session cookie.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::Error;

/// Whose access to end, on every node: their subscriptions get an `error` event
/// (`forbidden`, "access revoked") and stop, and the connections concerned lose their user
/// (they are anonymous until they authenticate again). Send with
/// [`crate::Dragon::revoke`]. Reject the user's tokens in your [`Authenticator`] as well, or
/// they can sign in again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "revoke", rename_all = "snake_case")]
pub enum Revoke {
    /// Every connection whose user object has `field` equal to `value` (say `id`, 7).
    User {
        /// The user object's field to match (say `id`).
        field: String,
        /// The value that field must equal for a connection to lose its access.
        value: Value,
    },
    /// One connection, by the id its `hello` gave.
    Connection {
        /// The connection's id, as its `hello` event's `conn` gave it.
        conn: String,
    },
    /// One object of a route: subscriptions that name it by id end; every other
    /// subscription of the route is told to reload (`resync`), under the rules that hold now.
    Object {
        /// The route that serves the object.
        route: String,
        /// The object's primary key, as published in its `id`.
        id: Value,
    },
}

impl Revoke {
    /// Every connection of the user whose `id` is `id`.
    pub fn user_id(id: impl Into<Value>) -> Self {
        Revoke::User {
            field: "id".into(),
            value: id.into(),
        }
    }
}

/// The cookie [`Tokens::session_cookie`] sets and the default [`Authenticator`] reads.
pub const SESSION_COOKIE: &str = "dragon_session";

/// Who a connection is, and until when (`None`: no expiry).
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user object: what `whoami` answers and `hello` announces.
    pub user: Value,
    /// When the identity stops being valid (a token's `exp`); a grace period after it, the
    /// connection closes with 4003 unless `dragon.auth` renewed it.
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// A user whose identity does not expire.
    pub fn new(user: Value) -> Self {
        Identity {
            user,
            expires_at: None,
        }
    }
}

/// What the WebSocket upgrade request presented.
pub struct Credentials<'a> {
    query_token: Option<&'a str>,
    headers: &'a HeaderMap,
}

impl<'a> Credentials<'a> {
    pub(crate) fn new(query_token: Option<&'a str>, headers: &'a HeaderMap) -> Self {
        Credentials {
            query_token,
            headers,
        }
    }

    /// The token: `?token=`, else `Authorization: Bearer <token>`.
    pub fn token(&self) -> Option<&'a str> {
        self.query_token.or_else(|| {
            self.header("authorization")?
                .strip_prefix("Bearer ")
                .map(str::trim)
        })
    }

    /// A request header, if it is text.
    pub fn header(&self, name: &str) -> Option<&'a str> {
        self.headers.get(name)?.to_str().ok()
    }

    /// A cookie's value.
    pub fn cookie(&self, name: &str) -> Option<&'a str> {
        self.headers
            .get_all(axum::http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v)
    }
}

/// Turns what a client presents into a user (any JSON; shown to the app and in `hello`).
#[async_trait::async_trait]
pub trait Authenticator: Send + Sync + 'static {
    /// `Ok(None)` for a token that is not valid; `Err` when the check itself failed (the
    /// user store is down): the client is told to retry (close 1013), never that it is out.
    async fn authenticate(&self, token: &str) -> Result<Option<Value>, Error>;

    /// The identity a token gives, with its expiry. The default has none.
    async fn identify(&self, token: &str) -> Result<Option<Identity>, Error> {
        Ok(self.authenticate(token).await?.map(Identity::new))
    }

    /// The identity of an upgrade request. The default takes the token from `?token=`,
    /// `Authorization: Bearer`, or the [`SESSION_COOKIE`], in that order.
    async fn identify_request(&self, request: &Credentials<'_>) -> Result<Option<Identity>, Error> {
        match request.token().or_else(|| request.cookie(SESSION_COOKIE)) {
            Some(token) => self.identify(token).await,
            None => Ok(None),
        }
    }
}

/// Signed, expiring tokens (JWT, HS256) that carry the user object: issue one at login,
/// give it to the client (`?token=`, `dragon.auth`, `Authorization: Bearer`) or set it as a
/// session cookie; the server verifies the signature and the expiry.
///
/// ```
/// use std::time::Duration;
/// use dragon_core::auth::{Authenticator, Tokens};
/// # tokio_test_block(async {
/// let tokens = Tokens::new(b"a secret of at least 32 bytes, from config!").ttl(Duration::from_secs(3600));
/// let token = tokens.issue(&serde_json::json!({"id": 7, "staff": false})).unwrap();
/// let user = tokens.authenticate(&token).await.unwrap().unwrap();
/// assert_eq!(user["id"], 7);
/// assert!(tokens.authenticate("forged").await.unwrap().is_none());
/// # });
/// # fn tokio_test_block(f: impl std::future::Future<Output = ()>) {
/// #     tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(f)
/// # }
/// ```
#[derive(Clone)]
pub struct Tokens {
    encoding: EncodingKey,
    decoding: DecodingKey,
    ttl: Duration,
}

#[derive(Serialize, Deserialize)]
struct Claims {
    user: Value,
    exp: u64,
    iat: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Tokens {
    /// Tokens signed with `secret` (keep it out of the code; 32 bytes or more), valid for an
    /// hour unless [`Tokens::ttl`] says otherwise.
    ///
    /// # Panics
    /// If the secret is unusable (empty): a configuration mistake, found at start-up.
    #[track_caller]
    pub fn new(secret: &[u8]) -> Self {
        let unusable = |e: jsonwebtoken::errors::Error| -> ! {
            panic!("dragon: the token secret is unusable: {e}")
        };
        Tokens {
            encoding: EncodingKey::from_secret(secret).unwrap_or_else(|e| unusable(e)),
            decoding: DecodingKey::from_secret(secret).unwrap_or_else(|e| unusable(e)),
            ttl: Duration::from_secs(3600),
        }
    }

    /// How long a token is valid.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// A token for `user`, valid for the ttl from now.
    pub fn issue(&self, user: &Value) -> Result<String, Error> {
        let iat = unix_now();
        let claims = Claims {
            user: user.clone(),
            exp: iat + self.ttl.as_secs().max(1),
            iat,
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.encoding)
            .map_err(|e| Error::Internal(format!("cannot sign a token: {e}")))
    }

    /// A `Set-Cookie` value holding a token for `user`: `HttpOnly`, `SameSite=Lax`, for the
    /// whole site, expiring with the token (add `; Secure` behind HTTPS).
    pub fn session_cookie(&self, user: &Value) -> Result<String, Error> {
        Ok(format!(
            "{SESSION_COOKIE}={}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}",
            self.issue(user)?,
            self.ttl.as_secs()
        ))
    }

    fn verify(&self, token: &str) -> Option<Claims> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.required_spec_claims = ["exp".to_owned()].into_iter().collect();
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &validation)
            .ok()
            .map(|data| data.claims)
    }
}

#[async_trait::async_trait]
impl Authenticator for Tokens {
    async fn authenticate(&self, token: &str) -> Result<Option<Value>, Error> {
        Ok(self.verify(token).map(|c| c.user))
    }

    async fn identify(&self, token: &str) -> Result<Option<Identity>, Error> {
        Ok(self.verify(token).map(|c| Identity {
            user: c.user,
            expires_at: Some(UNIX_EPOCH + Duration::from_secs(c.exp)),
        }))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[tokio::test]
    async fn tokens_carry_the_user_and_expire() {
        let tokens = Tokens::new(b"0123456789abcdef0123456789abcdef").ttl(Duration::from_secs(60));
        let token = tokens.issue(&json!({"id": 1})).unwrap();
        let id = tokens.identify(&token).await.unwrap().unwrap();
        assert_eq!(id.user, json!({"id": 1}));
        let left = id
            .expires_at
            .unwrap()
            .duration_since(SystemTime::now())
            .unwrap();
        assert!(left <= Duration::from_secs(60) && left > Duration::from_secs(55));
        let other = Tokens::new(b"another secret, another signature!!");
        assert!(other.identify(&token).await.unwrap().is_none(), "wrong key");
        let mut tampered = token.clone();
        tampered.insert(token.len() / 2, 'x');
        assert!(tokens.identify(&tampered).await.unwrap().is_none());
        // An expired token is refused.
        let claims = Claims {
            user: json!({"id": 1}),
            exp: unix_now() - 5,
            iat: unix_now() - 65,
        };
        let old = jsonwebtoken::encode(&Header::default(), &claims, &tokens.encoding).unwrap();
        assert!(tokens.identify(&old).await.unwrap().is_none());
    }

    #[test]
    fn credentials_read_query_bearer_and_cookie() {
        let mut headers = HeaderMap::new();
        headers.insert("authorization", "Bearer abc".parse().unwrap());
        headers.insert("cookie", "a=1; dragon_session=xyz; b=2".parse().unwrap());
        let c = Credentials::new(None, &headers);
        assert_eq!(c.token(), Some("abc"));
        assert_eq!(c.cookie(SESSION_COOKIE), Some("xyz"));
        assert_eq!(Credentials::new(Some("q"), &headers).token(), Some("q"));
    }
}
