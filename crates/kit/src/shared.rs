//! One watch of a kind for the whole process, fanned out to every controller that needs the kind: the
//! Customer controller and the Database controller both see Databases through the same list and watch
//! (and the same cache), instead of asking the API server twice for the same objects.
//!
//! kube-runtime's own shared streams do not pass deletions on, and the Customer controller must hear
//! when someone deletes its Database to put it back, so the fan-out is done here.

use std::collections::HashSet;
use std::fmt::Debug;
use std::future::Future;
use std::sync::Arc;

use futures::channel::mpsc;
use futures::future::BoxFuture;
use futures::{SinkExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::changes::{Filter, Fingerprint};

/// How many changes a subscriber may lag behind before the watch waits for it.
const BUFFER: usize = 1024;

/// A watch that has not started yet: everyone who needs it subscribes first, then [`Shared::start`].
pub struct Shared<K: Resource<DynamicType = ()> + Clone + 'static> {
    api: Api<K>,
    config: watcher::Config,
    store: Store<K>,
    writer: reflector::store::Writer<K>,
    listed: tokio::sync::watch::Sender<bool>,
    subscribers: Vec<Subscriber<K>>,
}

struct Subscriber<K> {
    tx: mpsc::Sender<Arc<K>>,
    filter: Filter<K>,
    deletions: bool,
}

/// One controller's view of a shared watch.
pub struct Subscription<K: Resource<DynamicType = ()> + Clone + 'static> {
    /// The process-wide cache of the kind.
    pub store: Store<K>,
    /// Every object that was added or changed, and deleted if asked for (pass it to
    /// `Controller::for_shared_stream` or `watches_shared_stream`).
    pub changes: mpsc::Receiver<Arc<K>>,
    listed: tokio::sync::watch::Receiver<bool>,
}

impl<K> Subscription<K>
where
    K: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    /// Resolves to `true` once the cache holds a full list (for [`crate::watch::Synced`]). Waits on a
    /// channel of its own rather than the store, whose readiness future wakes only one waiter.
    #[must_use]
    pub fn listed(&self) -> BoxFuture<'static, bool> {
        crate::watch::listed(&self.listed)
    }
}

impl<K> Shared<K>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
{
    #[must_use]
    pub fn new(api: Api<K>) -> Self {
        Self::with_config(api, watcher::Config::default())
    }

    /// A shared watch of what `config` selects (berth's own Jobs, by label).
    #[must_use]
    pub fn with_config(api: Api<K>, config: watcher::Config) -> Self {
        let (store, writer) = reflector::store();
        Self {
            api,
            config,
            store,
            writer,
            listed: tokio::sync::watch::Sender::new(false),
            subscribers: Vec::new(),
        }
    }

    /// A new subscriber, told of a change only when `fingerprint` sees one, and of deletions when it asks
    /// for them (a parent re-creating a child does; a controller of the kind itself sees its objects go
    /// through their finalizers instead). Only valid before [`Shared::start`], so that nobody misses the
    /// first list.
    pub fn subscribe(&mut self, fingerprint: Fingerprint<K>, deletions: bool) -> Subscription<K> {
        let (tx, rx) = mpsc::channel(BUFFER);
        self.subscribers.push(Subscriber {
            tx,
            filter: Filter::new(fingerprint),
            deletions,
        });
        Subscription {
            store: self.store.clone(),
            changes: rx,
            listed: self.listed.subscribe(),
        }
    }

    /// Starts the watch if anyone subscribed. It runs until `stop` resolves or every subscriber is gone.
    pub fn start(self, stop: impl Future<Output = ()> + Send + 'static) {
        if self.subscribers.is_empty() {
            return;
        }
        tokio::spawn(self.run(stop));
    }

    async fn run(self, stop: impl Future<Output = ()> + Send + 'static) {
        let Self {
            api,
            config,
            store,
            writer,
            listed,
            mut subscribers,
        } = self;
        let kind = K::kind(&());
        let events = crate::watch::guarded(api, config.any_semantic())
            .backoff(crate::watch::retry())
            .modify(|o: &mut K| o.managed_fields_mut().clear())
            .reflect(writer);
        let mut events = std::pin::pin!(events.take_until(stop));
        // Objects seen before a (re)list, so that one which vanished meanwhile is reported as deleted.
        let mut before: Vec<Arc<K>> = Vec::new();
        while let Some(event) = events.next().await {
            let changed = match event {
                Ok(watcher::Event::Apply(o)) => vec![(Arc::new(o), false)],
                Ok(watcher::Event::Delete(o)) => vec![(Arc::new(o), true)],
                Ok(watcher::Event::Init) => {
                    before = store.state();
                    continue;
                }
                // Dispatched together at InitDone, when the cache holds the new list.
                Ok(watcher::Event::InitApply(_)) => continue,
                Ok(watcher::Event::InitDone) => {
                    listed.send_replace(true);
                    relisted(&store, std::mem::take(&mut before))
                }
                Err(e) => {
                    tracing::warn!(%kind, error = %e, "shared watch failed; retrying");
                    continue;
                }
            };
            for (object, deleted) in changed {
                let mut live = Vec::with_capacity(subscribers.len());
                for mut s in subscribers {
                    let wanted = if deleted {
                        s.filter.deleted(&object);
                        s.deletions
                    } else {
                        s.filter.changed(&object)
                    };
                    if !wanted || s.tx.send(object.clone()).await.is_ok() {
                        live.push(s);
                    }
                }
                subscribers = live;
            }
            if subscribers.is_empty() {
                break;
            }
        }
        tracing::debug!(%kind, "shared watch stopped");
    }
}

/// Everything in the fresh list, plus what was cached before it and is gone now (flagged deleted).
fn relisted<K>(store: &Store<K>, before: Vec<Arc<K>>) -> Vec<(Arc<K>, bool)>
where
    K: Resource<DynamicType = ()> + Clone,
{
    let now = store.state();
    let present: HashSet<ObjectRef<K>> = now.iter().map(|o| ObjectRef::from_obj(o.as_ref())).collect();
    let gone = before
        .into_iter()
        .filter(|o| !present.contains(&ObjectRef::from_obj(o.as_ref())))
        .map(|o| (o, true));
    now.into_iter().map(|o| (o, false)).chain(gone).collect()
}
