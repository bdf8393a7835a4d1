//! Bearer tokens. How one is obtained differs by role (the agent trades the refresh token
//! in its token file; the CLI runs the reference's login chain), so `Bearer` holds the
//! way to get one, fetches it before the first request, and again when the server
//! refuses it.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::Mutex;

/// An access token, `None` to go on without one, or an error that ends the command.
pub type TokenResult = Result<Option<String>, String>;
pub type Obtain = Box<dyn Fn() -> Pin<Box<dyn Future<Output = TokenResult> + Send>> + Send + Sync>;

pub struct Bearer {
    /// `None`: not asked yet. `Some(None)`: asked and got nothing, so requests go out
    /// without a token until the server refuses one.
    cached: Mutex<Option<Option<String>>>,
    obtain: Obtain,
}

impl Bearer {
    pub fn new(obtain: Obtain) -> Bearer {
        Bearer {
            cached: Mutex::new(None),
            obtain,
        }
    }

    /// The current access token, fetched on first use.
    pub async fn current(&self) -> TokenResult {
        let mut cached = self.cached.lock().await;
        if cached.is_none() {
            *cached = Some((self.obtain)().await?);
        }
        Ok(cached.clone().flatten())
    }

    /// Forgets the access token (the server refused it) and fetches a new one.
    pub async fn renew(&self) -> TokenResult {
        let mut cached = self.cached.lock().await;
        let fresh = (self.obtain)().await?;
        *cached = Some(fresh.clone());
        Ok(fresh)
    }
}
