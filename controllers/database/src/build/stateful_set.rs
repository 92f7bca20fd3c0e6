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
use berth_kit::labels::{ISOLATION, POOL_ONLY};

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
                    labels: Some(server_pod_labels(inputs)),
                    // PostgreSQL reads its certificate at start: a renewed one (yearly) restarts it.
                    annotations: Some(BTreeMap::from([(
                        names::TLS_HASH_ANNOTATION.to_owned(),
                        crate::tls::cert_hash(&inputs.tls.server_cert),
                    )])),
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

/// The server's pods are reached through the pool only: the tenant namespace's policies let only pool
/// pods in to pods with this isolation label (see the Customer controller's network policies), so an app
/// cannot bypass the pool's connection limits.
fn server_pod_labels(inputs: &Inputs<'_>) -> std::collections::BTreeMap<String, String> {
    let mut labels = inputs.labels(names::SERVER_COMPONENT);
    labels.insert(ISOLATION.to_owned(), POOL_ONLY.to_owned());
    labels
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
mod tests;
