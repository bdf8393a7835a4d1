//! API clients (id, bcrypt secret hash, role and permissions), their refresh tokens, and
//! restricted queues (a queue is restricted while it has a row; its owners are the
//! clients whose `allowed_queues` name it).

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{Map, Value};

use super::{Result, Store};
use crate::job::time::{self, Micros};

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

#[derive(Debug, PartialEq, Eq)]
pub enum Revocation {
    Unknown,
    AlreadyRevoked,
    Revoked,
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

fn to_json<T: serde::Serialize>(value: &Option<T>) -> Result<Option<String>> {
    Ok(value.as_ref().map(serde_json::to_string).transpose()?)
}

impl Store {
    /// A client and its secret hash.
    pub async fn client(&self, client_id: &str) -> Result<Option<(Client, Option<String>)>> {
        let client_id = client_id.to_string();
        self.readers
            .read(move |db| {
                Ok(db
                    .prepare_cached(&format!(
                        "SELECT {CLIENT_COLUMNS} FROM clients WHERE client_id = ?1"
                    ))?
                    .query_row([&client_id], client_row)
                    .optional()?)
            })
            .await
    }

    pub async fn clients(&self) -> Result<Vec<Client>> {
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
    pub async fn save_client(
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
    pub async fn remove_client(&self, client_id: &str) -> Result<bool> {
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

    pub async fn store_refresh_token(
        &self,
        token_hash: String,
        client_id: &str,
        expires_at: Micros,
    ) -> Result<()> {
        let client_id = client_id.to_string();
        self.writer
            .write_one_statement(move |tx| {
                let now = time::now();
                tx.prepare_cached(
                    "INSERT INTO refresh_tokens (token_hash, client_id, issued_at, expires_at, last_accessed)
                     VALUES (?1, ?2, ?3, ?4, ?3)",
                )?
                .execute(params![token_hash, client_id, now, expires_at])?;
                Ok(())
            })
            .await
    }

    /// Looks a refresh token up by its hash and notes that it was used. Unknown tokens
    /// cost only a read (the endpoint is public).
    pub async fn use_refresh_token(&self, token_hash: String) -> Result<Option<RefreshToken>> {
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

    pub async fn revoke_refresh_token(&self, token_hash: String) -> Result<Revocation> {
        self.writer
            .write(move |tx| {
                let revoked: Option<bool> = tx
                    .prepare_cached("SELECT revoked FROM refresh_tokens WHERE token_hash = ?1")?
                    .query_row([&token_hash], |row| row.get(0))
                    .optional()?;
                Ok(match revoked {
                    None => Revocation::Unknown,
                    Some(true) => Revocation::AlreadyRevoked,
                    Some(false) => {
                        tx.prepare_cached(
                            "UPDATE refresh_tokens SET revoked = 1 WHERE token_hash = ?1",
                        )?
                        .execute([&token_hash])?;
                        Revocation::Revoked
                    }
                })
            })
            .await
    }

    /// Every restricted queue with its owners.
    pub async fn restricted_queues(&self) -> Result<Vec<(String, Vec<String>)>> {
        self.readers.read(|db| restricted(db, None)).await
    }

    /// One restricted queue's owners, or `None` when the queue is not restricted.
    pub async fn restricted_queue(&self, queue: &str) -> Result<Option<Vec<String>>> {
        let queue = queue.to_string();
        let found = self
            .readers
            .read(move |db| restricted(db, Some(&queue)))
            .await?;
        Ok(found.into_iter().next().map(|(_, owners)| owners))
    }

    /// Marks `queue` restricted and adds it to `client_id`'s allowed queues.
    pub async fn restrict_queue(&self, queue: &str, client_id: &str) -> Result<()> {
        let (queue, client_id) = (queue.to_string(), client_id.to_string());
        self.writer
            .write(move |tx| {
                tx.prepare_cached("INSERT OR IGNORE INTO restricted_queues (queue) VALUES (?1)")?
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
            })
            .await
    }

    /// Lifts the restriction of `queue` (for everyone, as the reference does) and removes
    /// it from `client_id`'s allowed queues.
    pub async fn unrestrict_queue(&self, queue: &str, client_id: &str) -> Result<()> {
        let (queue, client_id) = (queue.to_string(), client_id.to_string());
        self.writer
            .write(move |tx| {
                tx.prepare_cached("DELETE FROM restricted_queues WHERE queue = ?1")?.execute([&queue])?;
                tx.prepare_cached(
                    "UPDATE clients SET allowed_queues = (
                         SELECT json_group_array(value) FROM json_each(allowed_queues) WHERE value != ?2)
                     WHERE client_id = ?1 AND allowed_queues IS NOT NULL",
                )?
                .execute([&client_id, &queue])?;
                Ok(())
            })
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
