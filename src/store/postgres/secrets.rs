//! Sealed secrets on PostgreSQL, with SQLite's rules (`store/secrets.rs`): the store
//! seals and unseals; here they are bytes with an expiry.

use super::PostgresBackend;
use crate::job::time;
use crate::store::backend::{self, SealedSecret};
use crate::store::error::Result;
use crate::store::secrets::Expiry;

impl backend::Secrets for PostgresBackend {
    async fn put_secret(
        &self,
        client_id: &str,
        path: &str,
        sealed: SealedSecret,
        expiry: Expiry,
    ) -> Result<()> {
        let (ephemeral, expires_at) = match expiry {
            Expiry::Never => (false, None),
            Expiry::At(at) => (false, Some(at)),
            Expiry::AfterFirstRead => (true, None),
        };
        let client = self.connection().await?;
        let upsert = client
            .prepare_cached(
                "INSERT INTO secrets
                     (client_id, path, nonce, ciphertext, ephemeral, expires_at, updated_at)
                 VALUES ($1, $2, $3, $4, $5, $6, $7)
                 ON CONFLICT (client_id, path) DO UPDATE SET
                     nonce = excluded.nonce, ciphertext = excluded.ciphertext,
                     ephemeral = excluded.ephemeral, expires_at = excluded.expires_at,
                     updated_at = excluded.updated_at",
            )
            .await?;
        client
            .execute(
                &upsert,
                &[
                    &client_id,
                    &path,
                    &sealed.nonce,
                    &sealed.ciphertext,
                    &ephemeral,
                    &expires_at,
                    &time::now(),
                ],
            )
            .await?;
        Ok(())
    }

    async fn delete_secret(&self, client_id: &str, path: &str) -> Result<()> {
        let client = self.connection().await?;
        let delete = client
            .prepare_cached("DELETE FROM secrets WHERE client_id = $1 AND path = $2")
            .await?;
        client.execute(&delete, &[&client_id, &path]).await?;
        Ok(())
    }

    async fn missing_secrets(&self, client_id: &str, paths: Vec<String>) -> Result<Vec<String>> {
        let client = self.connection().await?;
        let select = client
            .prepare_cached(
                "SELECT path FROM secrets WHERE client_id = $1 AND path = ANY ($2)
                   AND (expires_at IS NULL OR expires_at > $3)",
            )
            .await?;
        let rows = client
            .query(&select, &[&client_id, &paths, &time::now()])
            .await?;
        let present: Vec<&str> = rows.iter().map(|row| row.get(0)).collect();
        Ok(paths
            .into_iter()
            .filter(|path| !present.contains(&path.as_str()))
            .collect())
    }

    async fn take_secret(&self, client_id: &str, path: &str) -> Result<Option<SealedSecret>> {
        let client = self.connection().await?;
        // One statement: the row is locked as it is read, so of two reads of a secret
        // readable once, the second finds it deleted.
        let take = client
            .prepare_cached(
                "WITH found AS (
                     SELECT nonce, ciphertext, ephemeral FROM secrets
                     WHERE client_id = $1 AND path = $2
                       AND (expires_at IS NULL OR expires_at > $3)
                     FOR UPDATE
                 ), read_once AS (
                     DELETE FROM secrets USING found
                     WHERE client_id = $1 AND path = $2 AND found.ephemeral
                 )
                 SELECT nonce, ciphertext FROM found",
            )
            .await?;
        let row = client
            .query_opt(&take, &[&client_id, &path, &time::now()])
            .await?;
        Ok(row.map(|row| SealedSecret {
            nonce: row.get(0),
            ciphertext: row.get(1),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::backend::Secrets;
    use crate::store::postgres::testing;

    fn sealed(text: &str) -> SealedSecret {
        SealedSecret {
            nonce: vec![1, 2, 3],
            ciphertext: text.as_bytes().to_vec(),
        }
    }

    #[tokio::test]
    async fn a_read_once_secret_is_gone_after_its_first_read() {
        let (_cluster, db) = testing::backend().await;
        db.put_secret("c", "once", sealed("x"), Expiry::AfterFirstRead)
            .await
            .unwrap();
        db.put_secret("c", "kept", sealed("y"), Expiry::Never)
            .await
            .unwrap();
        db.put_secret("c", "old", sealed("z"), Expiry::At(1))
            .await
            .unwrap();
        let paths = ["once", "kept", "old", "never-put"]
            .map(String::from)
            .to_vec();
        assert_eq!(
            db.missing_secrets("c", paths.clone()).await.unwrap(),
            ["old", "never-put"]
        );
        let first = db
            .take_secret("c", "once")
            .await
            .unwrap()
            .expect("readable");
        assert_eq!(
            (first.nonce, first.ciphertext),
            (vec![1, 2, 3], b"x".to_vec())
        );
        assert!(db.take_secret("c", "once").await.unwrap().is_none());
        assert!(db.take_secret("c", "kept").await.unwrap().is_some());
        assert!(db.take_secret("c", "kept").await.unwrap().is_some());
        assert!(
            db.take_secret("c", "old").await.unwrap().is_none(),
            "expired"
        );
        assert!(db.take_secret("other", "kept").await.unwrap().is_none());
        db.delete_secret("c", "kept").await.unwrap();
        assert_eq!(
            db.missing_secrets("c", paths).await.unwrap(),
            ["once", "kept", "old", "never-put"]
        );
    }
}
