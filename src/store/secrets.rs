//! Secrets of API clients, encrypted at rest: each value is sealed under the server's
//! master key (see `secrets_key`).

use crate::job::time::Micros;

/// When a secret stops being readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    Never,
    At(Micros),
    /// Deleted by its first read.
    AfterFirstRead,
}

impl Expiry {
    /// As stored: whether the first read deletes it, and when it expires.
    pub(super) fn columns(self) -> (bool, Option<Micros>) {
        match self {
            Expiry::Never => (false, None),
            Expiry::At(at) => (false, Some(at)),
            Expiry::AfterFirstRead => (true, None),
        }
    }
}
