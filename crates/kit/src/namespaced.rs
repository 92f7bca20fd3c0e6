//! Triggers from a kind berth may not watch cluster-wide (Secrets: its tenant role grants them only in
//! tenant namespaces, see `TenantAccess`). One label-selected, metadata-only watch per namespace a
//! controller works in: started by the first reconcile there, stopped once nothing of the controller's is
//! left there. Only names, labels and owners cross the wire and nothing is cached, so a tenant's own
//! Secrets, however many or large, never reach berth's memory.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use http_body_util::BodyExt;
use kube::api::{Api, ListParams, PartialObjectMeta, WatchEvent, WatchParams};
use kube::client::Body;
use kube::core::{NamespaceResourceScope, Request};
use kube::runtime::utils::Backoff;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::connections::{Connections, Seat};
use crate::labels::managed_selector;
use crate::watch::retry;

/// How long the first reconcile in a namespace waits for the watch's first list before it reads anyway.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// How long the API server keeps one watch request open. Before the next, the watch asks whether its
/// namespace still holds anything of the controller's.
const WATCH_SECONDS: u32 = 290;

/// Whether the controller still works in a namespace (has an object there).
pub type Keep = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The per-namespace watches of one kind, feeding one trigger stream.
pub struct PerNamespace<K> {
    connections: Arc<Connections>,
    keep: Keep,
    sender: mpsc::UnboundedSender<PartialObjectMeta<K>>,
    running: Arc<Mutex<HashMap<String, AbortHandle>>>,
}

impl<K> PerNamespace<K>
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K: Send + Sync + 'static,
{
    /// The watches (none yet) and the stream of what they see, for `Controller::watches_stream`.
    pub fn new(
        connections: Arc<Connections>,
        keep: Keep,
    ) -> (
        Self,
        impl Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static,
    ) {
        let (sender, receiver) = mpsc::unbounded_channel();
        let stream = futures::stream::unfold(
            receiver,
            |mut r| async move { r.recv().await.map(|o| (Ok(o), r)) },
        );
        let running = Arc::default();
        (
            Self {
                connections,
                keep,
                sender,
                running,
            },
            stream,
        )
    }

    /// Starts watching `namespace` unless that watch runs, and resolves once its first list is done (at once
    /// when the watch ran already; after [`FIRST_LIST_WAIT`] at the latest, when it cannot list). The caller
    /// reads what it needs after that list, so the objects the list reports are not news to it, and are not
    /// passed on: they would wake it a second time for nothing (after a restart, every tenant's Database
    /// twice). A caller that stopped waiting gets them passed on as usual.
    pub fn watch(&self, namespace: &str) -> impl Future<Output = ()> + Send + 'static {
        let listed = self.start(namespace);
        async move {
            if let Some(listed) = listed {
                let _ = tokio::time::timeout(FIRST_LIST_WAIT, listed).await;
            }
        }
    }

    fn start(&self, namespace: &str) -> Option<oneshot::Receiver<()>> {
        let mut running = self.running.lock().ok()?;
        running.retain(|_, t| !t.is_finished());
        if running.contains_key(namespace) {
            return None;
        }
        let (listed, waiting) = oneshot::channel();
        let (client, seat) = self.connections.take();
        let task = tokio::spawn(one::<K>(
            client,
            seat,
            namespace.to_owned(),
            self.keep.clone(),
            self.sender.clone(),
            listed,
        ));
        running.insert(namespace.to_owned(), task.abort_handle());
        Some(waiting)
    }

    /// How many namespaces are watched (for tests and metrics).
    #[must_use]
    pub fn len(&self) -> usize {
        self.running
            .lock()
            .map_or(0, |r| r.values().filter(|t| !t.is_finished()).count())
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K> Drop for PerNamespace<K> {
    fn drop(&mut self) {
        if let Ok(running) = self.running.lock() {
            running.values().for_each(AbortHandle::abort);
        }
    }
}

/// One namespace's watch, until the controller no longer works there or nobody listens: a list, then a watch
/// from its version, again after each time the API server ends it. Written against the client rather than
/// kube-runtime's watcher, because a thousand namespaces hold a thousand of these: the watcher's stream
/// holds an 8 KiB line buffer and a large state machine for the life of each watch, this one a line only
/// while it is incomplete (heaptrack at N=300: 12.6 KiB per namespace before).
async fn one<K>(
    client: Client,
    _seat: Seat,
    namespace: String,
    keep: Keep,
    sender: mpsc::UnboundedSender<PartialObjectMeta<K>>,
    listed: oneshot::Sender<()>,
) where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope> + Clone + DeserializeOwned + Debug,
    K: Send + Sync + 'static,
{
    let api = Api::<K>::namespaced(client.clone(), &namespace);
    let selector = managed_selector();
    let request = Request::new(K::url_path(&(), Some(&namespace)));
    let mut backoff = retry();
    let mut first = Some(listed);
    'list: while keep(&namespace) {
        let list = match api.list_metadata(&ListParams::default().labels(&selector)).await {
            Ok(list) => list,
            Err(e) => {
                tracing::debug!(%namespace, kind = %K::kind(&()), error = %e, "namespace list failed; retrying");
                tokio::time::sleep(backoff.next().unwrap_or_default()).await;
                continue;
            }
        };
        let mut version = list.metadata.resource_version.unwrap_or_default();
        // The first list is passed on only if nobody waited for it (see `PerNamespace::watch`).
        let waited = first.take().is_some_and(|l| l.send(()).is_ok());
        if !waited && list.items.into_iter().any(|o| sender.send(o).is_err()) {
            return;
        }
        loop {
            let watch = WatchParams::default().labels(&selector).timeout(WATCH_SECONDS);
            let end = match request.watch_metadata(&watch, &version) {
                Ok(req) => follow(&client, req, &mut version, &sender).await,
                Err(e) => End::Failed(e.to_string()),
            };
            match end {
                End::Closed if keep(&namespace) => backoff.reset(),
                End::Closed | End::Unheard => break 'list,
                End::Gone => continue 'list,
                End::Failed(e) => {
                    tracing::debug!(%namespace, kind = %K::kind(&()), error = %e, "namespace watch failed; retrying");
                    tokio::time::sleep(backoff.next().unwrap_or_default()).await;
                    continue 'list;
                }
            }
        }
    }
    tracing::debug!(%namespace, kind = %K::kind(&()), "stopped watching the namespace");
}

/// How one watch request ended.
enum End {
    /// The API server closed it (its timeout): watch again from the last version.
    Closed,
    /// The version is too old to watch from: list again.
    Gone,
    /// Nobody listens any more.
    Unheard,
    Failed(String),
}

/// Passes on each object one watch request reports, and keeps `version` at the latest one seen.
async fn follow<K>(
    client: &Client,
    mut request: http::Request<Vec<u8>>,
    version: &mut String,
    sender: &mpsc::UnboundedSender<PartialObjectMeta<K>>,
) -> End
where
    K: Clone + DeserializeOwned,
{
    // As kube's own watches: an event stream is not worth compressing, and its gzip members cannot be
    // decoded one by one.
    request.headers_mut().insert(
        http::header::ACCEPT_ENCODING,
        http::HeaderValue::from_static("identity"),
    );
    let response = match client.send(request.map(Body::from)).await {
        Ok(r) => r,
        Err(e) => return End::Failed(e.to_string()),
    };
    match response.status() {
        s if s.is_success() => {}
        http::StatusCode::GONE => return End::Gone,
        s => return End::Failed(format!("the API server answered {s}")),
    }
    let mut body = response.into_body();
    let mut partial = Vec::new();
    loop {
        let data = match body.frame().await {
            None => return End::Closed,
            Some(Err(e)) => return End::Failed(e.to_string()),
            Some(Ok(frame)) => match frame.into_data() {
                Ok(data) => data,
                Err(_) => continue,
            },
        };
        if let Some(end) = lines(&mut partial, &data, |line| event(line, version, sender)) {
            return end;
        }
    }
}

/// Calls `each` with every line `data` completes, until one returns `Some`. A line can span frames: what is
/// left of one waits in `partial`, which is given back once the line is done, so a watch holds no buffer
/// between events.
fn lines<T>(partial: &mut Vec<u8>, data: &[u8], mut each: impl FnMut(&[u8]) -> Option<T>) -> Option<T> {
    let mut rest = data;
    while let Some(at) = rest.iter().position(|&b| b == b'\n') {
        let done = if partial.is_empty() {
            each(&rest[..at])
        } else {
            partial.extend_from_slice(&rest[..at]);
            each(partial)
        };
        *partial = Vec::new();
        rest = &rest[at + 1..];
        if done.is_some() {
            return done;
        }
    }
    partial.extend_from_slice(rest);
    None
}

/// Handles one line of a watch; `Some` where it ends the watch.
fn event<K>(
    line: &[u8],
    version: &mut String,
    sender: &mpsc::UnboundedSender<PartialObjectMeta<K>>,
) -> Option<End>
where
    K: Clone + DeserializeOwned,
{
    if line.iter().all(u8::is_ascii_whitespace) {
        return None;
    }
    match serde_json::from_slice::<WatchEvent<PartialObjectMeta<K>>>(line) {
        Ok(WatchEvent::Added(o) | WatchEvent::Modified(o) | WatchEvent::Deleted(o)) => {
            if let Some(v) = &o.metadata.resource_version {
                v.clone_into(version);
            }
            sender.send(o).is_err().then_some(End::Unheard)
        }
        Ok(WatchEvent::Bookmark(b)) => {
            b.metadata.resource_version.clone_into(version);
            None
        }
        Ok(WatchEvent::Error(status)) if status.code == 410 => Some(End::Gone),
        Ok(WatchEvent::Error(status)) => Some(End::Failed(status.message)),
        Err(e) => Some(End::Failed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::Secret;

    use super::*;

    #[test]
    fn lines_are_put_together_across_frames_and_the_buffer_is_given_back() {
        let mut partial = Vec::new();
        let mut seen = Vec::new();
        let mut feed = |data: &[u8], partial: &mut Vec<u8>| {
            lines(partial, data, |l: &[u8]| {
                seen.push(String::from_utf8_lossy(l).into_owned());
                None::<()>
            })
        };
        feed(b"{\"a\":1}\n{\"b\"", &mut partial);
        assert_eq!(partial, b"{\"b\"", "the unfinished line waits");
        feed(b":2}\n\n{\"c\":3}\n", &mut partial);
        assert!(partial.is_empty());
        assert_eq!(partial.capacity(), 0, "no buffer held between events");
        assert_eq!(seen, ["{\"a\":1}", "{\"b\":2}", "", "{\"c\":3}"]);
    }

    #[test]
    fn a_line_that_ends_the_watch_stops_the_rest() {
        let mut partial = Vec::new();
        let mut calls = 0;
        let end = lines(&mut partial, b"x\ny\nz", |l: &[u8]| {
            calls += 1;
            (l == b"x").then_some("stop")
        });
        assert_eq!((end, calls), (Some("stop"), 1));
    }

    fn line(json: &serde_json::Value) -> Vec<u8> {
        serde_json::to_vec(json).unwrap()
    }

    #[test]
    fn events_pass_objects_on_and_follow_the_version() {
        let (tx, mut rx) = mpsc::unbounded_channel::<PartialObjectMeta<Secret>>();
        let mut version = "1".to_owned();
        let added = line(&serde_json::json!({"type": "ADDED", "object": {
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"name": "credentials", "namespace": "t", "resourceVersion": "7"}}}));
        assert!(event(&added, &mut version, &tx).is_none());
        assert_eq!(version, "7");
        assert_eq!(
            rx.try_recv().unwrap().metadata.name.as_deref(),
            Some("credentials")
        );
        let bookmark = line(&serde_json::json!({"type": "BOOKMARK", "object": {
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
            "metadata": {"resourceVersion": "9"}}}));
        assert!(event(&bookmark, &mut version, &tx).is_none());
        assert_eq!(version, "9");
        assert!(rx.try_recv().is_err(), "a bookmark is no change");
        assert!(event(b"  ", &mut version, &tx).is_none());
    }

    #[test]
    fn an_expired_version_lists_again_and_other_errors_fail_the_watch() {
        let (tx, rx) = mpsc::unbounded_channel::<PartialObjectMeta<Secret>>();
        let mut version = "1".to_owned();
        let error = |code: u16| {
            line(&serde_json::json!({"type": "ERROR", "object": {
                "apiVersion": "v1", "kind": "Status", "status": "Failure",
                "message": "too old resource version", "reason": "Expired", "code": code}}))
        };
        assert!(matches!(event(&error(410), &mut version, &tx), Some(End::Gone)));
        assert!(matches!(
            event(&error(500), &mut version, &tx),
            Some(End::Failed(_))
        ));
        assert!(matches!(
            event(b"{not json", &mut version, &tx),
            Some(End::Failed(_))
        ));
        drop(rx);
        let added = line(&serde_json::json!({"type": "MODIFIED", "object": {
            "apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata", "metadata": {"name": "x"}}}));
        assert!(
            matches!(event(&added, &mut version, &tx), Some(End::Unheard)),
            "nobody listens"
        );
    }
}
