//! The write fence: a leader's client sends a write only while its Lease is surely still its own.
//!
//! Stopping the controllers when the Lease is lost is not enough on its own. A process that was frozen
//! (SIGSTOP, a stalled VM, a long GC pause of the node) wakes up with requests already queued, retries
//! already sleeping and reconciles ready to run; whichever task the runtime polls first wins, so a write
//! could go out after a standby has taken over. The fence is checked against a monotonic clock that keeps
//! running while the process is frozen: once the renew deadline has passed, nothing is written until a
//! renewal succeeds again. It is checked twice:
//! - by every attempt of every write, below the retry layer ([`FenceLayer`]), which says why;
//! - by every connection's task each time it runs ([`FencedExecutor`]): the task is what writes a request
//!   to the socket, and a request that passed the first check just before a freeze is still waiting
//!   there when the process wakes. A closed fence drops the connection instead of letting it write.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Method, Request};
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

/// Reads never change anything, so a frozen leader may still read (and a standby keeps its caches warm).
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

/// The executor of the controllers' HTTP client (`kube::client::ClientBuilder::try_from((config, exec))`):
/// hyper runs each connection as a task of its executor, and this one stops a connection's task, unpolled,
/// once the fence is closed.
#[derive(Clone, Debug)]
pub struct FencedExecutor(pub Fence);

impl<F> hyper::rt::Executor<F> for FencedExecutor
where
    F: Future<Output = ()> + Send + 'static,
{
    fn execute(&self, task: F) {
        tokio::spawn(Guarded {
            fence: self.0.clone(),
            task: Box::pin(task),
        });
    }
}

struct Guarded<F> {
    fence: Fence,
    task: Pin<Box<F>>,
}

impl<F: Future<Output = ()>> Future for Guarded<F> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if !self.fence.is_open() {
            // Dropped unpolled: whatever it had to write stays unwritten, and its requests fail.
            return Poll::Ready(());
        }
        self.task.as_mut().poll(cx)
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
    async fn a_connection_task_runs_only_while_the_fence_is_open() {
        use hyper::rt::Executor;
        let fence = Fence::closed();
        fence.open_until(Instant::now() + Duration::from_secs(60));
        let exec = FencedExecutor(fence.clone());
        let (wrote, mut written) = tokio::sync::mpsc::unbounded_channel();
        let (go, mut next) = tokio::sync::mpsc::unbounded_channel::<()>();
        exec.execute(async move {
            while next.recv().await.is_some() {
                let _ = wrote.send(());
            }
        });
        go.send(()).unwrap();
        assert!(written.recv().await.is_some(), "open: the task runs");
        fence.close();
        go.send(()).unwrap();
        // Closed: the task is dropped at its next poll, so its side of the channel closes unwritten.
        assert!(written.recv().await.is_none(), "closed: the task is gone");
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
