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
    use crate::store::open::{DatabaseChoice, Store};
    use crate::store::postgres::Database;
    use crate::store::sqlite::SyncMode;

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
    async fn renewals_see_what_changed_since_the_token_was_read(db: Store) {
        let later = Duration::from_secs(60);
        let renew = |token: &str, successor: &str| {
            db.renew_refresh_token(token.into(), successor.into(), later)
        };
        let save =
            |keep: RefreshTokens| db.save_client(client("rack"), Some("secret-hash".into()), keep);
        assert!(save(RefreshTokens::Keep).await.unwrap(), "new");
        let issue = |token: &str| db.store_refresh_token(token.into(), "rack", later, None);
        assert!(issue("a").await.unwrap());
        assert_eq!(renew("a", "a2").await.unwrap(), Renewal::Renewed);
        assert_eq!(
            renew("a", "a2").await.unwrap(),
            Renewal::Renewed,
            "the same again"
        );
        assert_eq!(renew("a", "a3").await.unwrap(), Renewal::RenewedElsewhere);

        assert!(issue("b").await.unwrap());
        assert!(!save(RefreshTokens::Revoke).await.unwrap(), "not new");
        assert_eq!(renew("b", "b2").await.unwrap(), Renewal::Invalid);
        assert_eq!(renew("a", "a2").await.unwrap(), Renewal::Invalid);

        assert!(issue("c").await.unwrap());
        assert!(db.remove_client("rack").await.unwrap());
        assert!(!db.remove_client("rack").await.unwrap());
        save(RefreshTokens::Keep).await.unwrap();
        assert_eq!(renew("c", "c2").await.unwrap(), Renewal::Invalid);

        // A login whose checked secret changed meanwhile gets no token.
        let stale = db.store_refresh_token("d".into(), "rack", later, Some("old-hash".into()));
        assert!(!stale.await.unwrap());
        assert!(!db
            .store_refresh_token("e".into(), "gone", later, None)
            .await
            .unwrap());
        // The secret hash was kept by saves without one.
        let (_, hash) = db.client("rack").await.unwrap().expect("saved");
        assert_eq!(hash.as_deref(), Some("secret-hash"));
    }

    #[tokio::test]
    async fn a_token_changed_or_gone_since_it_was_read_is_not_renewed_on_sqlite() {
        let data = tempfile::tempdir().unwrap();
        let sqlite = DatabaseChoice::Sqlite(SyncMode::Normal);
        let store = Store::open_beside_server(data.path(), sqlite)
            .await
            .unwrap();
        renewals_see_what_changed_since_the_token_was_read(store).await;
    }

    #[tokio::test]
    async fn a_token_changed_or_gone_since_it_was_read_is_not_renewed_on_postgres() {
        let cluster = tf_test_support::postgres::Postgres::start();
        let database = Database::parse(&cluster.create_database("tokens")).unwrap();
        let data = tempfile::tempdir().unwrap();
        let postgres = DatabaseChoice::Postgres(Box::new(database));
        let store = Store::open_beside_server(data.path(), postgres)
            .await
            .unwrap();
        renewals_see_what_changed_since_the_token_was_read(store).await;
    }
}
