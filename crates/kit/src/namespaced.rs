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
use kube::api::{Api, PartialObjectMeta};
use kube::core::NamespaceResourceScope;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;
use tokio::task::AbortHandle;

use crate::labels::managed_selector;
use crate::watch::retry;

/// How often a running watch asks whether its namespace still holds anything of the controller's, besides
/// whenever it fails (a deleted namespace fails it at once).
const LOOK_AGAIN: Duration = Duration::from_secs(300);

/// Whether the controller still works in a namespace (has an object there).
pub type Keep = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The per-namespace watches of one kind, feeding one trigger stream.
pub struct PerNamespace<K> {
    client: Client,
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
        client: Client,
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
                client,
                keep,
                sender,
                running,
            },
            stream,
        )
    }

    /// Starts watching `namespace` unless that watch runs. Its first list reports every object there.
    pub fn watch(&self, namespace: &str) {
        let Ok(mut running) = self.running.lock() else {
            return;
        };
        running.retain(|_, t| !t.is_finished());
        if running.contains_key(namespace) {
            return;
        }
        let task = tokio::spawn(one(
            Api::namespaced(self.client.clone(), namespace),
            namespace.to_owned(),
            self.keep.clone(),
            self.sender.clone(),
        ));
        running.insert(namespace.to_owned(), task.abort_handle());
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
    namespace: String,
    keep: Keep,
    sender: mpsc::UnboundedSender<PartialObjectMeta<K>>,
) where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let config = watcher::Config::default().labels(&managed_selector());
    let mut events = std::pin::pin!(watcher(api, config).backoff(retry()).touched_objects());
    let mut look = tokio::time::interval(LOOK_AGAIN);
    look.tick().await;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(Ok(object)) => {
                    if sender.send(object).is_err() {
                        return;
                    }
                }
                Some(Err(e)) => {
                    if !keep(&namespace) {
                        break;
                    }
                    tracing::debug!(%namespace, kind = %K::kind(&()), error = %e, "namespace watch failed; retrying");
                }
                None => break,
            },
            _ = look.tick() => {
                if !keep(&namespace) {
                    break;
                }
            }
        }
    }
    tracing::debug!(%namespace, kind = %K::kind(&()), "stopped watching the namespace");
}
