//! Which watch events are worth a reconcile. A controller that wrote an object's status, or a cluster
//! controller that counts a quota's usage, changes the object without changing anything a reconcile
//! reads; waking on those costs a reconcile each (and, through status, often a write). A [`Filter`]
//! passes an object only when what its [`Fingerprint`] covers changed, and always passes a deletion.

use std::collections::{HashMap, HashSet};
use std::hash::{DefaultHasher, Hash, Hasher};

use kube::Resource;
use kube::runtime::watcher;
use serde::Serialize;
use serde_json::Value;

/// What of an object matters to the controller being woken.
pub type Fingerprint<K> = fn(&K) -> u64;

/// Every change counts (for children whose status a reconcile reads, such as a StatefulSet's ready
/// replicas).
pub fn any_change<K: Resource>(o: &K) -> u64 {
    hash(&o.meta().resource_version)
}

/// Everything but `status` (and the bookkeeping the API server changes with it): spec, labels,
/// annotations, owners, finalizers, deletion.
pub fn all_but_status<K: Resource + Serialize>(o: &K) -> u64 {
    hash(&without_status(o).to_string())
}

/// As [`all_but_status`], plus `status.observedGeneration` and the `Ready` condition (without its
/// timestamp): a parent that reports its children's readiness is woken when it flips or its reason
/// changes, not for every replica count.
pub fn all_but_status_except_readiness<K: Resource + Serialize>(o: &K) -> u64 {
    let v = serde_json::to_value(o).unwrap_or_default();
    let observed = v.pointer("/status/observedGeneration").map(Value::to_string);
    let ready = v
        .pointer("/status/conditions")
        .cloned()
        .and_then(|c| match c {
            Value::Array(conditions) => conditions
                .into_iter()
                .find(|c| c.get("type").and_then(Value::as_str) == Some("Ready")),
            _ => None,
        })
        .map(|mut c| {
            if let Some(c) = c.as_object_mut() {
                c.remove("lastTransitionTime");
            }
            c.to_string()
        });
    hash(&(all_but_status(o), observed, ready))
}

fn without_status<K: Serialize>(o: &K) -> Value {
    let mut v = serde_json::to_value(o).unwrap_or_default();
    if let Some(obj) = v.as_object_mut() {
        obj.remove("status");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for field in ["resourceVersion", "managedFields", "generation"] {
            meta.remove(field);
        }
    }
    v
}

/// One value's hash, by a fixed-key hasher: stable across processes, which a fingerprint a parent records in
/// its status needs.
pub(crate) fn hash(v: &impl Hash) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

/// Remembers each object's last fingerprint, by uid (a re-created object is new; the uid is kept hashed,
/// a tenth of its bytes). What kube-runtime's `predicate_filter` does, but passing deletions on (it
/// swallows them) and forgetting an object as soon as it is deleted, or found missing from a re-list (a
/// deletion the watch never saw).
pub struct Filter<K> {
    fingerprint: Fingerprint<K>,
    seen: HashMap<u64, u64>,
    /// The uids listed so far while a (re-)list is in progress.
    listing: Option<HashSet<u64>>,
}

impl<K: Resource> Filter<K> {
    #[must_use]
    pub fn new(fingerprint: Fingerprint<K>) -> Self {
        Self {
            fingerprint,
            seen: HashMap::new(),
            listing: None,
        }
    }

    /// An object was added or changed: does it differ from last time in what the fingerprint covers?
    pub fn changed(&mut self, o: &K) -> bool {
        let print = (self.fingerprint)(o);
        self.seen.insert(uid(o), print) != Some(print)
    }

    /// An object was deleted: always worth a reconcile, and forgotten.
    pub fn deleted(&mut self, o: &K) {
        self.seen.remove(&uid(o));
    }

    /// A watch event as a controller trigger: the object when it changed (or, with `deletions`, was
    /// deleted), errors as they are, nothing for list bookkeeping.
    pub fn pass(
        &mut self,
        event: Result<watcher::Event<K>, watcher::Error>,
        deletions: bool,
    ) -> Option<Result<K, watcher::Error>> {
        match event {
            Ok(watcher::Event::InitApply(o)) => {
                if let Some(listed) = self.listing.as_mut() {
                    listed.insert(uid(&o));
                }
                self.changed(&o).then_some(Ok(o))
            }
            Ok(watcher::Event::Apply(o)) => self.changed(&o).then_some(Ok(o)),
            Ok(watcher::Event::Delete(o)) => {
                self.deleted(&o);
                deletions.then_some(Ok(o))
            }
            Ok(watcher::Event::Init) => {
                self.listing = Some(HashSet::new());
                None
            }
            Ok(watcher::Event::InitDone) => {
                if let Some(listed) = self.listing.take() {
                    self.seen.retain(|uid, _| listed.contains(uid));
                }
                None
            }
            Err(e) => Some(Err(e)),
        }
    }
}

fn uid<K: Resource>(o: &K) -> u64 {
    hash(&o.meta().uid)
}

#[cfg(test)]
mod tests {
    use k8s_openapi::api::core::v1::{Pod, PodCondition, PodSpec, PodStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

    use kube::ResourceExt;

    use super::*;

    // Any kind with a spec and `Ready` among its status conditions will do: a Pod, on a node named like a
    // size.
    fn db(node: &str) -> Pod {
        let mut pod = Pod {
            spec: Some(PodSpec {
                node_name: Some(node.to_owned()),
                ..PodSpec::default()
            }),
            ..Pod::default()
        };
        pod.metadata.name = Some("db".to_owned());
        pod.metadata.uid = Some("u1".to_owned());
        pod.metadata.resource_version = Some("1".to_owned());
        pod
    }

    fn condition(type_: &str, status: &str, reason: &str, at: i64) -> PodCondition {
        PodCondition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: Some(reason.to_owned()),
            last_transition_time: Some(Time(timestamp(at))),
            ..PodCondition::default()
        }
    }

    fn timestamp(secs: i64) -> k8s_openapi::jiff::Timestamp {
        k8s_openapi::jiff::Timestamp::from_second(secs).unwrap_or_default()
    }

    /// `replicas` stands for any status field that is not readiness (here: the pod's restart count).
    fn with_status(mut d: Pod, conditions: Vec<PodCondition>, replicas: i32, rv: &str) -> Pod {
        d.metadata.resource_version = Some(rv.to_owned());
        d.status = Some(PodStatus {
            conditions: Some(conditions),
            message: Some(format!("{replicas} restarts")),
            ..PodStatus::default()
        });
        d
    }

    #[test]
    fn status_only_changes_are_dropped_spec_changes_pass() {
        let mut f = Filter::new(all_but_status::<Pod>);
        assert!(f.changed(&db("1Gi")), "a new object passes");
        let counted = with_status(db("1Gi"), vec![], 2, "2");
        assert!(!f.changed(&counted), "only status and resourceVersion changed");
        assert!(f.changed(&db("2Gi")), "spec changed");
        let mut labelled = db("2Gi");
        labelled.labels_mut().insert("a".to_owned(), "b".to_owned());
        assert!(f.changed(&labelled), "labels changed");
        let mut recreated = labelled.clone();
        recreated.metadata.uid = Some("u2".to_owned());
        assert!(f.changed(&recreated), "a re-created object is new");
    }

    #[test]
    fn ready_flips_and_reasons_pass_replica_counts_and_timestamps_do_not() {
        let mut f = Filter::new(all_but_status_except_readiness::<Pod>);
        let not_ready = vec![condition("Ready", "False", "Creating", 1)];
        assert!(f.changed(&with_status(db("1Gi"), not_ready.clone(), 0, "1")));
        assert!(
            !f.changed(&with_status(db("1Gi"), not_ready, 1, "2")),
            "replica count only"
        );
        let other = vec![
            condition("Ready", "False", "Creating", 1),
            condition("PoolReady", "True", "Available", 5),
        ];
        assert!(
            !f.changed(&with_status(db("1Gi"), other, 1, "3")),
            "another condition only"
        );
        let ready = vec![condition("Ready", "True", "Ready", 9)];
        assert!(f.changed(&with_status(db("1Gi"), ready, 2, "4")), "Ready flipped");
        let ready_later = vec![condition("Ready", "True", "Ready", 10)];
        assert!(
            !f.changed(&with_status(db("1Gi"), ready_later.clone(), 2, "5")),
            "timestamp only"
        );
        let mut observed = with_status(db("1Gi"), ready_later, 2, "6");
        if let Some(s) = observed.status.as_mut() {
            s.observed_generation = Some(2);
        }
        assert!(
            f.changed(&observed),
            "the child's controller observed a new generation"
        );
    }

    #[test]
    fn watch_events_become_triggers_only_when_something_changed() {
        let mut f = Filter::new(any_change::<Pod>);
        let pass = |f: &mut Filter<Pod>, e: watcher::Event<Pod>, deletions: bool| {
            f.pass(Ok(e), deletions).map(|r| r.is_ok())
        };
        assert_eq!(pass(&mut f, watcher::Event::Init, true), None);
        assert_eq!(
            pass(&mut f, watcher::Event::InitApply(db("1Gi")), true),
            Some(true)
        );
        assert_eq!(pass(&mut f, watcher::Event::InitDone, true), None);
        assert_eq!(
            pass(&mut f, watcher::Event::Apply(db("1Gi")), true),
            None,
            "same version"
        );
        assert_eq!(
            pass(&mut f, watcher::Event::Delete(db("1Gi")), false),
            None,
            "owner's own deletion"
        );
        assert_eq!(pass(&mut f, watcher::Event::Delete(db("1Gi")), true), Some(true));
    }

    #[test]
    fn a_relist_forgets_what_it_no_longer_lists() {
        let mut f = Filter::new(any_change::<Pod>);
        let mut gone = db("1Gi");
        gone.metadata.uid = Some("gone".to_owned());
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(db("1Gi")),
            watcher::Event::InitApply(gone.clone()),
            watcher::Event::InitDone,
        ] {
            f.pass(Ok(e), true);
        }
        // Deleted while the watch was down: the next list does not have it.
        for e in [
            watcher::Event::Init,
            watcher::Event::InitApply(db("1Gi")),
            watcher::Event::InitDone,
        ] {
            f.pass(Ok(e), true);
        }
        assert_eq!(f.seen.len(), 1, "only what the last list had");
        assert!(f.changed(&gone), "were it back, it would be new");
    }

    #[test]
    fn any_change_passes_every_new_version_and_deletion_forgets() {
        let mut f = Filter::new(any_change::<Pod>);
        let d = db("1Gi");
        assert!(f.changed(&d));
        assert!(
            !f.changed(&d),
            "the same version twice (a relist) is not a change"
        );
        assert!(f.changed(&with_status(db("1Gi"), vec![], 1, "2")));
        f.deleted(&d);
        assert!(f.changed(&d), "after a deletion the object is new again");
    }
}
