//! The write fence: a leader's client sends a write only while its Lease is surely still its own.
//!
//! Stopping the controllers when the Lease is lost is not enough on its own. A process that was frozen
//! (SIGSTOP, a stalled VM, a long GC pause of the node) wakes up with requests already queued, retries
//! already sleeping and reconciles ready to run; whichever task the runtime polls first wins, so a write
//! could go out after a standby has taken over. The fence is checked against a monotonic clock that keeps
//! running while the process is frozen: once the renew deadline has passed, nothing is written until a
//! renewal succeeds again. It is checked twice:
//! - by every attempt of every write, below the retry layer ([`FenceLayer`]), which says why;
//! - by every connection at the socket ([`FencedIo`]), for every byte. A check anywhere above the socket
//!   leaves a gap between deciding to send and sending: a request that passed it just before a freeze
//!   (even in the middle of the connection task's poll, which a frozen thread resumes) would still be
//!   written when the process wakes.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request, Uri};
use hyper_util::client::legacy::connect::{Connected, Connection};
use tower::util::BoxService;
use tower::{BoxError, Layer, Service};

/// Until when this process may write. Shared by the Lease holder (which moves it) and the client's layer.
#[derive(Clone, Debug, Default)]
pub struct Fence(Arc<Mutex<Open>>);

#[derive(Clone, Copy, Debug, Default)]
enum Open {
    /// No leader election: always open.
    #[default]
    Always,
    Until(Instant),
}

impl Fence {
    /// A fence that opens only when [`Fence::open_until`] is called.
    #[must_use]
    pub fn closed() -> Self {
        Self(Arc::new(Mutex::new(Open::Until(Instant::now()))))
    }

    /// Opens the fence until `deadline`: a renewal that started at `t` proves the Lease ours until
    /// `t + renew deadline`.
    pub fn open_until(&self, deadline: Instant) {
        if let Ok(mut open) = self.0.lock() {
            *open = Open::Until(deadline);
        }
    }

    pub fn close(&self) {
        self.open_until(Instant::now());
    }

    /// Whether a write may go out now.
    #[must_use]
    pub fn is_open(&self) -> bool {
        self.0.lock().is_ok_and(|open| allows(*open, Instant::now()))
    }
}

fn allows(open: Open, now: Instant) -> bool {
    match open {
        Open::Always => true,
        Open::Until(deadline) => now < deadline,
    }
}

/// Reads never change anything, so this check lets them pass. (At the socket a closed fence stops every
/// request: by then the term is over and the controllers are being dropped.)
fn writes(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// A tower layer for `kube::client::ClientBuilder::with_layer`.
#[derive(Clone, Debug)]
pub struct FenceLayer(pub Fence);

impl<S> Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Fenced {
            inner,
            fence: self.0.clone(),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

/// The connector of the controllers' HTTP client: every connection it makes is a [`FencedIo`].
#[derive(Clone, Debug)]
pub struct FencedConnector<C> {
    pub inner: C,
    pub fence: Fence,
}

impl<C> Service<Uri> for FencedConnector<C>
where
    C: Service<Uri>,
    C::Future: Send + 'static,
{
    type Response = FencedIo<C::Response>;
    type Error = C::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, C::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), C::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (connecting, fence) = (self.inner.call(uri), self.fence.clone());
        Box::pin(async move {
            Ok(FencedIo {
                io: connecting.await?,
                fence,
            })
        })
    }
}

/// A connection to the API server that sends nothing once the fence is closed: the check sits at the
/// socket, below TLS and HTTP, so it holds whichever task writes and however long ago that write was
/// decided. A refused write fails the connection and every request on it.
#[derive(Debug)]
pub struct FencedIo<T> {
    io: T,
    fence: Fence,
}

impl<T> FencedIo<T> {
    fn refused(&self) -> Option<io::Error> {
        (!self.fence.is_open()).then(|| {
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                "not the leader (the Lease may have passed to a standby): nothing more is sent",
            )
        })
    }
}

impl<T: hyper::rt::Read + Unpin> hyper::rt::Read for FencedIo<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: hyper::rt::ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_read(cx, buf)
    }
}

impl<T: hyper::rt::Write + Unpin> hyper::rt::Write for FencedIo<T> {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        if let Some(e) = self.refused() {
            return Poll::Ready(Err(e));
        }
        Pin::new(&mut self.io).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.io).poll_shutdown(cx)
    }
}

impl<T: Connection> Connection for FencedIo<T> {
    fn connected(&self) -> Connected {
        self.io.connected()
    }
}

impl<S, B> Service<Request<B>> for Fenced<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if writes(req.method()) && !self.fence.is_open() {
            let what = format!("{} {}", req.method(), req.uri().path());
            return Box::pin(async move {
                Err(
                    format!("not the leader (the Lease may have passed to a standby): {what} not sent")
                        .into(),
                )
            });
        }
        let call = self.inner.call(req);
        Box::pin(async move { call.await.map_err(Into::into) })
    }
}

/// The controllers' client's HTTP stack below berth's layers.
pub type Stack = BoxService<Request<kube::client::Body>, http::Response<hyper::body::Incoming>, BoxError>;

/// The controllers' client up to its layers: kube's own stack (TLS, timeouts, then
/// [`crate::stack::kube_layers`]) on a connector whose every connection is fenced. kube's builder takes no
/// connector, and berth enables none of its proxy features, so there is nothing else it would have added.
///
/// # Errors
/// When the TLS settings, credentials or headers of `config` cannot be used.
pub fn client_builder(
    config: &kube::Config,
    fence: &Fence,
) -> anyhow::Result<kube::client::ClientBuilder<Stack>> {
    use anyhow::Context as _;
    use kube::client::ConfigExt as _;

    let mut tcp = hyper_util::client::legacy::connect::HttpConnector::new();
    tcp.enforce_http(false);
    let https = config
        .rustls_https_connector_with_connector(FencedConnector {
            inner: tcp,
            fence: fence.clone(),
        })
        .context("TLS settings of the Kubernetes client")?;
    let mut connector = hyper_timeout::TimeoutConnector::new(https);
    connector.set_connect_timeout(config.connect_timeout);
    connector.set_read_timeout(config.read_timeout);
    connector.set_write_timeout(config.write_timeout);
    connector.set_reset_reader_on_write(config.reset_reader_on_write);
    let http =
        hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build(connector);
    Ok(kube::client::ClientBuilder::new(
        crate::stack::kube_layers(config, http)?,
        config.default_namespace.clone(),
    ))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn writes_go_out_only_before_the_deadline() {
        let now = Instant::now();
        let later = now + Duration::from_secs(5);
        assert!(allows(Open::Always, now));
        assert!(allows(Open::Until(later), now));
        assert!(!allows(Open::Until(later), later));
        assert!(!allows(Open::Until(now), later));
    }

    #[test]
    fn only_reads_pass_a_closed_fence() {
        assert!(!writes(&Method::GET));
        assert!(!writes(&Method::HEAD));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert!(writes(&m), "{m}");
        }
    }

    #[tokio::test]
    async fn a_connection_sends_only_while_the_fence_is_open() {
        use hyper_util::rt::TokioIo;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let fence = Fence::closed();
        fence.open_until(Instant::now() + Duration::from_secs(60));
        let (ours, mut server) = tokio::io::duplex(64);
        let mut conn = TokioIo::new(FencedIo {
            io: TokioIo::new(ours),
            fence: fence.clone(),
        });
        conn.write_all(b"sent").await.unwrap();
        let mut got = [0; 4];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(&got, b"sent");
        fence.close();
        let refused = conn.write_all(b"late").await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        // What the server already said can still be read.
        server.write_all(b"ok").await.unwrap();
        let mut answer = [0; 2];
        conn.read_exact(&mut answer).await.unwrap();
        assert_eq!(&answer, b"ok");
        drop(conn);
        let mut rest = Vec::new();
        server.read_to_end(&mut rest).await.unwrap();
        assert!(
            rest.is_empty(),
            "nothing reached the server after the fence closed: {rest:?}"
        );
    }

    #[test]
    fn a_closed_fence_opens_with_a_renewal() {
        let f = Fence::closed();
        assert!(!f.is_open());
        f.open_until(Instant::now() + Duration::from_secs(60));
        assert!(f.is_open());
        f.close();
        assert!(!f.is_open());
        assert!(Fence::default().is_open());
    }
}
