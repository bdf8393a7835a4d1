//! Why a request to the server did not produce an answer a caller could use.

use std::path::PathBuf;

use hyper::{Method, StatusCode};

/// Why a request did not produce an answer we could use.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// No answer: connection refused, reset, timed out, or a TLS failure.
    #[error("cannot reach {url}: {reason}")]
    Unreachable { url: String, reason: String },
    /// An answer, but not a success.
    #[error("{method} {path}: the server answered {status}{}", message_suffix(.message))]
    Status {
        method: Method,
        path: String,
        status: StatusCode,
        message: String,
    },
    /// A success whose body is not what the call expects.
    #[error("{path}: the server's answer cannot be read: {reason}")]
    Answer { path: String, reason: String },
    /// No token could be had, in a way that ends the command (the CLI's login chain).
    #[error("{0}")]
    Auth(String),
    /// A local file to upload or download into could not be used.
    #[error("{path}: {source}")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn message_suffix(message: &str) -> String {
    if message.is_empty() {
        String::new()
    } else {
        format!(": {message}")
    }
}

impl ApiError {
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            ApiError::Status { status, .. } => Some(*status),
            _ => None,
        }
    }
}
