//! Which PostgreSQL database, and how to reach it: the URL (libpq's forms), its password
//! from the environment, TLS through rustls, and connections with the schema brought up
//! to date.

use std::sync::Arc;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, Config, NoTls};
use tokio_postgres_rustls::MakeRustlsConnect;

use super::schema;
use crate::store::error::StoreError;

/// How long a connection attempt may take when the URL does not say (`connect_timeout=`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The database named by a URL (`postgres://user[:password]@host[:port]/db`, with
/// `?sslmode=` and `?connect_timeout=` as libpq takes them, or libpq's `key=value` form).
/// Without a password in it, `PGPASSWORD` gives one, so that none need be on a command line.
#[derive(Clone)]
pub struct Database {
    config: Config,
}

/// Shows the database without its password.
impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl Database {
    pub fn parse(url: &str) -> Result<Database, StoreError> {
        let mut config: Config = url.parse().map_err(|error| {
            let cause = std::error::Error::source(&error)
                .map(|cause| format!(": {cause}"))
                .unwrap_or_default();
            StoreError::Database(format!("not a PostgreSQL URL: {error}{cause}"))
        })?;
        if config.get_password().is_none() {
            if let Ok(password) = std::env::var("PGPASSWORD") {
                config.password(password);
            }
        }
        // A host that drops packets would otherwise hold the caller for minutes.
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        Ok(Database { config })
    }

    /// The database as people may see it: without its password.
    pub fn describe(&self) -> String {
        let user = self.config.get_user().unwrap_or("");
        let hosts: Vec<String> = self
            .config
            .get_hosts()
            .iter()
            .zip(
                self.config
                    .get_ports()
                    .iter()
                    .chain(std::iter::repeat(&5432)),
            )
            .map(|(host, port)| match host {
                Host::Tcp(name) => format!("{name}:{port}"),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect();
        let name = self.config.get_dbname().unwrap_or(user);
        format!("postgres://{user}@{}/{name}", hosts.join(","))
    }

    /// A connection, its schema brought up to date.
    pub async fn connect(&self) -> Result<Client, StoreError> {
        let (config, tls) = self.transport()?;
        let mut client = match tls {
            None => {
                let (client, connection) = config.connect(NoTls).await?;
                tokio::spawn(connection);
                client
            }
            Some(tls) => {
                let (client, connection) = config.connect(tls).await?;
                tokio::spawn(connection);
                client
            }
        };
        schema::migrate(&mut client).await?;
        Ok(client)
    }

    /// How connections are made: the configuration, and the TLS connector unless the
    /// URL says `sslmode=disable`.
    ///
    /// TLS is required (libpq's default `prefer` is taken as `require`, as a server that
    /// answers "no TLS" may be an impostor) except on loopback and Unix sockets, and the
    /// server's certificate is always checked against the system's roots, unlike libpq's
    /// `prefer` and `require`.
    pub(super) fn transport(&self) -> Result<(Config, Option<MakeRustlsConnect>), StoreError> {
        let mut config = self.config.clone();
        if config.get_ssl_mode() == SslMode::Prefer && !self.is_local() {
            config.ssl_mode(SslMode::Require);
        }
        let tls = match config.get_ssl_mode() {
            SslMode::Disable => None,
            _ => Some(rustls_connector()?),
        };
        Ok((config, tls))
    }

    /// Whether every host is this machine (loopback or a Unix socket).
    fn is_local(&self) -> bool {
        self.config.get_hosts().iter().all(|host| match host {
            Host::Unix(_) => true,
            Host::Tcp(name) => {
                name == "localhost"
                    || name
                        .parse::<std::net::IpAddr>()
                        .is_ok_and(|address| address.is_loopback())
            }
        })
    }
}

/// TLS as the rest of tf does it: rustls, the system's root certificates.
fn rustls_connector() -> Result<MakeRustlsConnect, StoreError> {
    let mut roots = rustls::RootCertStore::empty();
    for certificate in rustls_native_certs::load_native_certs().certs {
        let _ = roots.add(certificate);
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|error| StoreError::Database(format!("TLS: {error}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    Ok(MakeRustlsConnect::new(config))
}
