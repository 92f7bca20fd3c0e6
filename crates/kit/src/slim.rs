//! What the watch caches keep of each kind. A cache holds every tenant's children for the life of the
//! process, and most of a child's bytes are parts no reconcile reads back: a workload's pod template, a
//! Service's ports, a policy's selectors, the labels on each. berth only needs to know whether those are
//! still what it applied. So a cache holds a [`Cached`] view: the object without those parts, a digest of
//! them, and its labels and annotations as hashed pairs. [`crate::Context`] views what it applies the same
//! way before comparing it with the cache, so a change to a dropped part still changes the fingerprint, and
//! drift is still seen and repaired. A view is never applied or sent anywhere.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashSet};
use std::marker::PhantomData;

use k8s_openapi::api::apps::v1::{
    Deployment, DeploymentSpec, DeploymentStatus, StatefulSet, StatefulSetSpec, StatefulSetStatus,
};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimStatus, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::{NetworkPolicy, NetworkPolicyIngressRule, NetworkPolicySpec};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::changes::hash;

/// Drops, in place, what the caches need not keep of an object.
pub trait Slim: Default {
    /// Whether the view folds the labels and annotations of an object its parent controls into hashed
    /// pairs. Kinds whose labels a reconcile or a watch mapping reads keep them whole (the default).
    const FOLD_MAPS: bool = false;

    /// Returns a digest of what was dropped when that is worth comparing later (`None`: nothing was, or
    /// only parts another controller owns, such as status).
    fn slim(&mut self) -> Option<u64> {
        None
    }
}

/// A cache's view of a `K`: the object's metadata, the rest of it as [`Slim`] leaves it, the digest of
/// what that dropped, and its labels and annotations folded. It has the object's identity (`Resource`), so
/// owner and label mappings work on it unchanged; [`Cached::object`] gives the object back as the view
/// holds it.
///
/// The rest is held as JSON: a `k8s-openapi` struct is as large with its fields empty as full (2.5 KiB for
/// a StatefulSet or a Deployment, ~1 KiB for a claim), and what is left after [`Slim`] is a few fields.
/// A reconcile reads it back a few times; the cache holds it for the life of the process.
#[derive(Clone, Debug)]
pub struct Cached<K> {
    meta: ObjectMeta,
    /// What [`Slim`] left besides the metadata (`None`: nothing), as JSON with empty metadata.
    rest: Option<Box<str>>,
    digest: Option<u64>,
    labels: Folded,
    annotations: Folded,
    kind: PhantomData<fn() -> K>,
}

impl<K: Slim + Resource + Serialize> Cached<K> {
    #[must_use]
    pub fn new(mut object: K) -> Self {
        let digest = object.slim();
        let mut meta = std::mem::take(object.meta_mut());
        let labels = Folded::of(meta.labels.as_ref());
        let annotations = Folded::of(meta.annotations.as_ref());
        if K::FOLD_MAPS && controlled(&meta) {
            meta.annotations = None;
            meta.labels = None;
        }
        let mut rest = serde_json::to_value(&object).unwrap_or_default();
        if let Some(map) = rest.as_object_mut() {
            map.remove("apiVersion");
            map.remove("kind");
        }
        let rest = (rest != serde_json::json!({"metadata": {}})).then(|| rest.to_string().into_boxed_str());
        Self {
            meta,
            rest,
            digest,
            labels,
            annotations,
            kind: PhantomData,
        }
    }
}

impl<K: Slim + Resource + DeserializeOwned> Cached<K> {
    /// The object as the view holds it: its metadata (labels and annotations folded away where
    /// [`Slim::FOLD_MAPS`] says so) and what [`Slim`] left.
    #[must_use]
    pub fn object(&self) -> K {
        // Some kinds cannot be read without metadata (berth's own), so the JSON carries it, empty.
        let rest = self.rest.as_deref().unwrap_or(r#"{"metadata":{}}"#);
        // Written from a `K` (see `new`), so it reads back as one (tested for every kind).
        let mut object = serde_json::from_str::<K>(rest).unwrap_or_else(|error| {
            tracing::error!(%error, "a cached view did not read back as its kind");
            K::default()
        });
        *object.meta_mut() = self.meta.clone();
        object
    }
}

impl<K: Resource<DynamicType = ()>> Cached<K> {
    /// [`Cached::object`] as JSON, without reading it back into a `K`.
    #[must_use]
    pub fn value(&self) -> serde_json::Value {
        let rest = self.rest.as_deref().and_then(|r| serde_json::from_str(r).ok());
        let mut value = rest.unwrap_or_else(|| serde_json::Value::Object(serde_json::Map::new()));
        if let Some(map) = value.as_object_mut() {
            map.insert("apiVersion".to_owned(), K::api_version(&()).into());
            map.insert("kind".to_owned(), K::kind(&()).into());
            map.insert(
                "metadata".to_owned(),
                serde_json::to_value(&self.meta).unwrap_or_default(),
            );
        }
        value
    }
}

/// Whether an owner reference ties the object to its parent. One that has none (kept under `Retain`) keeps
/// its labels and annotations whole: they are what tells berth's from someone else's (see
/// [`crate::ownership`]), and what the Customer controller's watches map it by.
fn controlled(meta: &ObjectMeta) -> bool {
    meta.owner_references
        .iter()
        .flatten()
        .any(|o| o.controller == Some(true))
}

impl<K> Cached<K> {
    /// The object's metadata with as much of the labels and annotations as `desired`'s can ask about: where
    /// the view folded them, those of `desired`'s entries the object has with the same value.
    #[must_use]
    pub fn meta_against(&self, desired: &ObjectMeta) -> Cow<'_, ObjectMeta> {
        let meta = &self.meta;
        if meta.labels.is_some() || meta.annotations.is_some() {
            return Cow::Borrowed(meta);
        }
        let mut meta = meta.clone();
        meta.labels = self.labels.restore(desired.labels.as_ref());
        meta.annotations = self.annotations.restore(desired.annotations.as_ref());
        Cow::Owned(meta)
    }

    /// The digest of the parts the view does not keep.
    #[must_use]
    pub fn digest(&self) -> Option<u64> {
        self.digest
    }

    /// The object's labels whose keys `keys` has, hashed.
    #[must_use]
    pub fn labels_within(&self, keys: Option<&BTreeMap<String, String>>) -> Vec<(u64, u64)> {
        self.labels.within(keys)
    }

    /// The object's annotations whose keys `keys` has, hashed.
    #[must_use]
    pub fn annotations_within(&self, keys: Option<&BTreeMap<String, String>>) -> Vec<(u64, u64)> {
        self.annotations.within(keys)
    }
}

impl<K: Resource> Resource for Cached<K> {
    type DynamicType = K::DynamicType;
    type Scope = K::Scope;

    fn kind(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::kind(dt)
    }

    fn group(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::group(dt)
    }

    fn version(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::version(dt)
    }

    fn plural(dt: &Self::DynamicType) -> Cow<'_, str> {
        K::plural(dt)
    }

    fn meta(&self) -> &ObjectMeta {
        &self.meta
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.meta
    }
}

/// A view of the object as read, as the watch delivers it.
impl<'de, K: serde::Deserialize<'de> + Slim + Resource + Serialize> serde::Deserialize<'de> for Cached<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(deserializer).map(Self::new)
    }
}

/// As the object, with the digest and the folded maps beside its fields: what the watch filters'
/// fingerprints hash.
impl<K: Resource<DynamicType = ()>> Serialize for Cached<K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = self.value();
        if let Some(map) = value.as_object_mut() {
            if let Some(d) = self.digest {
                map.insert("digest".to_owned(), d.into());
            }
            let pairs = |f: &Folded| serde_json::to_value(&f.0).unwrap_or_default();
            map.insert("labels".to_owned(), pairs(&self.labels));
            map.insert("annotations".to_owned(), pairs(&self.annotations));
        }
        value.serialize(serializer)
    }
}

/// A label or annotation map as `(hash of the key, hash of key and value)` pairs, sorted: 16 bytes an
/// entry where the map's node and strings take hundreds, and still compared entry by entry, so the labels
/// others add can be told from berth's (see `Context`'s fingerprint).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Folded(Box<[(u64, u64)]>);

impl Folded {
    fn of(map: Option<&BTreeMap<String, String>>) -> Self {
        let mut pairs: Vec<_> = map
            .into_iter()
            .flatten()
            .map(|(k, v)| (hash(k), hash(&(k, v))))
            .collect();
        pairs.sort_unstable();
        Self(pairs.into_boxed_slice())
    }

    /// The entries of `wanted` that the folded map had, as they are (`None`: none).
    fn restore(&self, wanted: Option<&BTreeMap<String, String>>) -> Option<BTreeMap<String, String>> {
        let had: BTreeMap<String, String> = wanted
            .into_iter()
            .flatten()
            .filter(|&(k, v)| self.0.binary_search(&(hash(k), hash(&(k, v)))).is_ok())
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        (!had.is_empty()).then_some(had)
    }

    fn within(&self, keys: Option<&BTreeMap<String, String>>) -> Vec<(u64, u64)> {
        let wanted: HashSet<u64> = keys.into_iter().flatten().map(|(k, _)| hash(k)).collect();
        self.0
            .iter()
            .filter(|(k, _)| wanted.contains(k))
            .copied()
            .collect()
    }
}

fn digest(parts: &impl Serialize) -> u64 {
    hash(&serde_json::to_string(parts).unwrap_or_default())
}

/// Leaves in `spec` only what `keep` takes out of it, and returns the digest of the rest.
fn keep_of_spec<S: Serialize>(spec: &mut Option<S>, keep: impl FnOnce(&mut S) -> S) -> Option<u64> {
    let mut rest = spec.take()?;
    *spec = Some(keep(&mut rest));
    Some(digest(&rest))
}

// A workload keeps what the Database's status reads (replicas wanted and ready, the server's volume claims,
// the pool's conditions); its selector, strategy and pod template are only compared.
impl Slim for StatefulSet {
    const FOLD_MAPS: bool = true;

    fn slim(&mut self) -> Option<u64> {
        let d = keep_of_spec(&mut self.spec, |spec| StatefulSetSpec {
            replicas: spec.replicas.take(),
            volume_claim_templates: spec.volume_claim_templates.take(),
            ..StatefulSetSpec::default()
        });
        self.status = self.status.take().map(|s| StatefulSetStatus {
            replicas: s.replicas,
            ready_replicas: s.ready_replicas,
            observed_generation: s.observed_generation,
            ..StatefulSetStatus::default()
        });
        d
    }
}

impl Slim for Deployment {
    const FOLD_MAPS: bool = true;

    fn slim(&mut self) -> Option<u64> {
        let d = keep_of_spec(&mut self.spec, |spec| DeploymentSpec {
            replicas: spec.replicas.take(),
            ..DeploymentSpec::default()
        });
        self.status = self.status.take().map(|s| DeploymentStatus {
            available_replicas: s.available_replicas,
            conditions: s.conditions,
            ..DeploymentStatus::default()
        });
        d
    }
}

impl Slim for ConfigMap {
    const FOLD_MAPS: bool = true;

    fn slim(&mut self) -> Option<u64> {
        Some(digest(&(self.data.take(), self.binary_data.take())))
    }
}

// Kept as a digest of the spec only: status no controller reads (usage counted by the quota controller,
// disruption and load-balancer state), and a spec berth only compares with what it applies.
macro_rules! spec_digest_only {
    ($($kind:ty),+) => {$(
        impl Slim for $kind {
            const FOLD_MAPS: bool = true;

            fn slim(&mut self) -> Option<u64> {
                self.status = None;
                Some(digest(&self.spec.take()))
            }
        }
    )+};
}

spec_digest_only!(ResourceQuota, PodDisruptionBudget, Service);

// A Secret berth compares is one it reads by name (it caches none), and its values need not outlive that
// comparison; the credentials berth reads back are read as a plain Secret, not this view.
impl Slim for Secret {
    fn slim(&mut self) -> Option<u64> {
        Some(digest(&(self.data.take(), self.string_data.take())))
    }
}

// Guard rails berth only compares with what it applies: one of each per tenant, for the life of the process.
impl Slim for LimitRange {
    const FOLD_MAPS: bool = true;

    fn slim(&mut self) -> Option<u64> {
        Some(digest(&self.spec.take()))
    }
}

impl Slim for RoleBinding {
    const FOLD_MAPS: bool = true;

    fn slim(&mut self) -> Option<u64> {
        let role = std::mem::take(&mut self.role_ref);
        Some(digest(&(role, self.subjects.take())))
    }
}

// A policy keeps whether it has ingress rules (one empty rule stands for any number): berth removes any
// found on a policy it keeps rule-free. The rules themselves are only compared.
impl Slim for NetworkPolicy {
    const FOLD_MAPS: bool = true;

    fn slim(&mut self) -> Option<u64> {
        keep_of_spec(&mut self.spec, |spec| NetworkPolicySpec {
            ingress: spec
                .ingress
                .as_ref()
                .filter(|rules| !rules.is_empty())
                .map(|_| vec![NetworkPolicyIngressRule::default()]),
            ..NetworkPolicySpec::default()
        })
    }
}

// A tenant namespace keeps its phase; its Pod Security labels, berth's labels and the recorded uid are only
// compared (a Customer tells its namespace by the owner reference; one kept under `Retain` has none, and
// keeps its maps whole).
impl Slim for Namespace {
    const FOLD_MAPS: bool = true;
}

// A volume claim keeps what tells whether and to what it is bound, and its labels (they name its Database);
// the StatefulSet makes it and berth never applies it, so nothing dropped is compared.
impl Slim for PersistentVolumeClaim {
    fn slim(&mut self) -> Option<u64> {
        self.spec = self.spec.take().map(|s| PersistentVolumeClaimSpec {
            volume_name: s.volume_name,
            ..PersistentVolumeClaimSpec::default()
        });
        self.status = self.status.take().map(|s| PersistentVolumeClaimStatus {
            phase: s.phase,
            ..PersistentVolumeClaimStatus::default()
        });
        None
    }
}

// Kept whole: a Job's state is read back.
impl Slim for Job {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::core::v1::{Container, PodSpec, PodTemplateSpec};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;

    use kube::ResourceExt;

    use super::*;

    fn pool(image: &str) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                template: PodTemplateSpec {
                    spec: Some(PodSpec {
                        containers: vec![Container {
                            name: "pgbouncer".to_owned(),
                            image: Some(image.to_owned()),
                            ..Container::default()
                        }],
                        ..PodSpec::default()
                    }),
                    ..PodTemplateSpec::default()
                },
                ..DeploymentSpec::default()
            }),
            ..Deployment::default()
        }
    }

    #[test]
    fn a_cached_workload_keeps_its_replicas_and_a_digest_that_tells_templates_apart() {
        let (a, b, a2) = (
            Cached::new(pool("pgbouncer:1")),
            Cached::new(pool("pgbouncer:2")),
            Cached::new(pool("pgbouncer:1")),
        );
        let spec = a.object().spec.unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.template, PodTemplateSpec::default(), "template dropped");
        assert!(a.digest().is_some());
        assert_eq!(a.digest(), a2.digest(), "same template, same digest");
        assert_ne!(a.digest(), b.digest(), "an edited template shows in the digest");
        assert_eq!(
            a.annotations(),
            &BTreeMap::new(),
            "the object itself carries no marker"
        );
        let seen = serde_json::to_value(&a).unwrap();
        assert_eq!(seen["digest"].as_u64(), a.digest(), "fingerprints see the digest");
    }

    fn labelled(labels: &[(&str, &str)], owned: bool) -> Service {
        let mut s = Service::default();
        s.metadata.labels = Some(
            labels
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        );
        s.metadata.annotations = Some(BTreeMap::from([("note".to_owned(), "x".to_owned())]));
        if owned {
            s.metadata.owner_references = Some(vec![OwnerReference {
                controller: Some(true),
                ..OwnerReference::default()
            }]);
        }
        s
    }

    /// The view reads back as the object `Slim` left, and its JSON is that object's, for every kind.
    fn reads_back<K>(object: K)
    where
        K: Slim
            + Resource<DynamicType = ()>
            + Serialize
            + DeserializeOwned
            + Clone
            + PartialEq
            + std::fmt::Debug,
    {
        let mut slimmed = object.clone();
        let _ = slimmed.slim();
        let view = Cached::new(object);
        let mut back = view.object();
        back.meta_mut().labels.clone_from(&slimmed.meta().labels);
        back.meta_mut()
            .annotations
            .clone_from(&slimmed.meta().annotations);
        assert_eq!(back, slimmed);
        let mut value = view.value();
        value["metadata"] = serde_json::to_value(slimmed.meta()).unwrap();
        assert_eq!(value, serde_json::to_value(&slimmed).unwrap());
    }

    #[test]
    fn every_view_reads_back_as_the_object_its_kind_keeps() {
        use k8s_openapi::api::apps::v1::StatefulSetStatus;
        use k8s_openapi::api::networking::v1::NetworkPolicyIngressRule;
        let mut server = StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                service_name: Some("db".to_owned()),
                volume_claim_templates: Some(vec![PersistentVolumeClaim::default()]),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                replicas: 1,
                ready_replicas: Some(1),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        };
        server.metadata = labelled(&[("app", "server")], true).metadata;
        server.metadata.name = Some("db".to_owned());
        reads_back(server);
        reads_back(pool("pgbouncer:1"));
        reads_back(labelled(&[("app", "pool")], true));
        reads_back(labelled(&[("app", "pool")], false));
        reads_back(NetworkPolicy {
            spec: Some(NetworkPolicySpec {
                ingress: Some(vec![NetworkPolicyIngressRule::default()]),
                ..NetworkPolicySpec::default()
            }),
            ..NetworkPolicy::default()
        });
        reads_back(Namespace::default());
        reads_back(ConfigMap::default());
        reads_back(Job::default());
    }

    #[test]
    fn folded_labels_are_compared_only_for_the_keys_asked_about() {
        let ours = [("berth.dev/customer", "acme"), ("app", "pool")];
        let a = Cached::new(labelled(&ours, true));
        let theirs = Cached::new(labelled(&[ours[0], ours[1], ("added", "by-hand")], true));
        let edited = Cached::new(labelled(&[ours[0], ("app", "server")], true));
        assert_eq!(a.labels(), &BTreeMap::new(), "an owned child keeps no label map");
        assert_eq!(a.annotations(), &BTreeMap::new());
        let keys: BTreeMap<String, String> = ours
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(a.labels_within(Some(&keys)).len(), 2);
        assert_eq!(
            a.labels_within(Some(&keys)),
            theirs.labels_within(Some(&keys)),
            "a label someone else added is not one berth asks about"
        );
        assert_ne!(
            a.labels_within(Some(&keys)),
            edited.labels_within(Some(&keys)),
            "an edited value of berth's label shows"
        );
        assert_eq!(a.labels_within(None), vec![]);
        assert_eq!(a.annotations_within(None), vec![]);
        let note = BTreeMap::from([("note".to_owned(), String::new())]);
        assert_eq!(a.annotations_within(Some(&note)).len(), 1);
    }

    #[test]
    fn folded_labels_give_back_the_desired_entries_the_object_has() {
        let c = Cached::new(labelled(&[("berth.dev/customer", "acme"), ("app", "pool")], true));
        let mut desired = labelled(
            &[("berth.dev/customer", "acme"), ("app", "server"), ("new", "x")],
            true,
        );
        desired.metadata.annotations = None;
        let meta = c.meta_against(&desired.metadata);
        assert_eq!(
            meta.labels,
            Some(BTreeMap::from([(
                "berth.dev/customer".to_owned(),
                "acme".to_owned()
            )])),
            "the same value only"
        );
        assert_eq!(meta.annotations, None, "nothing asked about");
        let unowned = Cached::new(labelled(&[("app", "pool")], false));
        assert_eq!(
            unowned
                .meta_against(&desired.metadata)
                .labels
                .as_ref()
                .map(BTreeMap::len),
            Some(1),
            "kept whole, as it is"
        );
    }

    #[test]
    fn a_child_no_owner_controls_keeps_its_labels_and_annotations() {
        let labels = [
            ("berth.dev/customer", "acme"),
            ("app.kubernetes.io/managed-by", "berth"),
        ];
        let c = Cached::new(labelled(&labels, false));
        assert_eq!(c.labels().len(), 2, "what tells berth's from someone else's");
        assert_eq!(c.annotations().len(), 1);
    }

    #[test]
    fn a_workload_view_keeps_what_the_status_reads_and_digests_the_rest() {
        use k8s_openapi::api::apps::v1::StatefulSetStatus;
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let server = |service: &str| StatefulSet {
            spec: Some(StatefulSetSpec {
                replicas: Some(1),
                service_name: Some(service.to_owned()),
                selector: LabelSelector::default(),
                volume_claim_templates: Some(vec![PersistentVolumeClaim::default()]),
                ..StatefulSetSpec::default()
            }),
            status: Some(StatefulSetStatus {
                replicas: 1,
                ready_replicas: Some(1),
                observed_generation: Some(3),
                current_revision: Some("server-abc".to_owned()),
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        };
        let (a, b) = (Cached::new(server("db")), Cached::new(server("other")));
        let spec = a.object().spec.unwrap();
        assert_eq!(spec.replicas, Some(1));
        assert_eq!(spec.volume_claim_templates.as_ref().map(Vec::len), Some(1));
        assert_eq!(spec.service_name, None);
        let status = a.object().status.unwrap();
        assert_eq!(
            (status.ready_replicas, status.observed_generation),
            (Some(1), Some(3))
        );
        assert_eq!(status.current_revision, None);
        assert_ne!(a.digest(), b.digest(), "another service name shows in the digest");
    }

    #[test]
    fn a_claim_view_keeps_its_binding_and_labels() {
        use k8s_openapi::api::core::v1::VolumeResourceRequirements;
        let claim = PersistentVolumeClaim {
            metadata: ObjectMeta {
                labels: Some(BTreeMap::from([("app".to_owned(), "server".to_owned())])),
                ..ObjectMeta::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                volume_name: Some("pv-1".to_owned()),
                resources: Some(VolumeResourceRequirements::default()),
                ..PersistentVolumeClaimSpec::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some("Bound".to_owned()),
                access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
                ..PersistentVolumeClaimStatus::default()
            }),
        };
        let c = Cached::new(claim);
        let spec = c.object().spec.unwrap();
        assert_eq!(spec.volume_name.as_deref(), Some("pv-1"));
        assert_eq!(spec.resources, None);
        let status = c.object().status.unwrap();
        assert_eq!(status.phase.as_deref(), Some("Bound"));
        assert_eq!(status.access_modes, None);
        assert_eq!(c.labels().len(), 1, "the labels name its Database");
    }

    #[test]
    fn a_policy_view_keeps_whether_it_has_ingress_rules_and_tells_rules_apart() {
        use k8s_openapi::api::networking::v1::{NetworkPolicyIngressRule, NetworkPolicyPort};
        let rule = |port: i32| NetworkPolicyIngressRule {
            ports: Some(vec![NetworkPolicyPort {
                port: Some(k8s_openapi::apimachinery::pkg::util::intstr::IntOrString::Int(
                    port,
                )),
                ..NetworkPolicyPort::default()
            }]),
            ..NetworkPolicyIngressRule::default()
        };
        let np = |types: &str, ingress: Option<Vec<NetworkPolicyIngressRule>>| NetworkPolicy {
            spec: Some(NetworkPolicySpec {
                ingress,
                policy_types: Some(vec![types.to_owned()]),
                ..NetworkPolicySpec::default()
            }),
            ..NetworkPolicy::default()
        };
        let rules = |c: &Cached<NetworkPolicy>| c.object().spec.unwrap().ingress;
        let two = Cached::new(np("Ingress", Some(vec![rule(5432), rule(6432)])));
        assert_eq!(rules(&two), Some(vec![NetworkPolicyIngressRule::default()]));
        assert_eq!(two.object().spec.and_then(|s| s.policy_types), None);
        let other = Cached::new(np("Ingress", Some(vec![rule(5432)])));
        assert_ne!(two.digest(), other.digest(), "rules are compared by the digest");
        assert_ne!(
            other.digest(),
            Cached::new(np("Egress", Some(vec![rule(5432)]))).digest()
        );
        assert_eq!(rules(&Cached::new(np("Ingress", None))), None);
        assert_eq!(rules(&Cached::new(np("Ingress", Some(vec![])))), None);
    }

    #[test]
    fn a_cached_binding_keeps_no_subjects_but_tells_them_apart() {
        use k8s_openapi::api::rbac::v1::{RoleRef, Subject};
        let binding = |user: &str| RoleBinding {
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "ClusterRole".to_owned(),
                name: "admin".to_owned(),
            },
            subjects: Some(vec![Subject {
                kind: "User".to_owned(),
                name: user.to_owned(),
                ..Subject::default()
            }]),
            ..RoleBinding::default()
        };
        let (a, b, a2) = (
            Cached::new(binding("ann")),
            Cached::new(binding("bob")),
            Cached::new(binding("ann")),
        );
        assert_eq!(a.object().subjects, None, "subjects dropped");
        assert_eq!(a.object().role_ref.name, "", "role dropped");
        assert_eq!(a.digest(), a2.digest());
        assert_ne!(a.digest(), b.digest(), "another subject shows in the digest");
    }

    #[test]
    fn a_slimmed_config_map_keeps_no_data_but_tells_contents_apart() {
        let cm = |v: &str| ConfigMap {
            data: Some(BTreeMap::from([("pgbouncer.ini".to_owned(), v.to_owned())])),
            ..ConfigMap::default()
        };
        let (a, b) = (
            Cached::new(cm("pool_mode = transaction")),
            Cached::new(cm("pool_mode = session")),
        );
        assert_eq!(a.object().data, None);
        assert_ne!(a.digest(), b.digest());
    }
}
