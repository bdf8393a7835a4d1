//! HTTPS for labs without a reverse proxy: the rustls configuration. Each connection's
//! handshake runs in its own task (`http`), so a slow or silent client never holds up
//! the others.

use std::path::Path;
use std::sync::Arc;

use anyhow::Context;
use tokio_rustls::TlsAcceptor;

/// A certificate chain and private key, as PEM files.
pub fn acceptor(cert: &Path, key: &Path) -> anyhow::Result<TlsAcceptor> {
    let read = |path: &Path| {
        std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))
    };
    let chain = rustls_pemfile::certs(&mut read(cert)?.as_slice())
        .collect::<Result<Vec<_>, _>>()
        .with_context(|| format!("no PEM certificates in {}", cert.display()))?;
    if chain.is_empty() {
        anyhow::bail!("no PEM certificates in {}", cert.display());
    }
    let private_key = rustls_pemfile::private_key(&mut read(key)?.as_slice())
        .ok()
        .flatten()
        .with_context(|| format!("no PEM private key in {}", key.display()))?;
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .context("TLS setup")?
    .with_no_client_auth()
    .with_single_cert(chain, private_key)
    .context("the certificate does not match the private key")?;
    Ok(TlsAcceptor::from(Arc::new(config)))
}
