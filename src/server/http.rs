//! The HTTP/1.1 connection loop. Written out (rather than `axum::serve`) to bound each
//! connection's buffers: a lab keeps a connection open per agent, mostly idle in a
//! long-poll, so per-connection memory is what the server's footprint is made of.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};

use axum::serve::Listener;
use axum::Router;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;

/// The largest read buffer of a connection (hyper's floor is 8 KiB). Headers must fit;
/// bodies stream through it.
const MAX_BUFFER: usize = 64 * 1024;

/// The address a request's connection comes from, in each request's extensions (login
/// lock-outs are counted per address).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub IpAddr);

/// Serves `router` on every connection `listener` accepts until `shutdown` completes,
/// then lets the requests in flight finish.
pub async fn serve<L: Listener<Addr = SocketAddr>>(
    mut listener: L,
    router: Router,
    shutdown: impl Future<Output = ()>,
) {
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            (io, peer) = listener.accept() => {
                let router = TowerToHyperService::new(router.clone());
                let peer = PeerAddress(peer.ip());
                let service = hyper::service::service_fn(move |mut request| {
                    request.extensions_mut().insert(peer);
                    hyper::service::Service::call(&router, request)
                });
                let connection = http1::Builder::new()
                    .max_buf_size(MAX_BUFFER)
                    .serve_connection(TokioIo::new(io), service);
                let connection = graceful.watch(connection);
                tokio::spawn(async move {
                    if let Err(error) = connection.await {
                        tracing::debug!("connection ended: {error}");
                    }
                });
            }
            () = &mut shutdown => break,
        }
    }
    graceful.shutdown().await;
}
