//! Cached, label-selected watches of the kinds a controller owns. The cache answers "does it exist and
//! what does it look like" without a GET, and the same stream wakes the controller when a child changes.

use std::fmt::Debug;
use std::hash::Hash;

use futures::{Stream, StreamExt, TryStreamExt};
use kube::api::Api;
use kube::core::DeserializeGuard;
use kube::runtime::reflector::{self, Store};
use kube::runtime::utils::Backoff;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::cache::{Cache, cache};
use crate::changes::{Filter, Fingerprint};
use crate::labels::managed_selector;
use crate::slim::{Cached, Slim};

/// A store of every `K` berth manages, and the stream that fills it (pass it to `Controller::owns_stream`),
/// which passes a change only when `fingerprint` sees one (deletions always).
/// managedFields are dropped on the way in (most of an object's bytes, and no controller reads them), and
/// the store keeps each object as a [`Cached`] view (see [`crate::slim`]) in a [`Cache`].
pub fn owned<K>(
    api: Api<K>,
    fingerprint: Fingerprint<Cached<K>>,
) -> (
    Cache<Cached<K>>,
    impl Stream<Item = Result<Cached<K>, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()>
        + Clone
        + Serialize
        + DeserializeOwned
        + Debug
        + Send
        + Sync
        + Slim
        + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let (store, mut writer) = cache();
    let config = watcher::Config::default()
        .labels(&managed_selector())
        .any_semantic();
    let mut filter = Filter::new(fingerprint);
    let stream = watcher(api, config)
        .backoff(retry())
        .map_ok(|event| {
            map_event(event, |mut o: K| {
                o.managed_fields_mut().clear();
                Cached::new(o)
            })
        })
        .inspect_ok(move |event| writer.apply(event))
        .filter_map(move |event| std::future::ready(filter.pass(event, true)));
    (store, stream)
}

/// The store and trigger stream of a controller's own kind (for `Controller::for_stream`), passing a change
/// only when `fingerprint` sees one. `kit` is marked synced when the first list completes, which `/readyz`
/// waits for: observed on the stream itself, because a store's readiness future wakes only one waiter and
/// the controller already waits on it.
pub fn primary<K>(
    api: Api<K>,
    kit: std::sync::Arc<crate::Context>,
    fingerprint: Fingerprint<K>,
) -> (
    Store<K>,
    impl Stream<Item = Result<K, watcher::Error>> + Send + 'static,
)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let (store, writer) = reflector::store();
    let mut filter = Filter::new(fingerprint);
    let stream = guarded(api, watcher::Config::default().any_semantic())
        .backoff(retry())
        .inspect(move |event| {
            if matches!(event, Ok(watcher::Event::InitDone)) {
                kit.mark_synced();
            }
        })
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer)
        // Its own deletion is seen through the finalizer, while the object still exists.
        .filter_map(move |event| std::future::ready(filter.pass(event, false)));
    (store, stream)
}

/// Marks `kit` synced (for `/readyz`) once `listed` resolves to `true`.
pub fn mark_synced_when(
    kit: &std::sync::Arc<crate::Context>,
    listed: futures::future::BoxFuture<'static, bool>,
) {
    let kit = kit.clone();
    tokio::spawn(async move {
        if listed.await {
            kit.mark_synced();
        }
    });
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
            .map_err(|_| crate::Error::Unavailable("watch caches stopped".to_owned()))
    }
}

/// Resolves to `true` once `listed` says a store holds a full list, `false` if its writer went away first
/// (boxed for [`Synced::new`]). Every waiter wakes, unlike with a kube store's own readiness future.
#[must_use]
pub fn listed(listed: &tokio::sync::watch::Receiver<bool>) -> futures::future::BoxFuture<'static, bool> {
    let mut rx = listed.clone();
    Box::pin(async move { rx.wait_for(|l| *l).await.is_ok() })
}

/// The cache's view of the object `desired` names.
#[must_use]
pub fn current<K>(store: &Cache<Cached<K>>, desired: &K) -> Option<std::sync::Arc<Cached<K>>>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let name = reflector::ObjectRef::<Cached<K>>::new(&desired.name_any());
    store.get(&match desired.namespace() {
        Some(ns) => name.within(&ns),
        None => name,
    })
}

/// [`current`] for a kind whose cache keeps objects whole (a shared watch's).
#[must_use]
pub fn current_whole<K>(store: &Store<K>, desired: &K) -> Option<std::sync::Arc<Cached<K>>>
where
    K: Resource<DynamicType = ()> + Clone + Serialize + Slim,
{
    let whole = store.get(&reflector::ObjectRef::from_obj(desired))?;
    Some(std::sync::Arc::new(Cached::new((*whole).clone())))
}

/// A watch of `api`'s kind that survives objects its types cannot read (a CRD version berth does not know
/// yet, a field edited past its schema): each is reported and left out, instead of failing the list and
/// with it every tenant's reconciles. Cluster-wide, as every berth watch is: only `api`'s client is used.
pub fn guarded<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<watcher::Event<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    let guarded: Api<DeserializeGuard<K>> = Api::all(api.into_client());
    watcher(guarded, config).filter_map(|event| std::future::ready(event.map(readable).transpose()))
}

/// How a broken watch is retried (each watch, and each controller's merged triggers: see
/// [`crate::runtime::run`]): 250 ms doubling to 4 s, jittered, back to the start after any event. kube's
/// default climbs to 30 s, so after an API server outage of half a minute every trigger of every
/// controller could stay silent for another 30 s; a failed re-list is one cheap request, and the
/// retries of several watches do not march in step.
#[must_use]
pub fn retry() -> WatchRetry {
    WatchRetry::default()
}

#[derive(Debug, Default)]
pub struct WatchRetry {
    failures: u32,
}

impl Iterator for WatchRetry {
    type Item = std::time::Duration;

    fn next(&mut self) -> Option<Self::Item> {
        let base = retry_delay(self.failures);
        self.failures = self.failures.saturating_add(1);
        // Up to a quarter more, from the clock's nanoseconds: enough to spread the retries.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        Some(base + base.mul_f64(f64::from(nanos % 1000) / 4000.0))
    }
}

impl Backoff for WatchRetry {
    fn reset(&mut self) {
        self.failures = 0;
    }
}

fn retry_delay(failures: u32) -> std::time::Duration {
    std::time::Duration::from_millis(250u64.saturating_mul(1 << failures.min(4)))
}

/// One watch event with its object(s) turned into another type.
fn map_event<A, B>(event: watcher::Event<A>, mut f: impl FnMut(A) -> B) -> watcher::Event<B> {
    match event {
        watcher::Event::Apply(o) => watcher::Event::Apply(f(o)),
        watcher::Event::InitApply(o) => watcher::Event::InitApply(f(o)),
        watcher::Event::Delete(o) => watcher::Event::Delete(f(o)),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    }
}

/// The readable part of one watch event; `None` for an object the types cannot read, reported here.
fn readable<K: Resource<DynamicType = ()>>(
    event: watcher::Event<DeserializeGuard<K>>,
) -> Option<watcher::Event<K>> {
    let ok = |g: DeserializeGuard<K>| match g.0 {
        Ok(k) => Some(k),
        Err(invalid) => {
            let meta = &invalid.metadata;
            tracing::warn!(
                kind = %K::kind(&()),
                namespace = meta.namespace.as_deref().unwrap_or_default(),
                name = meta.name.as_deref().unwrap_or_default(),
                error = %invalid.error,
                "skipping an object berth cannot read"
            );
            None
        }
    };
    Some(match event {
        watcher::Event::Apply(g) => watcher::Event::Apply(ok(g)?),
        watcher::Event::InitApply(g) => watcher::Event::InitApply(ok(g)?),
        watcher::Event::Delete(g) => watcher::Event::Delete(ok(g)?),
        watcher::Event::Init => watcher::Event::Init,
        watcher::Event::InitDone => watcher::Event::InitDone,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_broken_watch_is_retried_within_five_seconds_and_starts_over_after_an_event() {
        let millis: Vec<u64> = (0..7).map(|n| retry_delay(n).as_millis() as u64).collect();
        assert_eq!(millis, [250, 500, 1000, 2000, 4000, 4000, 4000]);
        let mut r = retry();
        let waits: Vec<_> = r.by_ref().take(8).collect();
        assert!(
            waits.iter().all(|w| *w <= std::time::Duration::from_secs(5)),
            "{waits:?}"
        );
        r.reset();
        assert!(r.next().unwrap() < std::time::Duration::from_millis(320));
    }
}
