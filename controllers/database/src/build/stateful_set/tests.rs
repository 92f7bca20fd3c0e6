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
