//! API clients (id, bcrypt secret hash, role and permissions), their refresh tokens, and
//! restricted queues (a queue is restricted while it has a row; its owners are the
//! clients whose `allowed_queues` name it).

use std::time::Duration;

use serde_json::{Map, Value};

use super::error::Result;
use crate::job::time::Micros;

/// A client and its permissions, as the API shows them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Client {
    pub client_id: String,
    pub role: String,
    pub max_priority: Option<Map<String, Value>>,
    pub allowed_queues: Option<Vec<String>>,
    pub max_reservation_time: Option<Map<String, Value>>,
    pub email: Option<String>,
}

impl Client {
    /// The permissions object of access tokens and `client-permissions` answers.
    pub fn permissions(&self) -> Map<String, Value> {
        let mut permissions = Map::new();
        permissions.insert("client_id".into(), Value::String(self.client_id.clone()));
        permissions.insert("role".into(), Value::String(self.role.clone()));
        let mut put = |key: &str, value: Option<Value>| {
            if let Some(value) = value {
                permissions.insert(key.into(), value);
            }
        };
        put("max_priority", self.max_priority.clone().map(Value::Object));
        put(
            "allowed_queues",
            self.allowed_queues
                .clone()
                .map(|q| q.into_iter().map(Value::String).collect()),
        );
        put(
            "max_reservation_time",
            self.max_reservation_time.clone().map(Value::Object),
        );
        put("email", self.email.clone().map(Value::String));
        permissions
    }
}

/// A refresh token's record (looked up by the token's hash).
pub struct RefreshToken {
    pub client_id: String,
    pub issued_at: Micros,
    pub expires_at: Micros,
    pub revoked: bool,
}

/// What saving a client does to the refresh tokens it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefreshTokens {
    Keep,
    /// Its secret changed or its role was lowered: the old tokens must not outlive that.
    Revoke,
}

/// What asking to renew a refresh token came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Renewal {
    /// The successor is stored: now, or by an earlier renewal of the same token.
    Renewed,
    /// The token was renewed before to another successor (the server's key changed since).
    RenewedElsewhere,
    /// The token was revoked, expired or removed, or its client was, meanwhile.
    Invalid,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Revocation {
    Unknown,
    AlreadyRevoked,
    Revoked,
}

/// When a token issued at `now` for `lifetime` expires (the settings bound lifetimes).
pub(super) fn expires_at(now: Micros, lifetime: Duration) -> Micros {
    now + lifetime.as_micros() as Micros
}

pub(super) fn to_json<T: serde::Serialize>(value: &Option<T>) -> Result<Option<String>> {
    Ok(value.as_ref().map(serde_json::to_string).transpose()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::open::Store;

    fn client(client_id: &str) -> Client {
        Client {
            client_id: client_id.into(),
            role: "agent".into(),
            ..Client::default()
        }
    }

    /// What would have slipped between reading a token and storing its successor: a
    /// revocation, a new secret, the client's removal (and a client of the same id added
    /// again after it).
    #[tokio::test]
    async fn a_token_changed_or_gone_since_it_was_read_is_not_renewed() {
        let data = tempfile::tempdir().unwrap();
        let sqlite = crate::store::DatabaseChoice::Sqlite(crate::store::SyncMode::Normal);
        let store = Store::open_beside_server(data.path(), sqlite)
            .await
            .unwrap();
        let later = Duration::from_secs(60);
        let hash = |name: &str| name.to_string();
        let renew = |token: &str, successor: &str| {
            store.renew_refresh_token(hash(token), hash(successor), later)
        };
        let save = |keep: RefreshTokens| {
            store.save_client(client("rack"), Some("secret-hash".into()), keep)
        };
        save(RefreshTokens::Keep).await.unwrap();
        let issue = |token: &str| store.store_refresh_token(hash(token), "rack", later, None);
        assert!(issue("a").await.unwrap());
        assert_eq!(renew("a", "a2").await.unwrap(), Renewal::Renewed);
        assert_eq!(
            renew("a", "a2").await.unwrap(),
            Renewal::Renewed,
            "the same again"
        );
        assert_eq!(renew("a", "a3").await.unwrap(), Renewal::RenewedElsewhere);

        assert!(issue("b").await.unwrap());
        save(RefreshTokens::Revoke).await.unwrap();
        assert_eq!(renew("b", "b2").await.unwrap(), Renewal::Invalid);
        assert_eq!(renew("a", "a2").await.unwrap(), Renewal::Invalid);

        assert!(issue("c").await.unwrap());
        store.remove_client("rack").await.unwrap();
        save(RefreshTokens::Keep).await.unwrap();
        assert_eq!(renew("c", "c2").await.unwrap(), Renewal::Invalid);

        // A login whose checked secret changed meanwhile gets no token.
        let stale = store.store_refresh_token(hash("d"), "rack", later, Some("old-hash".into()));
        assert!(!stale.await.unwrap());
        assert!(!store
            .store_refresh_token(hash("e"), "gone", later, None)
            .await
            .unwrap());
    }
}
