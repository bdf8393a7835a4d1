//! PostgreSQL storage (issue 17, being built): connecting, with TLS through rustls, and
//! the schema. `tf migrate` copies a SQLite lab into it (`copy`); the `Store` backend that
//! serves from it comes next.

pub mod copy;
mod schema;

use std::sync::Arc;

use tokio_postgres::config::SslMode;
use tokio_postgres::{Client, Config, NoTls};

use super::StoreError;

/// How long a connection attempt may take when the URL does not say (`connect_timeout=`).
const CONNECT_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A connection to the database at `url` (`postgres://user[:password]@host[:port]/db`,
/// with `?sslmode=` as libpq takes it), its schema brought up to date.
///
/// Unless the URL says `sslmode=disable`, the connection is TLS whenever the server offers
/// it, and the server's certificate is always checked against the system's roots: unlike
/// libpq's `prefer` and `require`, an unverifiable server is refused.
pub async fn connect(url: &str) -> Result<Client, StoreError> {
    let mut config: Config = url
        .parse()
        .map_err(|error| StoreError::Database(format!("not a PostgreSQL URL: {error}")))?;
    // A host that drops packets would otherwise hold the caller for minutes.
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    let mut client = match config.get_ssl_mode() {
        SslMode::Disable => {
            let (client, connection) = config.connect(NoTls).await?;
            tokio::spawn(connection);
            client
        }
        _ => {
            let (client, connection) = config.connect(rustls_connector()?).await?;
            tokio::spawn(connection);
            client
        }
    };
    schema::migrate(&mut client).await?;
    Ok(client)
}

/// TLS as the rest of tf does it: rustls, the system's root certificates.
fn rustls_connector() -> Result<tokio_postgres_rustls::MakeRustlsConnect, StoreError> {
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
    Ok(tokio_postgres_rustls::MakeRustlsConnect::new(config))
}
