//! The pgbouncer pool.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy, RollingUpdateDeployment};
use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, ExecAction, Lifecycle, LifecycleHandler, PodSpec,
    PodTemplateSpec, Probe, ResourceRequirements, SecretVolumeSource, TCPSocketAction,
    TopologySpreadConstraint, Volume,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::{Inputs, POOL_UID, container_security, empty_dir, mount, pod_security, tls_volume};
use crate::names;
use crate::tls::{POOL_CERT_KEY, POOL_KEY_KEY};

/// Seconds a stopping pool pod keeps serving after it left the Service's endpoints, so that clients which
/// picked it just before still get their transaction through.
const DRAIN_SECONDS: u32 = 10;
/// Then pgbouncer's safe shutdown ([`crate::pgbouncer::SUPERVISOR`]) has this long before the kubelet kills the pod.
const SHUTDOWN_SECONDS: i64 = 30;

/// `hash` is [`crate::pgbouncer::config_hash`] of the files the pods mount: a new hash rolls them.
pub(super) fn pool(inputs: &Inputs<'_>, hash: &str) -> Deployment {
    let replicas = inputs.replicas(inputs.db.spec.pool.replicas);
    Deployment {
        metadata: inputs.meta(names::pool(inputs.name), names::POOL_COMPONENT),
        spec: Some(DeploymentSpec {
            replicas: Some(replicas),
            selector: inputs.label_selector(names::POOL_COMPONENT),
            // A new pod must be ready before an old one goes: the pool never loses capacity in a rollout.
            strategy: Some(DeploymentStrategy {
                type_: Some("RollingUpdate".to_owned()),
                rolling_update: Some(RollingUpdateDeployment {
                    max_unavailable: Some(IntOrString::Int(0)),
                    max_surge: Some(IntOrString::Int(1)),
                }),
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(inputs.labels(names::POOL_COMPONENT)),
                    annotations: Some(BTreeMap::from([(
                        names::CONFIG_HASH_ANNOTATION.to_owned(),
                        hash.to_owned(),
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod(inputs)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    }
}

fn pod(inputs: &Inputs<'_>) -> PodSpec {
    let tcp = Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(i32::from(names::PORT)),
            ..TCPSocketAction::default()
        }),
        ..Probe::default()
    };
    let container = Container {
        name: "pgbouncer".to_owned(),
        image: Some(inputs.settings.pgbouncer_image.clone()),
        // The image's own entrypoint (which would write a config from environment variables) is bypassed:
        // pgbouncer, from PATH (`/usr/bin` in CloudNativePG's image, `/usr/sbin` in Debian's package),
        // reads exactly the rendered file, under a shell that turns the kubelet's SIGTERM into a safe
        // shutdown and a changed userlist into a reload (see [`crate::pgbouncer::SUPERVISOR`]).
        command: Some(vec![
            "sh".to_owned(),
            "-c".to_owned(),
            crate::pgbouncer::SUPERVISOR.to_owned(),
            "pgbouncer".to_owned(),
            format!("{}/{}", names::POOL_CONFIG_DIR, names::INI_KEY),
            format!("{}/{}", names::POOL_AUTH_DIR, names::USERLIST_KEY),
        ]),
        ports: Some(vec![ContainerPort {
            name: Some("pgbouncer".to_owned()),
            container_port: i32::from(names::PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
        readiness_probe: Some(Probe {
            period_seconds: Some(5),
            failure_threshold: Some(2),
            ..tcp.clone()
        }),
        liveness_probe: Some(Probe {
            initial_delay_seconds: Some(10),
            period_seconds: Some(10),
            failure_threshold: Some(6),
            ..tcp
        }),
        // A pod being stopped is taken out of the Service's endpoints at once, but clients (and kube-proxy)
        // learn that a moment later: keep serving for a while before the kubelet's SIGTERM.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(vec!["sleep".to_owned(), DRAIN_SECONDS.to_string()]),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(resources()),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            mount("config", names::POOL_CONFIG_DIR, true),
            mount("auth", names::POOL_AUTH_DIR, true),
            mount("tls", names::POOL_TLS_DIR, true),
            mount("tmp", "/tmp", false),
        ]),
        ..Container::default()
    };
    PodSpec {
        containers: vec![container],
        termination_grace_period_seconds: Some(i64::from(DRAIN_SECONDS) + SHUTDOWN_SECONDS),
        security_context: Some(pod_security(POOL_UID)),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        // Spread over nodes so a node drain or failure leaves the pool reachable; `ScheduleAnyway`
        // still lets a one-node cluster run every replica.
        topology_spread_constraints: Some(vec![TopologySpreadConstraint {
            max_skew: 1,
            topology_key: "kubernetes.io/hostname".to_owned(),
            when_unsatisfiable: "ScheduleAnyway".to_owned(),
            label_selector: Some(inputs.label_selector(names::POOL_COMPONENT)),
            match_label_keys: Some(vec!["pod-template-hash".to_owned()]),
            ..TopologySpreadConstraint::default()
        }]),
        volumes: Some(vec![
            Volume {
                name: "config".to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::pool(inputs.name),
                    default_mode: Some(0o444),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
            Volume {
                name: "auth".to_owned(),
                secret: Some(SecretVolumeSource {
                    secret_name: Some(names::pool_auth(inputs.name)),
                    // Readable by the pod's group (fsGroup) only.
                    default_mode: Some(0o440),
                    ..SecretVolumeSource::default()
                }),
                ..Volume::default()
            },
            tls_volume(inputs, POOL_CERT_KEY, POOL_KEY_KEY),
            empty_dir("tmp"),
        ]),
        ..PodSpec::default()
    }
}

fn resources() -> ResourceRequirements {
    let q = |s: &str| Quantity(s.to_owned());
    ResourceRequirements {
        requests: Some(BTreeMap::from([
            ("cpu".to_owned(), q("50m")),
            ("memory".to_owned(), q("32Mi")),
        ])),
        limits: Some(BTreeMap::from([("memory".to_owned(), q("128Mi"))])),
        ..ResourceRequirements::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, database};
    use super::*;

    fn hash_of(yaml: &str) -> String {
        let d = build(&database(yaml)).pool;
        d.spec.unwrap().template.metadata.unwrap().annotations.unwrap()[names::CONFIG_HASH_ANNOTATION].clone()
    }

    #[test]
    fn config_hash_follows_the_rendered_config_only() {
        let base = hash_of("storage: 1Gi\npool:\n  defaultPoolSize: 20\n");
        assert_eq!(base.len(), 16);
        assert_ne!(
            base,
            hash_of("storage: 1Gi\npool:\n  defaultPoolSize: 21\n"),
            "pool size is in the ini"
        );
        assert_ne!(base, hash_of("storage: 1Gi\npool:\n  mode: session\n"));
        for unrelated in [
            "storage: 1Gi\npool:\n  replicas: 5\n",
            "storage: 9Gi\n",
            "storage: 1Gi\nsuspend: true\n",
            "storage: 1Gi\ndeletionPolicy: Delete\n",
            "storage: 1Gi\nimage: pg:16\n",
        ] {
            assert_eq!(base, hash_of(unrelated), "{unrelated}");
        }
    }

    #[test]
    fn replicas_rollout_and_spread() {
        let d = build(&database("storage: 1Gi\npool:\n  replicas: 3\n"))
            .pool
            .spec
            .unwrap();
        assert_eq!(d.replicas, Some(3));
        let ru = d.strategy.unwrap().rolling_update.unwrap();
        assert_eq!(
            (ru.max_unavailable, ru.max_surge),
            (Some(IntOrString::Int(0)), Some(IntOrString::Int(1)))
        );
        let pod = d.template.spec.unwrap();
        let spread = &pod.topology_spread_constraints.unwrap()[0];
        assert_eq!(spread.topology_key, "kubernetes.io/hostname");
        assert_eq!(
            spread.label_selector.as_ref().unwrap().match_labels,
            Some(d.selector.match_labels.unwrap())
        );
    }

    fn pool_pod(yaml: &str) -> PodSpec {
        build(&database(yaml)).pool.spec.unwrap().template.spec.unwrap()
    }

    #[test]
    fn a_stopping_pod_drains_then_shuts_down_safely_within_its_grace_period() {
        let pod = pool_pod("storage: 1Gi\n");
        let stop = pod.containers[0]
            .lifecycle
            .clone()
            .unwrap()
            .pre_stop
            .unwrap()
            .exec
            .unwrap();
        assert_eq!(stop.command.unwrap(), ["sleep", "10"]);
        assert!(pod.containers[0].command.as_ref().unwrap()[2].contains("trap 'kill -INT"));
        assert_eq!(
            pod.termination_grace_period_seconds,
            Some(40),
            "drain plus shutdown"
        );
    }

    #[test]
    fn suspend_scales_the_pool_to_zero() {
        let d = build(&database("storage: 1Gi\nsuspend: true\npool:\n  replicas: 3\n"))
            .pool
            .spec
            .unwrap();
        assert_eq!(d.replicas, Some(0));
    }

    #[test]
    fn pgbouncer_runs_the_mounted_ini_behind_tcp_probes() {
        let pod = pool_pod("storage: 1Gi\n");
        let c = &pod.containers[0];
        let command = c.command.clone().unwrap();
        assert_eq!(command[..2], ["sh", "-c"]);
        assert_eq!(
            command[3..],
            [
                "pgbouncer",
                "/etc/pgbouncer/config/pgbouncer.ini",
                "/etc/pgbouncer/auth/userlist.txt"
            ]
        );
        for p in [
            c.readiness_probe.as_ref().unwrap(),
            c.liveness_probe.as_ref().unwrap(),
        ] {
            assert_eq!(p.tcp_socket.as_ref().unwrap().port, IntOrString::Int(5432));
        }
        let vols = pod.volumes.unwrap();
        let cm = vols
            .iter()
            .find(|v| v.name == "config")
            .unwrap()
            .config_map
            .clone()
            .unwrap();
        assert_eq!(cm.name, "ledger-pgbouncer");
        let sec = vols
            .iter()
            .find(|v| v.name == "auth")
            .unwrap()
            .secret
            .clone()
            .unwrap();
        assert_eq!(sec.secret_name.as_deref(), Some("ledger-pgbouncer-auth"));
        let p = pod.security_context.unwrap();
        assert_eq!((p.run_as_non_root, p.run_as_user), (Some(true), Some(POOL_UID)));
        let s = c.security_context.clone().unwrap();
        assert_eq!(
            (s.allow_privilege_escalation, s.read_only_root_filesystem),
            (Some(false), Some(true))
        );
        assert!(c.resources.as_ref().unwrap().requests.is_some());
    }
}
