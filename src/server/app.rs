//! `App`, what every handler shares: the store, the settings, the keys, and the state
//! kept in memory (login lock-outs, verified tokens, metrics).

use axum::body::Bytes;
use http_body_util::Full;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::auth::VerifiedTokens;
use super::config::Config;
use super::counters::ServerMetrics;
use super::logins::Bcrypt;
use crate::store::Store;

/// What every handler shares.
pub struct App {
    pub store: Store,
    pub config: Config,
    /// Signs and checks access tokens.
    pub jwt_key: Vec<u8>,
    pub bcrypt: Bcrypt,
    pub verified_tokens: VerifiedTokens,
    pub http: HttpClient,
    pub metrics: ServerMetrics,
}

/// The client of outgoing requests (webhooks).
pub type HttpClient = Client<HttpConnector, Full<Bytes>>;

pub fn http_client() -> HttpClient {
    Client::builder(TokioExecutor::new()).build_http()
}
