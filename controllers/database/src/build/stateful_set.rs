//! The PostgreSQL server: one replica with its volume (the pod is in `server_pod`).

use std::collections::BTreeMap;

use berth_api::DeletionPolicy;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodTemplateSpec, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::Inputs;
use super::server_pod::pod;
use crate::names::{self, DATA_VOLUME};

pub(super) fn server(inputs: &Inputs<'_>) -> StatefulSet {
    let name = names::server(inputs.name);
    StatefulSet {
        metadata: inputs.meta(name.clone(), names::SERVER_COMPONENT),
        spec: Some(StatefulSetSpec {
            replicas: Some(inputs.replicas(1)),
            service_name: Some(name),
            selector: inputs.label_selector(names::SERVER_COMPONENT),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(inputs.labels(names::SERVER_COMPONENT)),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod(inputs)),
            },
            volume_claim_templates: Some(claims(inputs)),
            persistent_volume_claim_retention_policy: Some(retention(inputs.db.spec.deletion_policy)),
            ..StatefulSetSpec::default()
        }),
        ..StatefulSet::default()
    }
}

/// Volumes follow `deletionPolicy` when the Database goes; scaling to zero (suspend) never deletes them.
fn retention(policy: DeletionPolicy) -> StatefulSetPersistentVolumeClaimRetentionPolicy {
    let when_deleted = match policy {
        DeletionPolicy::Retain => "Retain",
        DeletionPolicy::Delete => "Delete",
    };
    StatefulSetPersistentVolumeClaimRetentionPolicy {
        when_deleted: Some(when_deleted.to_owned()),
        when_scaled: Some("Retain".to_owned()),
    }
}

/// A StatefulSet's claim templates cannot change, so a server created with other ones keeps them. When they
/// say what berth would build, berth's own template is applied: the server's copy carries defaults
/// (`volumeMode`, `status`) that would make every reconcile's desired state look new.
fn claims(inputs: &Inputs<'_>) -> Vec<PersistentVolumeClaim> {
    let wanted = claim(inputs);
    match inputs.existing_claims {
        Some(existing) if !matches!(existing, [one] if same_claim(one, &wanted)) => existing.to_vec(),
        _ => vec![wanted],
    }
}

/// Equal in what berth sets.
fn same_claim(a: &PersistentVolumeClaim, b: &PersistentVolumeClaim) -> bool {
    let set = |c: &PersistentVolumeClaim| {
        let spec = c.spec.clone().unwrap_or_default();
        (
            c.metadata.name.clone(),
            c.metadata.labels.clone(),
            spec.access_modes,
            spec.storage_class_name,
            spec.resources.and_then(|r| r.requests),
        )
    };
    set(a) == set(b)
}

fn claim(inputs: &Inputs<'_>) -> PersistentVolumeClaim {
    let spec = &inputs.db.spec;
    PersistentVolumeClaim {
        metadata: ObjectMeta {
            name: Some(DATA_VOLUME.to_owned()),
            labels: Some(inputs.labels(names::SERVER_COMPONENT)),
            ..ObjectMeta::default()
        },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".to_owned()]),
            storage_class_name: spec.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_owned(), spec.storage.clone())])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, build_with, database};
    use super::*;

    fn sts_spec(yaml: &str) -> StatefulSetSpec {
        build(&database(yaml)).server.spec.unwrap()
    }

    #[test]
    fn one_replica_with_the_volume_from_the_spec() {
        let s = sts_spec("storage: 7Gi\nstorageClassName: fast-ssd\n");
        assert_eq!(s.replicas, Some(1));
        assert_eq!(s.service_name.as_deref(), Some("ledger-postgres"));
        let claims = s.volume_claim_templates.unwrap();
        let claim = claims[0].spec.as_ref().unwrap();
        assert_eq!(claim.storage_class_name.as_deref(), Some("fast-ssd"));
        assert_eq!(
            claim.resources.as_ref().unwrap().requests.as_ref().unwrap()["storage"].0,
            "7Gi"
        );
        let pod = s.template.spec.unwrap();
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        assert!(
            mounts
                .iter()
                .any(|m| m.name == "data" && m.mount_path == names::DATA_MOUNT)
        );
    }

    #[test]
    fn claim_templates_the_server_only_defaulted_give_the_same_desired_state() {
        let db = database("storage: 7Gi\n");
        let built = build(&db).server.spec.unwrap().volume_claim_templates.unwrap();
        let mut stored = built.clone();
        if let Some(spec) = stored[0].spec.as_mut() {
            spec.volume_mode = Some("Filesystem".to_owned());
        }
        stored[0].status = Some(k8s_openapi::api::core::v1::PersistentVolumeClaimStatus {
            phase: Some("Pending".to_owned()),
            ..Default::default()
        });
        let again = build_with(&db, Some(&stored))
            .server
            .spec
            .unwrap()
            .volume_claim_templates
            .unwrap();
        assert_eq!(
            again, built,
            "berth's own template, not the server's defaulted copy"
        );
    }

    #[test]
    fn existing_claim_templates_are_kept_because_they_are_immutable() {
        let db = database("storage: 7Gi\n");
        let first = build(&db).server.spec.unwrap().volume_claim_templates.unwrap();
        let grown = database("storage: 70Gi\n");
        let again = build_with(&grown, Some(&first))
            .server
            .spec
            .unwrap()
            .volume_claim_templates
            .unwrap();
        assert_eq!(again, first);
    }

    #[test]
    fn retention_follows_deletion_policy_and_scaling_keeps_data() {
        let keep = sts_spec("storage: 1Gi\ndeletionPolicy: Retain\n")
            .persistent_volume_claim_retention_policy
            .unwrap();
        assert_eq!(
            (keep.when_deleted.as_deref(), keep.when_scaled.as_deref()),
            (Some("Retain"), Some("Retain"))
        );
        let drop = sts_spec("storage: 1Gi\ndeletionPolicy: Delete\n")
            .persistent_volume_claim_retention_policy
            .unwrap();
        assert_eq!(
            (drop.when_deleted.as_deref(), drop.when_scaled.as_deref()),
            (Some("Delete"), Some("Retain"))
        );
    }

    #[test]
    fn suspend_scales_to_zero_and_keeps_the_volume() {
        let s = sts_spec("storage: 1Gi\nsuspend: true\n");
        assert_eq!(s.replicas, Some(0));
        assert!(s.volume_claim_templates.is_some());
        assert_eq!(
            s.persistent_volume_claim_retention_policy
                .unwrap()
                .when_scaled
                .as_deref(),
            Some("Retain")
        );
    }
}
