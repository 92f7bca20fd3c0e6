//! The store behind [`crate::watch::owned`]: every child berth manages, for the life of the process, found
//! by namespace and name. kube-runtime's store keys each object by an `ObjectRef`, four strings copied out
//! of the object (name, namespace, resourceVersion, uid) beside it in a 104-byte map entry. Here the object
//! is its own key: the table holds only the pointer, placed by a hash of namespace and name and told apart
//! by comparing them.

use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, PoisonError, RwLock};

use futures::future::BoxFuture;
use hashbrown::HashTable;
use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;

/// A read handle on the store (clones share it).
pub struct Cache<K> {
    shared: Arc<Shared<K>>,
    listed: tokio::sync::watch::Receiver<bool>,
}

impl<K> Clone for Cache<K> {
    fn clone(&self) -> Self {
        Self {
            shared: self.shared.clone(),
            listed: self.listed.clone(),
        }
    }
}

struct Shared<K> {
    table: RwLock<HashTable<Arc<K>>>,
    hasher: RandomState,
}

/// What applies watch events to the store; the watch's stream owns it.
pub struct Writer<K> {
    shared: Arc<Shared<K>>,
    /// The objects of a list in progress: the store keeps answering from the last one until it completes.
    listing: Option<HashTable<Arc<K>>>,
    listed: tokio::sync::watch::Sender<bool>,
}

/// An empty store and its writer.
#[must_use]
pub fn cache<K>() -> (Cache<K>, Writer<K>) {
    let shared = Arc::new(Shared {
        table: RwLock::new(HashTable::new()),
        hasher: RandomState::new(),
    });
    let (listed, rx) = tokio::sync::watch::channel(false);
    let cache = Cache {
        shared: shared.clone(),
        listed: rx,
    };
    let writer = Writer {
        shared,
        listing: None,
        listed,
    };
    (cache, writer)
}

impl<K: Resource> Shared<K> {
    fn hash(&self, namespace: Option<&str>, name: &str) -> u64 {
        self.hasher.hash_one((namespace, name))
    }

    fn hash_of(&self, obj: &K) -> u64 {
        let (namespace, name) = key(obj);
        self.hash(namespace, name)
    }
}

/// Namespace and name: what the store finds an object by.
fn key<K: Resource>(obj: &K) -> (Option<&str>, &str) {
    let meta = obj.meta();
    (
        meta.namespace.as_deref(),
        meta.name.as_deref().unwrap_or_default(),
    )
}

fn is<K: Resource>(namespace: Option<&str>, name: &str) -> impl Fn(&Arc<K>) -> bool {
    move |obj| {
        let meta = obj.meta();
        meta.name.as_deref() == Some(name) && meta.namespace.as_deref() == namespace
    }
}

fn insert<K: Resource>(shared: &Shared<K>, table: &mut HashTable<Arc<K>>, obj: Arc<K>) {
    let (namespace, name) = key(&*obj);
    let hash = shared.hash(namespace, name);
    match table.find_mut(hash, is(namespace, name)) {
        Some(slot) => *slot = obj,
        None => {
            table.insert_unique(hash, obj, |o| shared.hash_of(o));
        }
    }
}

impl<K: Resource + Clone> Writer<K> {
    /// Applies one watch event, as kube-runtime's reflector would.
    pub fn apply(&mut self, event: &watcher::Event<K>) {
        let shared = &*self.shared;
        match event {
            watcher::Event::Apply(obj) => {
                let mut table = shared.table.write().unwrap_or_else(PoisonError::into_inner);
                insert(shared, &mut table, Arc::new(obj.clone()));
            }
            watcher::Event::Delete(obj) => {
                let (namespace, name) = key(obj);
                let hash = shared.hash(namespace, name);
                let mut table = shared.table.write().unwrap_or_else(PoisonError::into_inner);
                if let Ok(entry) = table.find_entry(hash, is(namespace, name)) {
                    entry.remove();
                }
            }
            watcher::Event::Init => self.listing = Some(HashTable::new()),
            watcher::Event::InitApply(obj) => {
                let listing = self.listing.get_or_insert_with(HashTable::new);
                insert(shared, listing, Arc::new(obj.clone()));
            }
            watcher::Event::InitDone => {
                let mut listing = self.listing.take().unwrap_or_default();
                listing.shrink_to_fit(|o| shared.hash_of(o));
                *shared.table.write().unwrap_or_else(PoisonError::into_inner) = listing;
                self.listed.send_replace(true);
            }
        }
    }
}

impl<K: Resource> Cache<K> {
    /// The object `at` names (its name and namespace; the rest of the reference is not compared).
    #[must_use]
    pub fn get(&self, at: &ObjectRef<K>) -> Option<Arc<K>> {
        let shared = &*self.shared;
        let (namespace, name) = (at.namespace.as_deref(), at.name.as_str());
        let table = shared.table.read().unwrap_or_else(PoisonError::into_inner);
        table
            .find(shared.hash(namespace, name), is(namespace, name))
            .cloned()
    }
}

impl<K: Send + Sync + 'static> Cache<K> {
    /// Resolves to `true` once the store holds a full list (for [`crate::watch::Synced`]); `false` when the
    /// watch stopped before it did.
    #[must_use]
    pub fn listed(&self) -> BoxFuture<'static, bool> {
        crate::watch::listed(&self.listed)
    }
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

    use super::*;

    fn cm(ns: &str, name: &str, value: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.to_owned()),
                namespace: Some(ns.to_owned()),
                resource_version: Some(value.to_owned()),
                ..ObjectMeta::default()
            },
            ..ConfigMap::default()
        }
    }

    fn at(ns: &str, name: &str) -> ObjectRef<ConfigMap> {
        ObjectRef::new(name).within(ns)
    }

    fn version(c: &Cache<ConfigMap>, ns: &str, name: &str) -> Option<String> {
        c.get(&at(ns, name))
            .and_then(|o| o.metadata.resource_version.clone())
    }

    #[test]
    fn objects_are_found_by_namespace_and_name_replaced_and_removed() {
        let (c, mut w) = cache();
        w.apply(&watcher::Event::Apply(cm("a", "x", "1")));
        w.apply(&watcher::Event::Apply(cm("b", "x", "2")));
        w.apply(&watcher::Event::Apply(cm("a", "x", "3")));
        assert_eq!(version(&c, "a", "x").as_deref(), Some("3"));
        assert_eq!(version(&c, "b", "x").as_deref(), Some("2"));
        assert_eq!(version(&c, "a", "y"), None);
        w.apply(&watcher::Event::Delete(cm("a", "x", "3")));
        assert_eq!(version(&c, "a", "x"), None);
        assert_eq!(version(&c, "b", "x").as_deref(), Some("2"));
    }

    #[tokio::test]
    async fn a_relist_replaces_everything_when_it_completes_and_marks_the_store_listed() {
        let (c, mut w) = cache();
        let listed = c.listed();
        w.apply(&watcher::Event::Apply(cm("a", "old", "1")));
        w.apply(&watcher::Event::Init);
        w.apply(&watcher::Event::InitApply(cm("a", "new", "2")));
        assert_eq!(
            version(&c, "a", "old").as_deref(),
            Some("1"),
            "answers from before until done"
        );
        assert_eq!(version(&c, "a", "new"), None);
        w.apply(&watcher::Event::InitDone);
        assert_eq!(version(&c, "a", "old"), None);
        assert_eq!(version(&c, "a", "new").as_deref(), Some("2"));
        assert!(listed.await);
    }

    #[tokio::test]
    async fn a_watch_that_stops_before_listing_is_not_listed() {
        let (c, w) = cache::<ConfigMap>();
        let listed = c.listed();
        drop(w);
        assert!(!listed.await);
    }
}
