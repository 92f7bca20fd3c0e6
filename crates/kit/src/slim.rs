//! What the watch caches keep of each kind. A cache holds every tenant's children for the life of the
//! process, and most of a workload's bytes are its pod template, which no reconcile reads back: berth
//! only needs to know whether the template is still what it applied. So the template (and a ConfigMap's
//! data) is replaced by a digest of itself on the way into the cache, and [`crate::Context`] digests the
//! objects it applies the same way before comparing them with the cache. Any change to the stripped
//! parts still changes the digest, so drift is still seen and repaired.

use std::hash::{DefaultHasher, Hash, Hasher};

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::api::core::v1::{
    ConfigMap, LimitRange, Namespace, PersistentVolumeClaim, PodTemplateSpec, ResourceQuota, Secret, Service,
};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::ResourceExt;
use serde::Serialize;

/// The annotation a slimmed object carries instead of the parts it lost.
pub const DIGEST: &str = "berth.dev/cache-digest";

/// Drops, in place, what the caches need not keep of an object.
pub trait Slim {
    fn slim(&mut self) {}
}

fn digest(parts: &impl Serialize) -> String {
    let mut h = DefaultHasher::new();
    serde_json::to_string(parts).unwrap_or_default().hash(&mut h);
    format!("{:016x}", h.finish())
}

fn slim_template(owner: &mut impl ResourceExt, template: &mut PodTemplateSpec) {
    let d = digest(template);
    *template = PodTemplateSpec::default();
    owner.annotations_mut().insert(DIGEST.to_owned(), d);
}

impl Slim for StatefulSet {
    fn slim(&mut self) {
        if let Some(mut spec) = self.spec.take() {
            slim_template(self, &mut spec.template);
            self.spec = Some(spec);
        }
    }
}

impl Slim for Deployment {
    fn slim(&mut self) {
        if let Some(mut spec) = self.spec.take() {
            slim_template(self, &mut spec.template);
            self.spec = Some(spec);
        }
    }
}

impl Slim for ConfigMap {
    fn slim(&mut self) {
        let d = digest(&(self.data.take(), self.binary_data.take()));
        self.annotations_mut().insert(DIGEST.to_owned(), d);
    }
}

// Status no controller reads: usage counted by the quota controller, disruption and load-balancer state.
impl Slim for ResourceQuota {
    fn slim(&mut self) {
        self.status = None;
    }
}

impl Slim for PodDisruptionBudget {
    fn slim(&mut self) {
        self.status = None;
    }
}

impl Slim for Service {
    fn slim(&mut self) {
        self.status = None;
    }
}

// Kept whole: small, or read back (the credentials Secret's passwords, a namespace's phase, a Job's state,
// a volume claim's binding).
impl Slim for Secret {}
impl Slim for PersistentVolumeClaim {}
impl Slim for Namespace {}
impl Slim for LimitRange {}
impl Slim for NetworkPolicy {}
impl Slim for RoleBinding {}
impl Slim for Job {}
impl Slim for berth_api::Customer {}
impl Slim for berth_api::Database {}
impl Slim for berth_api::Scheduler {}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::api::apps::v1::DeploymentSpec;
    use k8s_openapi::api::core::v1::{Container, PodSpec};

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
    fn a_slimmed_workload_keeps_its_replicas_and_a_digest_that_tells_templates_apart() {
        let (mut a, mut b, mut a2) = (pool("pgbouncer:1"), pool("pgbouncer:2"), pool("pgbouncer:1"));
        for d in [&mut a, &mut b, &mut a2] {
            d.slim();
        }
        let spec = a.spec.as_ref().unwrap();
        assert_eq!(spec.replicas, Some(2));
        assert_eq!(spec.template, PodTemplateSpec::default(), "template dropped");
        let d = |x: &Deployment| x.annotations().get(DIGEST).cloned();
        assert!(d(&a).is_some());
        assert_eq!(d(&a), d(&a2), "same template, same digest");
        assert_ne!(d(&a), d(&b), "an edited template shows in the digest");
    }

    #[test]
    fn a_slimmed_config_map_keeps_no_data_but_tells_contents_apart() {
        let cm = |v: &str| ConfigMap {
            data: Some(BTreeMap::from([("pgbouncer.ini".to_owned(), v.to_owned())])),
            ..ConfigMap::default()
        };
        let (mut a, mut b) = (cm("pool_mode = transaction"), cm("pool_mode = session"));
        a.slim();
        b.slim();
        assert_eq!(a.data, None);
        assert_ne!(a.annotations().get(DIGEST), b.annotations().get(DIGEST));
    }
}
