//! API clients, their refresh tokens and restricted queues on PostgreSQL, with SQLite's
//! rules (`store/clients.rs`). What SQLite's single writer gives by running one write at
//! a time, these transactions get by locking the rows they read before they write.

use std::collections::BTreeSet;
use std::net::IpAddr;
use std::time::Duration;

use serde_json::Value;
use tokio_postgres::Row;

use super::PostgresBackend;
use crate::job::time;
use crate::store::backend;
use crate::store::clients::{
    expires_at, to_json, Client, RefreshToken, RefreshTokens, Renewal, Revocation,
};
use crate::store::error::Result;
use crate::store::logins::{FAILURES_BEFORE_LOCKOUT, LOCKOUT};

/// Counts a login attempt of `$1` (client id) from `$2` (address) at `$3`: a source
/// locked out stays so; one whose lock-out is over starts again; the failure past `$4`
/// locks it out for `$5` microseconds. Gives the end of its lock-out, if any.
const COUNT_LOGIN_ATTEMPT: &str = "
    INSERT INTO login_failures AS source (client_id, address, failures, locked_until, last_attempt)
    VALUES ($1, $2, 1, NULL, $3)
    ON CONFLICT (client_id, address) DO UPDATE SET
        failures = CASE
            WHEN source.locked_until > $3 THEN source.failures
            WHEN source.locked_until IS NOT NULL THEN 1
            WHEN source.failures + 1 > $4::bigint THEN 0
            ELSE source.failures + 1
        END,
        locked_until = CASE
            WHEN source.locked_until > $3 THEN source.locked_until
            WHEN source.locked_until IS NULL AND source.failures + 1 > $4::bigint
                THEN $3 + $5::bigint
            ELSE NULL
        END,
        last_attempt = $3
    RETURNING locked_until";

impl backend::Logins for PostgresBackend {
    async fn count_login_attempt(
        &self,
        client_id: &str,
        address: IpAddr,
    ) -> Result<Option<Duration>> {
        let now = time::now();
        let db = self.connection().await?;
        let count = db.prepare_cached(COUNT_LOGIN_ATTEMPT).await?;
        let lockout = LOCKOUT.as_micros() as i64;
        let row = db
            .query_one(
                &count,
                &[
                    &client_id,
                    &address.to_string(),
                    &now,
                    &i64::from(FAILURES_BEFORE_LOCKOUT),
                    &lockout,
                ],
            )
            .await?;
        let locked_until: Option<i64> = row.get(0);
        Ok(locked_until
            .filter(|&until| until > now)
            .map(|until| Duration::from_micros((until - now) as u64)))
    }

    async fn forget_login_failures(&self, client_id: &str, address: IpAddr) -> Result<()> {
        let db = self.connection().await?;
        let forget = db
            .prepare_cached("DELETE FROM login_failures WHERE client_id = $1 AND address = $2")
            .await?;
        db.execute(&forget, &[&client_id, &address.to_string()])
            .await?;
        Ok(())
    }
}

const CLIENT_COLUMNS: &str = "client_id, role, max_priority::text, allowed_queues::text,
    max_reservation_time::text, email, secret_hash";

/// A client and its secret hash from a row of `CLIENT_COLUMNS`. A permission stored in
/// an unexpected shape reads as absent, as on SQLite.
fn client_row(row: &Row) -> (Client, Option<String>) {
    let json = |index: usize| -> Option<Value> {
        let text: Option<&str> = row.get(index);
        text.and_then(|text| serde_json::from_str(text).ok())
    };
    let object = |value: Option<Value>| match value {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    };
    (
        Client {
            client_id: row.get(0),
            role: row.get(1),
            max_priority: object(json(2)),
            allowed_queues: json(3).and_then(|value| serde_json::from_value(value).ok()),
            max_reservation_time: object(json(4)),
            email: row.get(5),
        },
        row.get(6),
    )
}

impl backend::Clients for PostgresBackend {
    async fn client(&self, client_id: &str) -> Result<Option<(Client, Option<String>)>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = $1"
            ))
            .await?;
        let row = client.query_opt(&select, &[&client_id]).await?;
        Ok(row.as_ref().map(client_row))
    }

    async fn clients(&self) -> Result<Vec<Client>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(&format!(
                "SELECT {CLIENT_COLUMNS} FROM clients ORDER BY seq"
            ))
            .await?;
        let rows = client.query(&select, &[]).await?;
        Ok(rows.iter().map(|row| client_row(row).0).collect())
    }

    async fn save_client(
        &self,
        saved: Client,
        secret_hash: Option<String>,
        refresh_tokens: RefreshTokens,
    ) -> Result<bool> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        // `xmax = 0`: no transaction has updated the row version returned, so the INSERT
        // made it (the client is new).
        let upsert = transaction
            .prepare_cached(
                "INSERT INTO clients (client_id, secret_hash, role, max_priority, allowed_queues,
                                      max_reservation_time, email, created_at)
                 VALUES ($1, $2, $3, $4::text::json, $5::text::json, $6::text::json, $7, $8)
                 ON CONFLICT (client_id) DO UPDATE SET
                     secret_hash = coalesce($2, clients.secret_hash), role = $3,
                     max_priority = $4::text::json, allowed_queues = $5::text::json,
                     max_reservation_time = $6::text::json, email = $7
                 RETURNING xmax = 0",
            )
            .await?;
        let created: bool = transaction
            .query_one(
                &upsert,
                &[
                    &saved.client_id,
                    &secret_hash,
                    &saved.role,
                    &to_json(&saved.max_priority)?,
                    &to_json(&saved.allowed_queues)?,
                    &to_json(&saved.max_reservation_time)?,
                    &saved.email,
                    &time::now(),
                ],
            )
            .await?
            .get(0);
        if refresh_tokens == RefreshTokens::Revoke {
            let revoke = transaction
                .prepare_cached("UPDATE refresh_tokens SET revoked = TRUE WHERE client_id = $1")
                .await?;
            transaction.execute(&revoke, &[&saved.client_id]).await?;
        }
        transaction.commit().await?;
        Ok(created)
    }

    async fn remove_client(&self, client_id: &str) -> Result<bool> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        // The client first: a renewal holding it (renew_refresh_token) finishes before,
        // and the tokens deleted next include the successor it stored.
        let delete_client = transaction
            .prepare_cached("DELETE FROM clients WHERE client_id = $1")
            .await?;
        let removed = transaction.execute(&delete_client, &[&client_id]).await? > 0;
        for delete in [
            "DELETE FROM refresh_tokens WHERE client_id = $1",
            "DELETE FROM secrets WHERE client_id = $1",
        ] {
            let delete = transaction.prepare_cached(delete).await?;
            transaction.execute(&delete, &[&client_id]).await?;
        }
        transaction.commit().await?;
        Ok(removed)
    }

    async fn store_refresh_token(
        &self,
        token_hash: String,
        client_id: &str,
        lifetime: Duration,
        secret_hash: Option<String>,
    ) -> Result<bool> {
        let now = time::now();
        let client = self.connection().await?;
        let insert = client
            .prepare_cached(
                "INSERT INTO refresh_tokens
                     (token_hash, client_id, issued_at, expires_at, last_accessed, family)
                 SELECT $1, client_id, $3, $4, $3, $1 FROM clients
                 WHERE client_id = $2 AND ($5::text IS NULL OR secret_hash = $5)",
            )
            .await?;
        let stored = client
            .execute(
                &insert,
                &[
                    &token_hash,
                    &client_id,
                    &now,
                    &expires_at(now, lifetime),
                    &secret_hash,
                ],
            )
            .await?;
        Ok(stored > 0)
    }

    async fn renew_refresh_token(
        &self,
        token_hash: String,
        successor_hash: String,
        lifetime: Duration,
    ) -> Result<Renewal> {
        let now = time::now();
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        // The token is locked against a second renewal, its client against removal and
        // changes (save_client, remove_client wait for this transaction): each statement
        // below then sees them as they are at the end.
        let lock = transaction
            .prepare_cached(
                "SELECT 1 FROM refresh_tokens AS token JOIN clients USING (client_id)
                 WHERE token.token_hash = $1
                 FOR UPDATE OF token FOR SHARE OF clients",
            )
            .await?;
        transaction.query_opt(&lock, &[&token_hash]).await?;
        let insert = transaction
            .prepare_cached(
                "INSERT INTO refresh_tokens
                     (token_hash, client_id, issued_at, expires_at, last_accessed, family)
                 SELECT $2, token.client_id, $3, $4, $3, token.family
                 FROM refresh_tokens AS token JOIN clients USING (client_id)
                 WHERE token.token_hash = $1 AND NOT token.revoked AND token.expires_at > $3
                     AND token.successor IS NULL",
            )
            .await?;
        let inserted = transaction
            .execute(
                &insert,
                &[
                    &token_hash,
                    &successor_hash,
                    &now,
                    &expires_at(now, lifetime),
                ],
            )
            .await?;
        if inserted > 0 {
            let link = transaction
                .prepare_cached("UPDATE refresh_tokens SET successor = $2 WHERE token_hash = $1")
                .await?;
            transaction
                .execute(&link, &[&token_hash, &successor_hash])
                .await?;
            transaction.commit().await?;
            return Ok(Renewal::Renewed);
        }
        let earlier = transaction
            .prepare_cached(
                "SELECT token.successor,
                        EXISTS (SELECT 1 FROM refresh_tokens AS successor
                                WHERE successor.token_hash = token.successor
                                  AND NOT successor.revoked AND successor.expires_at > $2)
                 FROM refresh_tokens AS token JOIN clients USING (client_id)
                 WHERE token.token_hash = $1 AND NOT token.revoked AND token.expires_at > $2",
            )
            .await?;
        let earlier = transaction
            .query_opt(&earlier, &[&token_hash, &now])
            .await?;
        transaction.commit().await?;
        Ok(
            match earlier.map(|row| (row.get::<_, Option<String>>(0), row.get(1))) {
                Some((Some(earlier), true)) if earlier == successor_hash => Renewal::Renewed,
                Some((Some(_), _)) => Renewal::RenewedElsewhere,
                _ => Renewal::Invalid,
            },
        )
    }

    async fn use_refresh_token(&self, token_hash: String) -> Result<Option<RefreshToken>> {
        let client = self.connection().await?;
        // Found and noted as used in one statement; an unknown token costs what a read does.
        let touch = client
            .prepare_cached(
                "UPDATE refresh_tokens SET last_accessed = $2 WHERE token_hash = $1
                 RETURNING client_id, issued_at, expires_at, revoked",
            )
            .await?;
        let row = client
            .query_opt(&touch, &[&token_hash, &time::now()])
            .await?;
        Ok(row.map(|row| RefreshToken {
            client_id: row.get(0),
            issued_at: row.get(1),
            expires_at: row.get(2),
            revoked: row.get(3),
        }))
    }

    async fn revoke_refresh_token(&self, token_hash: String) -> Result<Revocation> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        let select = transaction
            .prepare_cached(
                "SELECT revoked, family FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE",
            )
            .await?;
        let found = transaction.query_opt(&select, &[&token_hash]).await?;
        let revocation = match found.map(|row| (row.get(0), row.get::<_, Option<String>>(1))) {
            None => Revocation::Unknown,
            Some((true, _)) => Revocation::AlreadyRevoked,
            Some((false, family)) => {
                let revoke = transaction
                    .prepare_cached("UPDATE refresh_tokens SET revoked = TRUE WHERE family = $1")
                    .await?;
                transaction.execute(&revoke, &[&family]).await?;
                Revocation::Revoked
            }
        };
        transaction.commit().await?;
        Ok(revocation)
    }

    async fn restricted_queues(&self, only: Option<String>) -> Result<Vec<(String, Vec<String>)>> {
        let client = self.connection().await?;
        // By queue name bytewise, as SQLite's BINARY collation orders them; owners in the
        // order the clients were created.
        let select = client
            .prepare_cached(
                "SELECT restricted.queue, clients.client_id FROM restricted_queues AS restricted
                 LEFT JOIN clients ON EXISTS (
                     SELECT 1 FROM json_array_elements_text(
                         CASE WHEN json_typeof(clients.allowed_queues) = 'array'
                              THEN clients.allowed_queues END) AS allowed
                     WHERE allowed = restricted.queue)
                 WHERE $1::text IS NULL OR restricted.queue = $1
                 ORDER BY restricted.queue COLLATE \"C\", clients.seq",
            )
            .await?;
        let mut queues: Vec<(String, Vec<String>)> = Vec::new();
        for row in client.query(&select, &[&only]).await? {
            let (queue, owner): (String, Option<String>) = (row.get(0), row.get(1));
            if queues.last().is_none_or(|(last, _)| *last != queue) {
                queues.push((queue, Vec::new()));
            }
            if let (Some(owner), Some((_, owners))) = (owner, queues.last_mut()) {
                owners.push(owner);
            }
        }
        Ok(queues)
    }

    async fn is_restricted(&self, queue: &str) -> Result<bool> {
        let read_names = async {
            let client = self.connection().await?;
            let select = client
                .prepare_cached("SELECT queue FROM restricted_queues")
                .await?;
            let rows = client.query(&select, &[]).await?;
            Ok(rows.iter().map(|row| row.get(0)).collect())
        };
        Ok(self.restricted.get(read_names).await?.contains(queue))
    }

    async fn restrict_queue(&self, queue: &str, client_id: &str) -> Result<()> {
        self.change_restriction(queue, client_id, Restriction::Add)
            .await
    }

    async fn unrestrict_queue(&self, queue: &str, client_id: &str) -> Result<()> {
        self.change_restriction(queue, client_id, Restriction::Lift)
            .await
    }
}

/// Which way a queue's restriction changes.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Restriction {
    Add,
    Lift,
}

impl PostgresBackend {
    /// Restricts `queue` (or lifts its restriction, for everyone, as the reference does)
    /// and adds it to (removes it from) `client_id`'s allowed queues.
    async fn change_restriction(
        &self,
        queue: &str,
        client_id: &str,
        change: Restriction,
    ) -> Result<()> {
        let mut client = self.connection().await?;
        let transaction = client.transaction().await?;
        let mark = transaction
            .prepare_cached(match change {
                Restriction::Add => {
                    "INSERT INTO restricted_queues (queue) VALUES ($1) ON CONFLICT DO NOTHING"
                }
                Restriction::Lift => "DELETE FROM restricted_queues WHERE queue = $1",
            })
            .await?;
        transaction.execute(&mark, &[&queue]).await?;
        let select = transaction
            .prepare_cached(
                "SELECT allowed_queues::text FROM clients WHERE client_id = $1 FOR UPDATE",
            )
            .await?;
        if let Some(row) = transaction.query_opt(&select, &[&client_id]).await? {
            let stored: Option<Vec<String>> = row
                .get::<_, Option<&str>>(0)
                .map(serde_json::from_str)
                .transpose()?;
            let allowed = match (change, stored) {
                // A set union, sorted bytewise, as SQLite's `UNION` gives it.
                (Restriction::Add, stored) => {
                    let mut union: BTreeSet<String> = stored.into_iter().flatten().collect();
                    union.insert(queue.to_string());
                    Some(union.into_iter().collect::<Vec<_>>())
                }
                (Restriction::Lift, Some(mut allowed)) => {
                    allowed.retain(|name| name != queue);
                    Some(allowed)
                }
                // No list stays no list (every queue allowed).
                (Restriction::Lift, None) => None,
            };
            let update = transaction
                .prepare_cached(
                    "UPDATE clients SET allowed_queues = $2::text::json WHERE client_id = $1",
                )
                .await?;
            transaction
                .execute(&update, &[&client_id, &to_json(&allowed)?])
                .await?;
        }
        transaction.commit().await?;
        self.restricted.changed();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::Clients;
    use crate::store::postgres::testing;

    fn client(client_id: &str) -> Client {
        Client {
            client_id: client_id.into(),
            role: "agent".into(),
            ..Client::default()
        }
    }

    #[tokio::test]
    async fn a_used_token_is_found_and_a_revoked_family_goes_as_one() {
        let (_cluster, db) = testing::backend().await;
        let later = Duration::from_secs(60);
        db.save_client(client("rack"), None, RefreshTokens::Keep)
            .await
            .unwrap();
        assert!(db.use_refresh_token("a".into()).await.unwrap().is_none());
        db.store_refresh_token("a".into(), "rack", later, None)
            .await
            .unwrap();
        db.renew_refresh_token("a".into(), "a2".into(), later)
            .await
            .unwrap();
        let used = db
            .use_refresh_token("a2".into())
            .await
            .unwrap()
            .expect("found");
        assert_eq!((used.client_id.as_str(), used.revoked), ("rack", false));
        assert_eq!(
            db.revoke_refresh_token("a2".into()).await.unwrap(),
            Revocation::Revoked
        );
        assert_eq!(
            db.revoke_refresh_token("a".into()).await.unwrap(),
            Revocation::AlreadyRevoked,
            "the whole family"
        );
        assert_eq!(
            db.revoke_refresh_token("x".into()).await.unwrap(),
            Revocation::Unknown
        );
    }

    #[tokio::test]
    async fn restricting_adds_the_queue_once_and_lifting_removes_it_listing_owners_in_order() {
        let (_cluster, db) = testing::backend().await;
        let mut owner = client("owner");
        owner.allowed_queues = Some(vec!["zz".into(), "b".into(), "b".into()]);
        db.save_client(owner, None, RefreshTokens::Keep)
            .await
            .unwrap();
        db.save_client(client("open"), None, RefreshTokens::Keep)
            .await
            .unwrap();
        db.restrict_queue("a", "owner").await.unwrap();
        db.restrict_queue("a", "owner").await.unwrap();
        db.restrict_queue("a", "open").await.unwrap();
        db.restrict_queue("Z", "open").await.unwrap();
        let allowed = |id: &'static str| {
            let db = &db;
            async move { db.client(id).await.unwrap().unwrap().0.allowed_queues }
        };
        assert_eq!(
            allowed("owner").await,
            Some(vec!["a".into(), "b".into(), "zz".into()]),
            "a set union, sorted, as SQLite's"
        );
        assert_eq!(allowed("open").await, Some(vec!["Z".into(), "a".into()]));
        assert_eq!(
            db.restricted_queues(None).await.unwrap(),
            [
                ("Z".to_string(), vec!["open".to_string()]),
                (
                    "a".to_string(),
                    vec!["owner".to_string(), "open".to_string()]
                ),
            ],
            "bytewise by name, owners as created"
        );
        assert!(db.is_restricted("a").await.unwrap() && db.is_restricted("Z").await.unwrap());
        assert!(!db.is_restricted("b").await.unwrap());

        db.unrestrict_queue("a", "owner").await.unwrap();
        assert_eq!(allowed("owner").await, Some(vec!["b".into(), "zz".into()]));
        assert_eq!(
            db.restricted_queues(Some("a".into())).await.unwrap(),
            [],
            "lifted for everyone"
        );
        db.save_client(client("none"), None, RefreshTokens::Keep)
            .await
            .unwrap();
        db.unrestrict_queue("Z", "none").await.unwrap();
        assert_eq!(allowed("none").await, None, "no list stays no list");
        let names: Vec<String> = db
            .clients()
            .await
            .unwrap()
            .into_iter()
            .map(|client| client.client_id)
            .collect();
        assert_eq!(names, ["owner", "open", "none"]);
    }
}
