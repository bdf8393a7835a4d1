//! API clients on SQLite: clients, refresh tokens, restricted queues (their names also
//! kept in memory, see `restricted`).

use std::net::IpAddr;
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::SqliteBackend;
use crate::job::time;
use crate::store::backend;
use crate::store::clients::{
    expires_at, to_json, Client, RefreshToken, RefreshTokens, Renewal, Revocation,
};
use crate::store::error::Result;

impl backend::Logins for SqliteBackend {
    async fn count_login_attempt(
        &self,
        client_id: &str,
        address: IpAddr,
    ) -> Result<Option<Duration>> {
        Ok(self.login_failures.count_attempt(client_id, address))
    }

    async fn forget_login_failures(&self, client_id: &str, address: IpAddr) -> Result<()> {
        self.login_failures.forget(client_id, address);
        Ok(())
    }
}

const CLIENT_COLUMNS: &str =
    "client_id, role, max_priority, allowed_queues, max_reservation_time, email, secret_hash";

fn client_row(row: &Row) -> rusqlite::Result<(Client, Option<String>)> {
    let json = |index: usize| -> rusqlite::Result<Option<Value>> {
        let text: Option<String> = row.get(index)?;
        Ok(text.and_then(|text| serde_json::from_str(&text).ok()))
    };
    let object = |value: Option<Value>| match value {
        Some(Value::Object(map)) => Some(map),
        _ => None,
    };
    Ok((
        Client {
            client_id: row.get(0)?,
            role: row.get(1)?,
            max_priority: object(json(2)?),
            allowed_queues: json(3)?.and_then(|v| serde_json::from_value(v).ok()),
            max_reservation_time: object(json(4)?),
            email: row.get(5)?,
        },
        row.get(6)?,
    ))
}

impl backend::Clients for SqliteBackend {
    /// A client and its secret hash.
    async fn client(&self, client_id: &str) -> Result<Option<(Client, Option<String>)>> {
        let client_id = client_id.to_string();
        self.readers
            .lookup(move |db| {
                Ok(db
                    .prepare_cached(&format!(
                        "SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = ?1"
                    ))?
                    .query_row([&client_id], client_row)
                    .optional()?)
            })
            .await
    }
    async fn clients(&self) -> Result<Vec<Client>> {
        self.readers
            .read(|db| {
                let mut query = db.prepare_cached(&format!(
                    "SELECT {CLIENT_COLUMNS} FROM clients ORDER BY rowid"
                ))?;
                let rows = query.query_map([], client_row)?;
                Ok(rows
                    .map(|row| row.map(|(client, _)| client))
                    .collect::<rusqlite::Result<_>>()?)
            })
            .await
    }
    /// Creates or replaces a client; a `None` secret hash keeps the stored one. Returns
    /// whether the client is new. With `RefreshTokens::Revoke`, whoever holds a refresh
    /// token of the client must log in again (in the same transaction).
    async fn save_client(
        &self,
        client: Client,
        secret_hash: Option<String>,
        refresh_tokens: RefreshTokens,
    ) -> Result<bool> {
        self.writer
            .write(move |tx| {
                let existed: bool = tx
                    .prepare_cached("SELECT count(*) FROM clients WHERE client_id = ?1")?
                    .query_row([&client.client_id], |row| row.get::<_, i64>(0))?
                    > 0;
                tx.prepare_cached(
                    "INSERT INTO clients (client_id, secret_hash, role, max_priority, allowed_queues,
                                          max_reservation_time, email, created_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                     ON CONFLICT (client_id) DO UPDATE SET
                         secret_hash = coalesce(?2, secret_hash), role = ?3, max_priority = ?4,
                         allowed_queues = ?5, max_reservation_time = ?6, email = ?7",
                )?
                .execute(params![
                    client.client_id,
                    secret_hash,
                    client.role,
                    to_json(&client.max_priority)?,
                    to_json(&client.allowed_queues)?,
                    to_json(&client.max_reservation_time)?,
                    client.email,
                    time::now()
                ])?;
                if refresh_tokens == RefreshTokens::Revoke {
                    tx.prepare_cached(
                        "UPDATE refresh_tokens SET revoked = 1 WHERE client_id = ?1",
                    )?
                    .execute([&client.client_id])?;
                }
                Ok(!existed)
            })
            .await
    }
    /// Deletes a client with its refresh tokens and secrets; false when there was none.
    async fn remove_client(&self, client_id: &str) -> Result<bool> {
        let client_id = client_id.to_string();
        self.writer
            .write(move |tx| {
                let removed = tx
                    .prepare_cached("DELETE FROM clients WHERE client_id = ?1")?
                    .execute([&client_id])?
                    > 0;
                tx.prepare_cached("DELETE FROM refresh_tokens WHERE client_id = ?1")?
                    .execute([&client_id])?;
                tx.prepare_cached("DELETE FROM secrets WHERE client_id = ?1")?
                    .execute([&client_id])?;
                Ok(removed)
            })
            .await
    }
    /// Stores a refresh token of `client_id` (the first of its family) while the client
    /// exists and, with `secret_hash`, still has the secret that was checked: a secret
    /// changed meanwhile revoked every token, this one included. Whether it was stored.
    async fn store_refresh_token(
        &self,
        token_hash: String,
        client_id: &str,
        lifetime: Duration,
        secret_hash: Option<String>,
    ) -> Result<bool> {
        let client_id = client_id.to_string();
        self.writer
            .write_one_statement(move |tx| {
                let now = time::now();
                let stored = tx
                    .prepare_cached(
                        "INSERT INTO refresh_tokens
                             (token_hash, client_id, issued_at, expires_at, last_accessed, family)
                         SELECT ?1, client_id, ?3, ?4, ?3, ?1 FROM clients
                         WHERE client_id = ?2 AND (?5 IS NULL OR secret_hash = ?5)",
                    )?
                    .execute(params![
                        token_hash,
                        client_id,
                        now,
                        expires_at(now, lifetime),
                        secret_hash
                    ])?;
                Ok(stored > 0)
            })
            .await
    }
    /// Renews the refresh token `token_hash` to `successor_hash` (of its family, valid
    /// for `lifetime`) in one transaction, so a revocation, new secret or removal of
    /// the client cannot fall between the check and the new token. A token is renewed at
    /// most once: asked again, it gives the same successor while that is still valid.
    async fn renew_refresh_token(
        &self,
        token_hash: String,
        successor_hash: String,
        lifetime: Duration,
    ) -> Result<Renewal> {
        self.writer
            .write(move |tx| {
                let now = time::now();
                let inserted = tx
                    .prepare_cached(
                        "INSERT INTO refresh_tokens
                             (token_hash, client_id, issued_at, expires_at, last_accessed, family)
                         SELECT ?2, token.client_id, ?3, ?4, ?3, token.family
                         FROM refresh_tokens AS token JOIN clients USING (client_id)
                         WHERE token.token_hash = ?1 AND NOT token.revoked AND token.expires_at > ?3
                             AND token.successor IS NULL",
                    )?
                    .execute(params![token_hash, successor_hash, now, expires_at(now, lifetime)])?;
                if inserted > 0 {
                    tx.prepare_cached(
                        "UPDATE refresh_tokens SET successor = ?2 WHERE token_hash = ?1",
                    )?
                    .execute([&token_hash, &successor_hash])?;
                    return Ok(Renewal::Renewed);
                }
                let earlier: Option<Option<String>> = tx
                    .prepare_cached(
                        "SELECT token.successor
                         FROM refresh_tokens AS token JOIN clients USING (client_id)
                         WHERE token.token_hash = ?1 AND NOT token.revoked AND token.expires_at > ?2",
                    )?
                    .query_row(params![token_hash, now], |row| row.get(0))
                    .optional()?;
                let successor_valid = || -> rusqlite::Result<bool> {
                    tx.prepare_cached(
                        "SELECT count(*) FROM refresh_tokens
                         WHERE token_hash = ?1 AND NOT revoked AND expires_at > ?2",
                    )?
                    .query_row(params![successor_hash, now], |row| row.get::<_, i64>(0))
                    .map(|count| count > 0)
                };
                Ok(match earlier {
                    Some(Some(earlier)) if earlier == successor_hash && successor_valid()? => {
                        Renewal::Renewed
                    }
                    Some(Some(_)) => Renewal::RenewedElsewhere,
                    _ => Renewal::Invalid,
                })
            })
            .await
    }
    /// Looks a refresh token up by its hash and notes that it was used. Unknown tokens
    /// cost only a read (the endpoint is public).
    async fn use_refresh_token(&self, token_hash: String) -> Result<Option<RefreshToken>> {
        let lookup = token_hash.clone();
        let found = self
            .readers
            .read(move |db| {
                Ok(db
                    .prepare_cached("SELECT client_id, issued_at, expires_at, revoked FROM refresh_tokens WHERE token_hash = ?1")?
                    .query_row([&lookup], |row| {
                        Ok(RefreshToken {
                            client_id: row.get(0)?,
                            issued_at: row.get(1)?,
                            expires_at: row.get(2)?,
                            revoked: row.get(3)?,
                        })
                    })
                    .optional()?)
            })
            .await?;
        if found.is_some() {
            self.writer
                .write_one_statement(move |tx| {
                    tx.prepare_cached(
                        "UPDATE refresh_tokens SET last_accessed = ?2 WHERE token_hash = ?1",
                    )?
                    .execute(params![token_hash, time::now()])?;
                    Ok(())
                })
                .await?;
        }
        Ok(found)
    }
    /// Revokes a refresh token with its whole family: what it was renewed from and to.
    async fn revoke_refresh_token(&self, token_hash: String) -> Result<Revocation> {
        self.writer
            .write(move |tx| {
                let found: Option<(bool, String)> = tx
                    .prepare_cached(
                        "SELECT revoked, family FROM refresh_tokens WHERE token_hash = ?1",
                    )?
                    .query_row([&token_hash], |row| Ok((row.get(0)?, row.get(1)?)))
                    .optional()?;
                Ok(match found {
                    None => Revocation::Unknown,
                    Some((true, _)) => Revocation::AlreadyRevoked,
                    Some((false, family)) => {
                        tx.prepare_cached(
                            "UPDATE refresh_tokens SET revoked = 1 WHERE family = ?1",
                        )?
                        .execute([&family])?;
                        Revocation::Revoked
                    }
                })
            })
            .await
    }

    async fn restricted_queues(&self, only: Option<String>) -> Result<Vec<(String, Vec<String>)>> {
        self.readers
            .read(move |db| restricted(db, only.as_deref()))
            .await
    }

    async fn is_restricted(&self, queue: &str) -> Result<bool> {
        let read_names = self.readers.read(|db| {
            let mut query = db.prepare_cached("SELECT queue FROM restricted_queues")?;
            let names = query.query_map([], |row| row.get(0))?;
            Ok(names.collect::<rusqlite::Result<_>>()?)
        });
        Ok(self.restricted.get(read_names).await?.contains(queue))
    }

    /// Marks `queue` restricted and adds it to `client_id`'s allowed queues.
    async fn restrict_queue(&self, queue: &str, client_id: &str) -> Result<()> {
        let (queue, client_id) = (queue.to_string(), client_id.to_string());
        let restricted = self.restricted.clone();
        self.writer
            .write_then(
                move |tx| {
                    tx.prepare_cached(
                        "INSERT OR IGNORE INTO restricted_queues (queue) VALUES (?1)",
                    )?
                    .execute([&queue])?;
                    tx.prepare_cached(
                        "UPDATE clients SET allowed_queues = (
                         SELECT json_group_array(value) FROM (
                             SELECT value FROM json_each(coalesce(allowed_queues, '[]'))
                             UNION SELECT ?2))
                     WHERE client_id = ?1",
                    )?
                    .execute([&client_id, &queue])?;
                    Ok(())
                },
                move || restricted.changed(),
            )
            .await
    }

    /// Lifts the restriction of `queue` (for everyone, as the reference does) and removes
    /// it from `client_id`'s allowed queues.
    async fn unrestrict_queue(&self, queue: &str, client_id: &str) -> Result<()> {
        let (queue, client_id) = (queue.to_string(), client_id.to_string());
        let restricted = self.restricted.clone();
        self.writer
            .write_then(move |tx| {
                tx.prepare_cached("DELETE FROM restricted_queues WHERE queue = ?1")?.execute([&queue])?;
                tx.prepare_cached(
                    "UPDATE clients SET allowed_queues = (
                         SELECT json_group_array(value) FROM json_each(allowed_queues) WHERE value != ?2)
                     WHERE client_id = ?1 AND allowed_queues IS NOT NULL",
                )?
                .execute([&client_id, &queue])?;
                Ok(())
            }, move || restricted.changed())
            .await
    }
}

/// Restricted queues (all, or one) with the clients allowed on each.
fn restricted(db: &Connection, only: Option<&str>) -> Result<Vec<(String, Vec<String>)>> {
    let mut query = db.prepare_cached(
        "SELECT restricted_queues.queue, clients.client_id FROM restricted_queues
         LEFT JOIN clients ON EXISTS (
             SELECT 1 FROM json_each(coalesce(clients.allowed_queues, '[]'))
             WHERE value = restricted_queues.queue)
         WHERE ?1 IS NULL OR restricted_queues.queue = ?1
         ORDER BY restricted_queues.queue, clients.rowid",
    )?;
    let mut rows = query.query([only])?;
    let mut queues: Vec<(String, Vec<String>)> = Vec::new();
    while let Some(row) = rows.next()? {
        let (queue, owner): (String, Option<String>) = (row.get(0)?, row.get(1)?);
        if queues.last().is_none_or(|(last, _)| *last != queue) {
            queues.push((queue, Vec::new()));
        }
        if let (Some(owner), Some((_, owners))) = (owner, queues.last_mut()) {
            owners.push(owner);
        }
    }
    Ok(queues)
}
