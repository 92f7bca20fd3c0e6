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
pub fn owned<K>(api: Api<K>) -> (Store<K>, impl Stream<Item = Result<K, watcher::Error>> + Send + 'static)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    K::DynamicType: Eq + Hash + Clone,
{
    let (store, writer) = reflector::store();
    let config = watcher::Config::default().labels(&managed_selector()).any_semantic();
    let stream = watcher(api, config)
        .default_backoff()
        .modify(|o: &mut K| o.managed_fields_mut().clear())
        .reflect(writer)
        .touched_objects();
    (store, stream)
}
