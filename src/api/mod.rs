//! The typed client for the Testflinger v1 HTTP API: one module for the agent, the CLI and
//! the multi-device connector. `v1` describes every call of the protocol (a `call`: path,
//! `body`, how its answer is read); `client`'s `Api` sends it with the bearer token (`auth`,
//! the agent's `token_file`) and the `agent_name` cookie, and gives back a `reply` or an
//! `error`. This file only names what the rest of tf uses; nothing in here uses it.

mod auth;
mod body;
mod call;
mod client;
mod error;
mod reply;
mod token_file;
pub mod v1;

pub use auth::{Bearer, TokenResult};
pub use body::{RequestBody, Upload};
pub use call::{Answer, Call, Json};
pub use client::Api;
pub use error::ApiError;
pub use reply::Reply;
pub use token_file::{read_refresh_token, write_refresh_token};
pub use v1::{EXTENSIONS, EXTENSIONS_HEADER};
