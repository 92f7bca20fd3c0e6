//! Triggers from a kind berth may not watch cluster-wide (Secrets: its tenant role grants them only in
//! tenant namespaces, see `TenantAccess`). One label-selected, metadata-only watch per namespace a
//! controller works in: started by the first reconcile there, stopped once nothing of the controller's is
//! left there. Only names, labels and owners cross the wire and nothing is cached, so a tenant's own
//! Secrets, however many or large, never reach berth's memory.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::{Stream, StreamExt};
use kube::Resource;
use kube::api::{Api, PartialObjectMeta};
use kube::core::NamespaceResourceScope;
use kube::runtime::{WatchStreamExt, watcher};
use serde::de::DeserializeOwned;
use tokio::sync::{mpsc, oneshot};
use tokio::task::AbortHandle;

use crate::connections::{Connections, Seat};
use crate::labels::managed_selector;
use crate::watch::retry;

/// How long the first reconcile in a namespace waits for the watch's first list before it reads anyway.
const FIRST_LIST_WAIT: Duration = Duration::from_secs(5);

/// How often a running watch asks whether its namespace still holds anything of the controller's, besides
/// whenever it fails (a deleted namespace fails it at once).
const LOOK_AGAIN: Duration = Duration::from_secs(300);

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
        let task = tokio::spawn(one(
            Api::namespaced(client, namespace),
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

/// One namespace's watch, until the controller no longer works there or nobody listens.
async fn one<K>(
    api: Api<PartialObjectMeta<K>>,
    _seat: Seat,
    namespace: String,
    keep: Keep,
    sender: mpsc::UnboundedSender<PartialObjectMeta<K>>,
    listed: oneshot::Sender<()>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let config = watcher::Config::default().labels(&managed_selector());
    let mut events = std::pin::pin!(watcher(api, config).backoff(retry()));
    let mut look = tokio::time::interval(LOOK_AGAIN);
    look.tick().await;
    // The first list, held until it is done: passed on only if nobody waited for it (see `watch`).
    let mut first = Some((listed, Vec::new()));
    loop {
        let object = tokio::select! {
            event = events.next() => match event {
                Some(Ok(watcher::Event::InitApply(o))) if first.is_some() => {
                    if let Some((_, held)) = first.as_mut() {
                        held.push(o);
                    }
                    continue;
                }
                Some(Ok(watcher::Event::InitDone)) => {
                    let Some((listed, held)) = first.take() else {
                        continue;
                    };
                    if listed.send(()).is_ok() {
                        continue;
                    }
                    held
                }
                Some(Ok(watcher::Event::Apply(o) | watcher::Event::Delete(o) | watcher::Event::InitApply(o))) => {
                    vec![o]
                }
                Some(Ok(watcher::Event::Init)) => continue,
                Some(Err(e)) => {
                    if !keep(&namespace) {
                        break;
                    }
                    tracing::debug!(%namespace, kind = %K::kind(&()), error = %e, "namespace watch failed; retrying");
                    continue;
                }
                None => break,
            },
            _ = look.tick() => {
                if !keep(&namespace) {
                    break;
                }
                continue;
            }
        };
        for o in object {
            if sender.send(o).is_err() {
                return;
            }
        }
    }
    tracing::debug!(%namespace, kind = %K::kind(&()), "stopped watching the namespace");
}
