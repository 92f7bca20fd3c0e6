//! Cached, label-selected watches of the kinds a controller owns. The cache answers "does it exist and
//! what does it look like" without a GET, and the same stream wakes the controller when a child changes.

use std::fmt::Debug;
use std::hash::Hash;

use futures::Stream;
use kube::api::Api;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::labels::managed_selector;

/// A store of every `K` berth manages, and the stream that fills it (pass it to `Controller::owns_stream`).
/// managedFields are dropped on the way in: they are most of an object's bytes and no controller reads them.
pub fn owned<K>(
    api: Api<K>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let (store, writer) = reflector::store();
    let config = watcher::Config::default()
        .labels(&managed_selector())
        .any_semantic();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    (store, stream)
}

/// The store and trigger stream of a controller's own kind (for `Controller::for_stream`). `kit` is marked
/// synced when the first list completes, which `/readyz` waits for: observed on the stream itself, because
/// a store's readiness future wakes only one waiter and the controller already waits on it.
pub fn primary<K>(
    api: Api<K>,
    kit: std::sync::Arc<crate::Context>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    use futures::StreamExt;
    let (store, writer) = reflector::store();
    let stream = watcher(api, watcher::Config::default().any_semantic())
        .default_backoff()
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                kit.mark_synced();
            }
        })
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects();
    (store, stream)
}

/// "Every cache has listed once", shared by all reconciles of a controller. A store's own readiness
/// future wakes only one of several concurrent waiters, so parallel reconciles wait on this instead.
#[derive(Clone)]
pub struct Synced(tokio::sync::watch::Receiver<bool>);

impl Synced {
    /// Starts one task that waits for every store in `stores`.
    #[must_use]
    pub fn new(stores: Vec<futures::future::BoxFuture<'static, bool>>) -> Self {
        let (tx, rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            for store in stores {
                if !store.await {
                    return;
                }
            }
            tx.send_replace(true);
        });
        Self(rx)
    }

    /// Resolves once every store has listed.
    ///
    /// # Errors
    /// When a store's writer went away before it was ready (the controller is shutting down).
    pub async fn wait(&self) -> crate::Result<()> {
        let mut rx = self.0.clone();
        rx.wait_for(|s| *s)
            .await
            .map(drop)
            .map_err(|_| crate::Error::Conflict("watch caches stopped".to_owned()))
    }
}

/// A store's readiness, boxed for [`Synced::new`].
#[must_use]
pub fn listed<K>(store: &Store<K>) -> futures::future::BoxFuture<'static, bool>
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone + Send + Sync,
{
    let store = store.clone();
    Box::pin(async move { store.wait_until_ready().await.is_ok() })
}

/// The cache's copy of the object `desired` names.
#[must_use]
pub fn current<K>(store: &Store<K>, desired: &K) -> Option<std::sync::Arc<K>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    store.get(&reflector::ObjectRef::from_obj(desired))
}
