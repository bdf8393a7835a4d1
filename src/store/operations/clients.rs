//! API clients, their refresh tokens, and restricted queues.

use std::net::IpAddr;
use std::time::Duration;

use crate::store::backend::{Clients as _, Logins as _};
use crate::store::clients::{Client, RefreshToken, RefreshTokens, Renewal, Revocation};
use crate::store::error::Result;
use crate::store::open::{on_backend, Store};

impl Store {
    /// Counts an attempt to log in as `client_id` from `address` (before its secret is
    /// checked, so parallel guesses count too); `Some` is how long the source is locked
    /// out. Every server of the lab counts together.
    pub async fn count_login_attempt(
        &self,
        client_id: &str,
        address: IpAddr,
    ) -> Result<Option<Duration>> {
        on_backend!(self, db => db.count_login_attempt(client_id, address).await)
    }

    /// `client_id` logged in from `address`: that source's failures are forgotten.
    pub async fn forget_login_failures(&self, client_id: &str, address: IpAddr) -> Result<()> {
        on_backend!(self, db => db.forget_login_failures(client_id, address).await)
    }

    /// A client and its secret hash.
    pub async fn client(&self, client_id: &str) -> Result<Option<(Client, Option<String>)>> {
        on_backend!(self, db => db.client(client_id).await)
    }

    pub async fn clients(&self) -> Result<Vec<Client>> {
        on_backend!(self, db => db.clients().await)
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
        on_backend!(self, db => db.save_client(client, secret_hash, refresh_tokens).await)
    }

    /// Deletes a client with its refresh tokens and secrets; false when there was none.
    pub async fn remove_client(&self, client_id: &str) -> Result<bool> {
        on_backend!(self, db => db.remove_client(client_id).await)
    }

    /// Stores a refresh token of `client_id` (the first of its family) while the client
    /// exists and, with `secret_hash`, still has the secret that was checked: a secret
    /// changed meanwhile revoked every token, this one included. Whether it was stored.
    pub async fn store_refresh_token(
        &self,
        token_hash: String,
        client_id: &str,
        lifetime: Duration,
        secret_hash: Option<String>,
    ) -> Result<bool> {
        on_backend!(self, db => db.store_refresh_token(token_hash, client_id, lifetime, secret_hash).await)
    }

    /// Renews the refresh token `token_hash` to `successor_hash` (of its family, valid
    /// for `lifetime`) in one transaction, so a revocation, new secret or removal of
    /// the client cannot fall between the check and the new token. A token is renewed at
    /// most once: asked again, it gives the same successor while that is still valid.
    pub async fn renew_refresh_token(
        &self,
        token_hash: String,
        successor_hash: String,
        lifetime: Duration,
    ) -> Result<Renewal> {
        on_backend!(self, db => db.renew_refresh_token(token_hash, successor_hash, lifetime).await)
    }

    /// Looks a refresh token up by its hash and notes that it was used. Unknown tokens
    /// cost only a read (the endpoint is public).
    pub async fn use_refresh_token(&self, token_hash: String) -> Result<Option<RefreshToken>> {
        on_backend!(self, db => db.use_refresh_token(token_hash).await)
    }

    /// Revokes a refresh token with its whole family: what it was renewed from and to.
    pub async fn revoke_refresh_token(&self, token_hash: String) -> Result<Revocation> {
        on_backend!(self, db => db.revoke_refresh_token(token_hash).await)
    }

    /// Every restricted queue with its owners.
    pub async fn restricted_queues(&self) -> Result<Vec<(String, Vec<String>)>> {
        on_backend!(self, db => db.restricted_queues(None).await)
    }

    /// One restricted queue's owners, or `None` when the queue is not restricted.
    pub async fn restricted_queue(&self, queue: &str) -> Result<Option<Vec<String>>> {
        let found = on_backend!(self, db => db.restricted_queues(Some(queue.to_string())).await)?;
        Ok(found.into_iter().next().map(|(_, owners)| owners))
    }

    /// Whether `queue` is restricted.
    pub async fn is_restricted(&self, queue: &str) -> Result<bool> {
        on_backend!(self, db => db.is_restricted(queue).await)
    }

    /// Marks `queue` restricted and adds it to `client_id`'s allowed queues.
    pub async fn restrict_queue(&self, queue: &str, client_id: &str) -> Result<()> {
        on_backend!(self, db => db.restrict_queue(queue, client_id).await)
    }

    /// Lifts the restriction of `queue` (for everyone, as the reference does) and removes
    /// it from `client_id`'s allowed queues.
    pub async fn unrestrict_queue(&self, queue: &str, client_id: &str) -> Result<()> {
        on_backend!(self, db => db.unrestrict_queue(queue, client_id).await)
    }
}
