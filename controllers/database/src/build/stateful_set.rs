//! The PostgreSQL server: one replica with its volume.

use std::collections::BTreeMap;

use berth_api::DeletionPolicy;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Probe, ResourceRequirements,
    SecretKeySelector, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use super::{Inputs, POSTGRES_UID, container_security, pod_security};
use crate::credentials::{
    APP_PASSWORD_KEY, APP_USER_KEY, DATABASE_KEY, SUPERUSER_KEY, SUPERUSER_PASSWORD_KEY,
};
use crate::names;

const DATA_VOLUME: &str = "data";

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

fn pod(inputs: &Inputs<'_>) -> PodSpec {
    let spec = &inputs.db.spec;
    let image = spec
        .image
        .clone()
        .unwrap_or_else(|| inputs.settings.postgres_image.clone());
    let secret = names::credentials(inputs.name);
    let from_secret = |env: &str, key: &str| EnvVar {
        name: env.to_owned(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.clone(),
                key: key.to_owned(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let value = |env: &str, value: &str| EnvVar {
        name: env.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    };
    let ready = pg_isready(&inputs.credentials.superuser);
    let container = Container {
        name: "postgres".to_owned(),
        image: Some(image),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".to_owned()),
            container_port: i32::from(names::PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        env: Some(vec![
            from_secret("POSTGRES_USER", SUPERUSER_KEY),
            from_secret("POSTGRES_PASSWORD", SUPERUSER_PASSWORD_KEY),
            from_secret("POSTGRES_DB", DATABASE_KEY),
            from_secret("APP_USER", APP_USER_KEY),
            from_secret("APP_PASSWORD", APP_PASSWORD_KEY),
            value("POSTGRES_HOST_AUTH_METHOD", "scram-sha-256"),
            value("PGDATA", names::PGDATA),
        ]),
        readiness_probe: Some(Probe {
            initial_delay_seconds: Some(5),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(3),
            ..ready.clone()
        }),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(30),
            period_seconds: Some(10),
            timeout_seconds: Some(5),
            failure_threshold: Some(6),
            ..ready
        }),
        resources: Some(spec.resources.clone().unwrap_or_else(default_resources)),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, names::DATA_MOUNT, false),
            mount("run", "/var/run/postgresql", false),
            mount("tmp", "/tmp", false),
            mount("init", names::INIT_MOUNT, true),
        ]),
        ..Container::default()
    };
    PodSpec {
        containers: vec![container],
        security_context: Some(pod_security(POSTGRES_UID)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        volumes: Some(vec![
            empty_dir("run"),
            empty_dir("tmp"),
            Volume {
                name: "init".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::server_init(inputs.name),
                    default_mode: Some(0o555),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

/// `pg_isready` over TCP: false while the image's first-start server listens on its socket only.
fn pg_isready(user: &str) -> Probe {
    let command = [
        "pg_isready",
        "--host",
        "127.0.0.1",
        "--port",
        &names::PORT.to_string(),
        "--username",
        user,
    ]
    .map(str::to_owned)
    .to_vec();
    Probe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        ..Probe::default()
    }
}

fn default_resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("250m")),
            ("memory".to_owned(), q("512Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("1Gi"))])),
        ..ResourceRequirements::default()
    }
}

pub(super) fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

pub(super) fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
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
    fn image_from_settings_unless_the_spec_names_one() {
        let default = sts_spec("storage: 1Gi\n").template.spec.unwrap();
        assert_eq!(default.containers[0].image.as_deref(), Some("postgres:17-alpine"));
        let own = sts_spec("storage: 1Gi\nimage: registry.example/pg:16\n")
            .template
            .spec
            .unwrap();
        assert_eq!(own.containers[0].image.as_deref(), Some("registry.example/pg:16"));
    }

    #[test]
    fn probes_ask_pg_isready() {
        let pod = sts_spec("storage: 1Gi\n").template.spec.unwrap();
        let c = &pod.containers[0];
        for probe in [
            c.readiness_probe.as_ref().unwrap(),
            c.liveness_probe.as_ref().unwrap(),
        ] {
            let cmd = probe.exec.as_ref().unwrap().command.clone().unwrap();
            assert_eq!(cmd[0], "pg_isready");
            assert!(cmd.contains(&"postgres".to_owned()));
        }
        assert!(
            c.liveness_probe.as_ref().unwrap().initial_delay_seconds
                > c.readiness_probe.as_ref().unwrap().initial_delay_seconds
        );
    }

    #[test]
    fn restricted_security_with_writable_scratch_only() {
        let pod = sts_spec("storage: 1Gi\n").template.spec.unwrap();
        let p = pod.security_context.unwrap();
        assert_eq!(
            (p.run_as_non_root, p.run_as_user, p.fs_group),
            (Some(true), Some(70), Some(70))
        );
        assert_eq!(p.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let c = pod.containers[0].security_context.clone().unwrap();
        assert_eq!(c.allow_privilege_escalation, Some(false));
        assert_eq!(c.read_only_root_filesystem, Some(true));
        assert_eq!(c.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
        let mounts = pod.containers[0].volume_mounts.clone().unwrap();
        for path in ["/var/run/postgresql", "/tmp"] {
            let m = mounts.iter().find(|m| m.mount_path == path).unwrap();
            let v = pod
                .volumes
                .as_ref()
                .unwrap()
                .iter()
                .find(|v| v.name == m.name)
                .unwrap();
            assert!(v.empty_dir.is_some(), "{path}");
        }
    }

    #[test]
    fn env_comes_from_the_credentials_secret_and_pgdata_is_below_the_mount() {
        let pod = sts_spec("storage: 1Gi\n").template.spec.unwrap();
        let env = pod.containers[0].env.clone().unwrap();
        let pw = env.iter().find(|e| e.name == "POSTGRES_PASSWORD").unwrap();
        let sel = pw.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
        assert_eq!(
            (sel.name.as_str(), sel.key.as_str()),
            ("ledger-credentials", SUPERUSER_PASSWORD_KEY)
        );
        assert!(
            env.iter().all(|e| e.value.as_deref() != Some(&"A".repeat(32))),
            "no password inline"
        );
        let pgdata = env
            .iter()
            .find(|e| e.name == "PGDATA")
            .unwrap()
            .value
            .clone()
            .unwrap();
        assert!(pgdata.starts_with(&format!("{}/", names::DATA_MOUNT)));
    }

    #[test]
    fn resources_from_spec_or_defaults() {
        let pod = sts_spec("storage: 1Gi\n").template.spec.unwrap();
        assert_eq!(pod.containers[0].resources, Some(default_resources()));
        let own = sts_spec("storage: 1Gi\nresources:\n  requests:\n    cpu: '2'\n")
            .template
            .spec
            .unwrap();
        assert_eq!(
            own.containers[0].resources.clone().unwrap().requests.unwrap()["cpu"].0,
            "2"
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
