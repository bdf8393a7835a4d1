//! Secrets of API clients, encrypted at rest: each value is sealed under the server's
//! master key (see `secrets_key`).

use rusqlite::{params, OptionalExtension};

use super::error::{Result, StoreError};
use super::open::Store;
use super::secrets_key::{SealNonce, SecretsKey};
use crate::job::time::{self, Micros};

/// When a secret stops being readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    At(Micros),
    /// Deleted by its first read.
    AfterFirstRead,
}

impl Store {
    fn secrets_key(&self) -> Result<&SecretsKey> {
        self.secrets
            .as_ref()
            .ok_or_else(|| StoreError::Database("No secrets store".into()))
    }

    pub fn has_secrets_store(&self) -> bool {
        self.secrets.is_some()
    }

    /// Stores (or replaces) a secret.
    pub async fn put_secret(
        &self,
        client_id: &str,
        path: &str,
        value: &str,
        expiry: Expiry,
    ) -> Result<()> {
        let (nonce, ciphertext) = self.secrets_key()?.seal(client_id, path, value)?;
        let (client_id, path) = (client_id.to_string(), path.to_string());
        let (ephemeral, expires_at) = match expiry {
            Expiry::Never => (false, None),
            Expiry::At(at) => (false, Some(at)),
            Expiry::AfterFirstRead => (true, None),
        };
        self.writer
            .write_one_statement(move |tx| {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO secrets (client_id, path, nonce, ciphertext, ephemeral, expires_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![client_id, path, nonce.to_vec(), ciphertext, ephemeral, expires_at, time::now()])?;
                Ok(())
            })
            .await
    }

    pub async fn delete_secret(&self, client_id: &str, path: &str) -> Result<()> {
        let (client_id, path) = (client_id.to_string(), path.to_string());
        self.writer
            .write_one_statement(move |tx| {
                tx.prepare_cached("DELETE FROM secrets WHERE client_id = ?1 AND path = ?2")?
                    .execute([&client_id, &path])?;
                Ok(())
            })
            .await
    }

    /// The paths among `paths` that `client_id` has no readable secret at.
    pub async fn missing_secrets(
        &self,
        client_id: &str,
        paths: Vec<String>,
    ) -> Result<Vec<String>> {
        let client_id = client_id.to_string();
        self.readers
            .read(move |db| {
                let mut exists = db.prepare_cached(
                    "SELECT 1 FROM secrets WHERE client_id = ?1 AND path = ?2
                       AND (expires_at IS NULL OR expires_at > ?3)",
                )?;
                let now = time::now();
                let mut missing = Vec::new();
                for path in paths {
                    if exists
                        .query_row(params![client_id, path, now], |_| Ok(()))
                        .optional()?
                        .is_none()
                    {
                        missing.push(path);
                    }
                }
                Ok(missing)
            })
            .await
    }

    /// Reads a secret for a job's agent; a single-use secret is deleted by this read.
    /// `None` when it is missing, expired or cannot be decrypted.
    pub async fn take_secret(&self, client_id: &str, path: &str) -> Result<Option<String>> {
        let (owner, location) = (client_id.to_string(), path.to_string());
        let sealed = self
            .writer
            .write(move |tx| {
                let sealed: Option<(Vec<u8>, Vec<u8>, bool)> = tx
                    .prepare_cached(
                        "SELECT nonce, ciphertext, ephemeral FROM secrets
                         WHERE client_id = ?1 AND path = ?2 AND (expires_at IS NULL OR expires_at > ?3)",
                    )?
                    .query_row(params![owner, location, time::now()], |row| {
                        Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                    })
                    .optional()?;
                if let Some((_, _, true)) = sealed {
                    tx.prepare_cached("DELETE FROM secrets WHERE client_id = ?1 AND path = ?2")?
                        .execute([&owner, &location])?;
                }
                Ok(sealed)
            })
            .await?;
        let Some((nonce, ciphertext, _)) = sealed else {
            return Ok(None);
        };
        let Ok(nonce) = SealNonce::try_from(nonce) else {
            return Ok(None); // a damaged row: unreadable, like one sealed under another key
        };
        let plain = self
            .secrets_key()?
            .unseal(client_id, path, &nonce, &ciphertext);
        Ok(plain.and_then(|bytes| String::from_utf8(bytes).ok()))
    }
}
