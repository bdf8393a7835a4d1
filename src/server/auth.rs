//! Who is calling: the roles of spec §2.8, the `Identity` a request is made with
//! (anonymous callers act as contributors, as in the reference's default mode), and the
//! access tokens already verified. `gate` works them out for each request.

use std::sync::{Arc, LazyLock};

use serde_json::{Map, Value};

use crate::job::time;

/// The roles, least to most privileged (the order decides who may manage whom).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    Agent,
    Contributor,
    Manager,
    Admin,
}

impl Role {
    pub const ALL: [Role; 4] = [Role::Admin, Role::Manager, Role::Contributor, Role::Agent];

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str().eq_ignore_ascii_case(text))
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Agent => "agent",
            Role::Contributor => "contributor",
            Role::Manager => "manager",
            Role::Admin => "admin",
        }
    }
}

/// The caller of a request.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `None` for anonymous callers.
    pub client_id: Option<String>,
    pub role: Role,
    /// The permissions carried by the access token (`{}` when anonymous).
    pub permissions: Map<String, Value>,
}

impl Identity {
    /// The one identity of every anonymous request, shared.
    pub fn anonymous() -> Arc<Identity> {
        static ANONYMOUS: LazyLock<Arc<Identity>> = LazyLock::new(|| {
            Arc::new(Identity {
                client_id: None,
                role: Role::Contributor,
                permissions: Map::new(),
            })
        });
        ANONYMOUS.clone()
    }
}

/// Access tokens already verified, with their identities, until they expire. Bounded:
/// when full it starts over (tokens are re-verified, nothing else is lost). A request
/// with a known token shares its identity, copying nothing.
#[derive(Default)]
pub struct VerifiedTokens {
    tokens: std::sync::Mutex<std::collections::HashMap<String, (Arc<Identity>, i64)>>,
}

const MAX_VERIFIED_TOKENS: usize = 10_000;

impl VerifiedTokens {
    pub fn get(&self, token: &str) -> Option<Arc<Identity>> {
        let tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        let (identity, valid_until) = tokens.get(token)?;
        // An expired one falls through to the full check, which gives the right error.
        (time::now() / 1_000_000 < *valid_until).then(|| identity.clone())
    }

    pub fn insert(&self, token: &str, identity: &Arc<Identity>, valid_until: i64) {
        let mut tokens = self.tokens.lock().unwrap_or_else(|p| p.into_inner());
        if tokens.len() >= MAX_VERIFIED_TOKENS {
            tokens.clear();
        }
        tokens.insert(token.to_string(), (identity.clone(), valid_until));
    }
}
