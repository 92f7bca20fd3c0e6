//! What the watch caches keep of each kind. A cache holds every tenant's children for the life of the
//! process, and most of a workload's bytes are its pod template, which no reconcile reads back: berth
//! only needs to know whether the template is still what it applied. So a cache holds a [`Cached`] view:
//! the object without those parts, and a digest of them. [`crate::Context`] views what it applies the same
//! way before comparing it with the cache, so a change to a dropped part still changes the digest, and
//! drift is still seen and repaired. A view is never applied or sent anywhere.

use std::borrow::Cow;
use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, PodTemplateSpec, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;
use serde::Serialize;

/// Drops, in place, what the caches need not keep of an object.
pub trait Slim {
    /// Returns a digest of what was dropped when that is worth comparing later (`None`: nothing was, or
    /// only parts another controller owns, such as status).
    fn slim(&mut self) -> Option<String> {
        None
    }
}

/// A cache's view of a `K`: the object as [`Slim`] leaves it, and the digest of what it dropped. It reads
/// as the object (`Deref`), and has the object's identity (`Resource`), so owner and label mappings work on
/// it unchanged.
#[derive(Clone, Debug)]
pub struct Cached<K> {
    object: K,
    digest: Option<String>,
}

impl<K: Slim> Cached<K> {
    #[must_use]
    pub fn new(mut object: K) -> Self {
        let digest = object.slim();
        Self { object, digest }
    }
}

impl<K> Cached<K> {
    /// The digest of the parts the cache does not keep.
    #[must_use]
    pub fn digest(&self) -> Option<&str> {
        self.digest.as_deref()
    }
}

impl<K> std::ops::Deref for Cached<K> {
    type Target = K;

    fn deref(&self) -> &K {
        &self.object
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
        self.object.meta()
    }

    fn meta_mut(&mut self) -> &mut ObjectMeta {
        self.object.meta_mut()
    }
}

/// A view of the object as read, as the watch delivers it.
impl<'de, K: serde::Deserialize<'de> + Slim> serde::Deserialize<'de> for Cached<K> {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        K::deserialize(deserializer).map(Self::new)
    }
}

/// As the object, with the digest beside its fields: what the watch filters' fingerprints hash.
impl<K: Serialize> Serialize for Cached<K> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut value = serde_json::to_value(&self.object).map_err(serde::ser::Error::custom)?;
        if let (Some(map), Some(d)) = (value.as_object_mut(), &self.digest) {
            map.insert("digest".to_owned(), serde_json::Value::String(d.clone()));
        }
        value.serialize(serializer)
    }
}

fn digest(parts: &impl Serialize) -> String {
    let mut h = DefaultHasher::new();
    serde_json::to_string(parts).unwrap_or_default().hash(&mut h);
    format!("{:016x}", h.finish())
}

fn slim_template(template: &mut PodTemplateSpec) -> String {
    let d = digest(template);
    *template = PodTemplateSpec::default();
    d
}

impl Slim for StatefulSet {
    fn slim(&mut self) -> Option<String> {
        self.spec.as_mut().map(|s| slim_template(&mut s.template))
    }
}

impl Slim for Deployment {
    fn slim(&mut self) -> Option<String> {
        self.spec.as_mut().map(|s| slim_template(&mut s.template))
    }
}

impl Slim for ConfigMap {
    fn slim(&mut self) -> Option<String> {
        Some(digest(&(self.data.take(), self.binary_data.take())))
    }
}

// Status no controller reads: usage counted by the quota controller, disruption and load-balancer state.
impl Slim for ResourceQuota {
    fn slim(&mut self) -> Option<String> {
        self.status = None;
        None
    }
}

impl Slim for PodDisruptionBudget {
    fn slim(&mut self) -> Option<String> {
        self.status = None;
        None
    }
}

impl Slim for Service {
    fn slim(&mut self) -> Option<String> {
        self.status = None;
        None
    }
}

// A Secret berth compares is one it reads by name (it caches none), and its values need not outlive that
// comparison; the credentials berth reads back are read as a plain Secret, not this view.
impl Slim for Secret {
    fn slim(&mut self) -> Option<String> {
        Some(digest(&(self.data.take(), self.string_data.take())))
    }
}

// Guard rails berth only compares with what it applies: one of each per tenant, for the life of the process.
impl Slim for LimitRange {
    fn slim(&mut self) -> Option<String> {
        Some(digest(&self.spec.take()))
    }
}

impl Slim for RoleBinding {
    fn slim(&mut self) -> Option<String> {
        let role = std::mem::take(&mut self.role_ref);
        Some(digest(&(role, self.subjects.take())))
    }
}

// Kept whole: small, or read back (a namespace's phase, a Job's state, a volume claim's binding, the rules
// of a policy berth keeps rule-free).
impl Slim for PersistentVolumeClaim {}
impl Slim for Namespace {}
impl Slim for NetworkPolicy {}
impl Slim for Job {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

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
        let spec = a.spec.as_ref().unwrap();
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
        assert_eq!(seen["digest"].as_str(), a.digest(), "fingerprints see the digest");
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
        assert_eq!(a.subjects, None, "subjects dropped");
        assert_eq!(a.role_ref.name, "", "role dropped");
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
        assert_eq!(a.data, None);
        assert_ne!(a.digest(), b.digest());
    }
}
