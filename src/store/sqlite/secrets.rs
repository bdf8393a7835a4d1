//! Secrets on SQLite: sealed values by client and path.

use rusqlite::{params, OptionalExtension};

use super::SqliteBackend;
use crate::job::time;
use crate::store::backend::{self, SealedSecret};
use crate::store::error::Result;
use crate::store::secrets::Expiry;

impl backend::Secrets for SqliteBackend {
    async fn put_secret(
        &self,
        client_id: &str,
        path: &str,
        sealed: SealedSecret,
        expiry: Expiry,
    ) -> Result<()> {
        let (client_id, path) = (client_id.to_string(), path.to_string());
        let (ephemeral, expires_at) = expiry.columns();
        self.writer
            .write_one_statement(move |tx| {
                tx.prepare_cached(
                    "INSERT OR REPLACE INTO secrets (client_id, path, nonce, ciphertext, ephemeral, expires_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                )?
                .execute(params![client_id, path, sealed.nonce, sealed.ciphertext, ephemeral, expires_at, time::now()])?;
                Ok(())
            })
            .await
    }

    async fn delete_secret(&self, client_id: &str, path: &str) -> Result<()> {
        let (client_id, path) = (client_id.to_string(), path.to_string());
        self.writer
            .write_one_statement(move |tx| {
                tx.prepare_cached("DELETE FROM secrets WHERE client_id = ?1 AND path = ?2")?
                    .execute([&client_id, &path])?;
                Ok(())
            })
            .await
    }

    async fn missing_secrets(&self, client_id: &str, paths: Vec<String>) -> Result<Vec<String>> {
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

    async fn take_secret(&self, client_id: &str, path: &str) -> Result<Option<SealedSecret>> {
        let (owner, location) = (client_id.to_string(), path.to_string());
        self.writer
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
                Ok(sealed.map(|(nonce, ciphertext, _)| SealedSecret { nonce, ciphertext }))
            })
            .await
    }
}
