//! The HTTP/1.1 connection loop. Written out (rather than `axum::serve`) to bound what a
//! connection may cost: its buffers (a lab keeps a connection open per agent, mostly
//! idle in a long-poll, so per-connection memory is what the server's footprint is made
//! of), the time it may take to send a request, and how many may be open at once
//! (`connections`), so idle sockets can never use up the server's file descriptors.

use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::pin::{pin, Pin};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::body::Body;
use axum::Router;
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::Service;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsAcceptor;

use super::connections::{Connection, Connections, Place, RequestInFlight, Throttle};

/// The largest read buffer of a connection (hyper's floor is 8 KiB). Headers must fit;
/// bodies stream through it.
const MAX_BUFFER: usize = 64 * 1024;

/// The pause after accept fails for lack of resources (file descriptors, mostly), so the
/// loop waits for a closing connection instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(100);

/// The address a request's connection comes from, in each request's extensions (login
/// lock-outs are counted per address).
#[derive(Debug, Clone, Copy)]
pub struct PeerAddress(pub IpAddr);

pub struct Limits {
    pub max_connections: usize,
    /// How long a connection may take to send a request's headers, counted from when it
    /// opened or its previous answer was sent: it is also how long one may sit idle.
    pub header_timeout: Duration,
}

/// Serves `router` on every connection `listener` accepts (over TLS with `tls`) until
/// `shutdown` completes, then lets the requests in flight finish.
pub async fn serve(
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()>,
) {
    let connections = Connections::new(limits.max_connections);
    let timeouts = tokio::spawn(close_idle_connections(
        connections.clone(),
        limits.header_timeout,
    ));
    let mut builder = http1::Builder::new();
    // The header timeout is the idle sweep's, not a timer per request.
    builder.max_buf_size(MAX_BUFFER).header_read_timeout(None);
    let server = Arc::new(ConnectionServer {
        builder,
        router: TowerToHyperService::new(router),
        tls,
        header_timeout: limits.header_timeout,
    });
    let accept_failures = Throttle::new();
    let mut shutdown = pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        match accepted {
            Ok((tcp, peer)) => {
                // Without a place the stream is dropped: the connection is closed.
                if let Some(place) = connections.admit() {
                    tokio::spawn(server.clone().handle(tcp, peer, place));
                }
            }
            Err(error) if is_connection_error(&error) => {}
            Err(error) => {
                if accept_failures.allow() {
                    tracing::warn!("cannot accept connections ({error}): closing idle ones");
                }
                connections.close_longest_idle();
                tokio::time::sleep(ACCEPT_BACKOFF).await;
            }
        }
    }
    drop(listener);
    timeouts.abort();
    connections.close_all();
    connections.all_closed().await;
}

/// Closes the connections idle for longer than `timeout`, checking a few times per
/// timeout (rather than a timer per request, which would cost every request).
async fn close_idle_connections(connections: Arc<Connections>, timeout: Duration) {
    let period = (timeout / 10).clamp(Duration::from_millis(10), Duration::from_secs(1));
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        ticks.tick().await;
        connections.close_idle_longer_than(timeout);
    }
}

/// A connection that was reset before it was accepted: nothing to do.
fn is_connection_error(error: &std::io::Error) -> bool {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    matches!(
        error.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    )
}

/// What every connection's task shares.
struct ConnectionServer {
    builder: http1::Builder,
    router: TowerToHyperService<Router>,
    tls: Option<TlsAcceptor>,
    header_timeout: Duration,
}

impl ConnectionServer {
    async fn handle(self: Arc<Self>, tcp: TcpStream, peer: SocketAddr, place: Place) {
        // Small answers go out at once instead of waiting for Nagle's timer.
        let _ = tcp.set_nodelay(true);
        let peer = PeerAddress(peer.ip());
        let Some(acceptor) = &self.tls else {
            return self.serve_http(tcp, peer, place).await;
        };
        // The handshake comes before the request's headers, under the same timeout.
        let handshake = tokio::time::timeout(self.header_timeout, acceptor.accept(tcp));
        tokio::select! {
            outcome = handshake => match outcome {
                Ok(Ok(stream)) => self.serve_http(stream, peer, place).await,
                Ok(Err(error)) => tracing::debug!("TLS handshake failed: {error}"),
                Err(_) => tracing::debug!("TLS handshake timed out"),
            },
            () = place.connection.close_requested() => {}
        }
    }

    async fn serve_http<I>(&self, io: I, peer: PeerAddress, place: Place)
    where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let service = TrackedService {
            router: self.router.clone(),
            connection: place.connection.clone(),
            peer,
        };
        let mut connection = pin!(self.builder.serve_connection(TokioIo::new(io), service));
        tokio::select! {
            outcome = connection.as_mut() => return log_end(outcome),
            () = place.connection.close_requested() => {}
        }
        // Dropped at once if no request ever started (at most half a request is lost,
        // which was never answered); otherwise closed after the answer in flight.
        if !place.connection.never_served() {
            connection.as_mut().graceful_shutdown();
            log_end(connection.await);
        }
    }
}

fn log_end(outcome: hyper::Result<()>) {
    if let Err(error) = outcome {
        tracing::debug!("connection ended: {error}");
    }
}

/// The router, marking the connection busy from each request's start to the end of its
/// answer, and telling each request where it comes from.
struct TrackedService {
    router: TowerToHyperService<Router>,
    connection: Arc<Connection>,
    peer: PeerAddress,
}

impl Service<Request<Incoming>> for TrackedService {
    type Response = Response<TrackedBody>;
    type Error = Infallible;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Infallible>> + Send>>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        request.extensions_mut().insert(self.peer);
        let in_flight = self.connection.request_started();
        let answer = self.router.call(request);
        Box::pin(async move {
            let response = answer.await?;
            Ok(response.map(|body| TrackedBody {
                body,
                _in_flight: in_flight,
            }))
        })
    }
}

/// An answer's body, which keeps its connection busy until it is sent (or dropped).
struct TrackedBody {
    body: Body,
    _in_flight: RequestInFlight,
}

impl hyper::body::Body for TrackedBody {
    type Data = bytes::Bytes;
    type Error = axum::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        Pin::new(&mut self.get_mut().body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}
