//! The PostgreSQL pod: an init container that bootstraps the data directory with berth's own script,
//! then `postgres` itself. No image entrypoint is involved, so any image with the server binaries works.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{
    ConfigMapVolumeSource, Container, ContainerPort, EmptyDirVolumeSource, EnvVar, EnvVarSource, ExecAction,
    Lifecycle, LifecycleHandler, PodSpec, Probe, ResourceRequirements, SecretKeySelector, Volume,
    VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;

use super::{Inputs, POSTGRES_UID, container_security, empty_dir, mount, pod_security, tls_volume};
use crate::credentials::{
    APP_PASSWORD_KEY, APP_USER_KEY, DATABASE_KEY, SUPERUSER_KEY, SUPERUSER_PASSWORD_KEY,
};
use crate::names::{self, DATA_VOLUME};
use crate::postgres::{self, env};
use crate::tls::{SERVER_CERT_KEY, SERVER_KEY_KEY};

/// The bootstrap ConfigMap ([`names::server_init`]): script and `/etc/passwd`.
const BOOTSTRAP_VOLUME: &str = "bootstrap";
/// The init container's private scratch space: the bootstrap server's socket and configuration.
const SCRATCH_VOLUME: &str = "bootstrap-scratch";

pub(super) fn pod(inputs: &Inputs<'_>) -> PodSpec {
    let resources = inputs.db.spec.resources.clone().unwrap_or_else(default_resources);
    PodSpec {
        init_containers: Some(vec![bootstrap(inputs, resources.clone())]),
        containers: vec![server(inputs, resources)],
        security_context: Some(pod_security(POSTGRES_UID)),
        // A fast shutdown (see the preStop hook) checkpoints; give it time before the kubelet kills.
        termination_grace_period_seconds: Some(60),
        automount_service_account_token: Some(false),
        enable_service_links: Some(false),
        volumes: Some(vec![
            empty_dir("run"),
            empty_dir("tmp"),
            tls_volume(inputs, SERVER_CERT_KEY, SERVER_KEY_KEY),
            // In memory: nothing the bootstrap writes there outlives the pod or reaches a disk.
            Volume {
                name: SCRATCH_VOLUME.to_owned(),
                empty_dir: Some(EmptyDirVolumeSource {
                    medium: Some("Memory".to_owned()),
                    size_limit: Some(Quantity("16Mi".to_owned())),
                }),
                ..Volume::default()
            },
            Volume {
                name: BOOTSTRAP_VOLUME.to_owned(),
                config_map: Some(ConfigMapVolumeSource {
                    name: names::server_init(inputs.name),
                    default_mode: Some(0o444),
                    ..ConfigMapVolumeSource::default()
                }),
                ..Volume::default()
            },
        ]),
        ..PodSpec::default()
    }
}

fn image(inputs: &Inputs<'_>) -> String {
    inputs
        .db
        .spec
        .image
        .clone()
        .unwrap_or_else(|| inputs.settings.postgres_image.clone())
}

/// Runs [`postgres::bootstrap_script`] before every start of the server.
fn bootstrap(inputs: &Inputs<'_>, resources: ResourceRequirements) -> Container {
    let secret = names::credentials(inputs.name);
    let from_secret = |name: &str, key: &str| EnvVar {
        name: name.to_owned(),
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
    let mut vars = vec![
        value(env::PGDATA, names::PGDATA),
        value(env::OS_USER, postgres::OS_USER),
        from_secret(env::SUPERUSER, SUPERUSER_KEY),
        from_secret(env::SUPERUSER_PASSWORD, SUPERUSER_PASSWORD_KEY),
        from_secret(env::DATABASE, DATABASE_KEY),
        from_secret(env::APP_USER, APP_USER_KEY),
        from_secret(env::APP_PASSWORD, APP_PASSWORD_KEY),
    ];
    let bin_dir = &inputs.settings.postgres_bin_dir;
    if !bin_dir.is_empty() {
        vars.push(value(env::BIN_DIR, bin_dir));
    }
    Container {
        name: "bootstrap".to_owned(),
        image: Some(image(inputs)),
        command: Some(vec![
            "sh".to_owned(),
            format!("{}/{}", names::INIT_MOUNT, names::INIT_KEY),
        ]),
        env: Some(vars),
        resources: Some(resources),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, names::DATA_MOUNT, false),
            mount(SCRATCH_VOLUME, "/tmp", false),
            mount(BOOTSTRAP_VOLUME, names::INIT_MOUNT, true),
            passwd_mount(),
        ]),
        ..Container::default()
    }
}

/// `postgres` on the bootstrapped data directory. It needs no password: nothing secret is in its spec.
fn server(inputs: &Inputs<'_>, resources: ResourceRequirements) -> Container {
    let bin_dir = &inputs.settings.postgres_bin_dir;
    let ready = pg_isready(bin_dir, &inputs.credentials.superuser);
    let fast_stop = [
        postgres::bin(bin_dir, "pg_ctl"),
        "stop".to_owned(),
        format!("--pgdata={}", names::PGDATA),
        "--mode=fast".to_owned(),
        "--wait".to_owned(),
    ];
    Container {
        name: "postgres".to_owned(),
        image: Some(image(inputs)),
        command: Some(postgres::server_command(
            bin_dir,
            names::PGDATA,
            names::SERVER_TLS_DIR,
        )),
        env: Some(vec![value(env::PGDATA, names::PGDATA)]),
        ports: Some(vec![ContainerPort {
            name: Some("postgres".to_owned()),
            container_port: i32::from(names::PORT),
            protocol: Some("TCP".to_owned()),
            ..ContainerPort::default()
        }]),
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
        // SIGTERM is PostgreSQL's smart shutdown, which waits for every client to leave, and pgbouncer
        // never leaves: the kubelet would end it with SIGKILL and the next start would recover from the
        // WAL. A fast shutdown ends sessions and checkpoints instead.
        lifecycle: Some(Lifecycle {
            pre_stop: Some(LifecycleHandler {
                exec: Some(ExecAction {
                    command: Some(fast_stop.to_vec()),
                }),
                ..LifecycleHandler::default()
            }),
            ..Lifecycle::default()
        }),
        resources: Some(resources),
        security_context: Some(container_security()),
        volume_mounts: Some(vec![
            mount(DATA_VOLUME, names::DATA_MOUNT, false),
            mount("run", postgres::SOCKET_DIR, false),
            mount("tmp", "/tmp", false),
            mount("tls", names::SERVER_TLS_DIR, true),
            passwd_mount(),
        ]),
        ..Container::default()
    }
}

/// The pod's own `/etc/passwd` ([`postgres::passwd`]) over the image's.
fn passwd_mount() -> VolumeMount {
    VolumeMount {
        sub_path: Some(names::PASSWD_KEY.to_owned()),
        ..mount(BOOTSTRAP_VOLUME, "/etc/passwd", true)
    }
}

fn value(name: &str, value: &str) -> EnvVar {
    EnvVar {
        name: name.to_owned(),
        value: Some(value.to_owned()),
        ..EnvVar::default()
    }
}

/// `pg_isready` on the server's socket: it needs no password (a refused login still means "up").
fn pg_isready(bin_dir: &str, user: &str) -> Probe {
    let command = vec![
        postgres::bin(bin_dir, "pg_isready"),
        "--host".to_owned(),
        postgres::SOCKET_DIR.to_owned(),
        "--port".to_owned(),
        names::PORT.to_string(),
        "--username".to_owned(),
        user.to_owned(),
        "--dbname".to_owned(),
        "postgres".to_owned(),
    ];
    Probe {
        exec: Some(ExecAction {
            command: Some(command),
        }),
        ..Probe::default()
    }
}

pub(super) fn default_resources() -> ResourceRequirements {
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

#[cfg(test)]
mod tests {
    use super::super::tests::{build, build_settings, database};
    use super::*;
    use berth_kit::Settings;

    fn pod_of(yaml: &str) -> PodSpec {
        build(&database(yaml)).server.spec.unwrap().template.spec.unwrap()
    }

    fn env_of(c: &Container) -> BTreeMap<String, EnvVar> {
        c.env
            .clone()
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.name.clone(), e))
            .collect()
    }

    #[test]
    fn image_from_settings_unless_the_spec_names_one_in_both_containers() {
        let default = pod_of("storage: 1Gi\n");
        let own = pod_of("storage: 1Gi\nimage: registry.example/pg:16\n");
        for (pod, want) in [
            (default, Settings::default().postgres_image),
            (own, "registry.example/pg:16".to_owned()),
        ] {
            let init = &pod.init_containers.as_ref().unwrap()[0];
            assert_eq!(init.image.as_deref(), Some(want.as_str()));
            assert_eq!(pod.containers[0].image.as_deref(), Some(want.as_str()));
        }
    }

    #[test]
    fn bootstrap_runs_the_shipped_script_with_secrets_by_reference() {
        let pod = pod_of("storage: 1Gi\n");
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(init.command.clone().unwrap(), ["sh", "/etc/berth/bootstrap.sh"]);
        let vars = env_of(init);
        for name in env::REQUIRED {
            assert!(vars.contains_key(name), "{name}");
        }
        assert!(!vars.contains_key(env::BIN_DIR), "PATH decides by default");
        for (name, key) in [
            (env::SUPERUSER_PASSWORD, SUPERUSER_PASSWORD_KEY),
            (env::APP_PASSWORD, APP_PASSWORD_KEY),
        ] {
            let var = &vars[name];
            assert_eq!(var.value, None, "{name} is not inline");
            let sel = var.value_from.as_ref().unwrap().secret_key_ref.as_ref().unwrap();
            assert_eq!((sel.name.as_str(), sel.key.as_str()), ("ledger-credentials", key));
        }
        assert_eq!(vars[env::PGDATA].value.as_deref(), Some(names::PGDATA));
        assert!(names::PGDATA.starts_with(&format!("{}/", names::DATA_MOUNT)));
    }

    #[test]
    fn server_runs_postgres_itself_without_secrets() {
        let pod = pod_of("storage: 1Gi\n");
        let c = &pod.containers[0];
        assert_eq!(
            c.command.clone().unwrap(),
            postgres::server_command("", names::PGDATA, names::SERVER_TLS_DIR)
        );
        assert_eq!(c.args, None);
        let vars = env_of(c);
        assert_eq!(vars.keys().collect::<Vec<_>>(), [env::PGDATA]);
        let stop = c.lifecycle.as_ref().unwrap().pre_stop.as_ref().unwrap();
        assert!(
            stop.exec
                .as_ref()
                .unwrap()
                .command
                .as_ref()
                .unwrap()
                .contains(&"--mode=fast".to_owned())
        );
    }

    #[test]
    fn a_bin_dir_reaches_every_command() {
        let settings = Settings {
            postgres_bin_dir: "/opt/pg/bin".to_owned(),
            ..Settings::default()
        };
        let pod = build_settings(&database("storage: 1Gi\n"), &settings)
            .server
            .spec
            .unwrap()
            .template
            .spec
            .unwrap();
        let c = &pod.containers[0];
        assert_eq!(c.command.as_ref().unwrap()[0], "/opt/pg/bin/postgres");
        let probe = c.readiness_probe.as_ref().unwrap().exec.clone().unwrap();
        assert_eq!(probe.command.unwrap()[0], "/opt/pg/bin/pg_isready");
        let stop = c.lifecycle.clone().unwrap().pre_stop.unwrap().exec.unwrap();
        assert_eq!(stop.command.unwrap()[0], "/opt/pg/bin/pg_ctl");
        let init = &pod.init_containers.as_ref().unwrap()[0];
        assert_eq!(env_of(init)[env::BIN_DIR].value.as_deref(), Some("/opt/pg/bin"));
    }

    #[test]
    fn probes_ask_pg_isready_on_the_socket() {
        let pod = pod_of("storage: 1Gi\n");
        let c = &pod.containers[0];
        for probe in [
            c.readiness_probe.as_ref().unwrap(),
            c.liveness_probe.as_ref().unwrap(),
        ] {
            let cmd = probe.exec.as_ref().unwrap().command.clone().unwrap();
            assert_eq!(cmd[..3], ["pg_isready", "--host", postgres::SOCKET_DIR]);
            assert!(cmd.contains(&"postgres".to_owned()));
        }
        assert!(
            c.liveness_probe.as_ref().unwrap().initial_delay_seconds
                > c.readiness_probe.as_ref().unwrap().initial_delay_seconds
        );
    }

    #[test]
    fn restricted_security_with_writable_scratch_only() {
        let pod = pod_of("storage: 1Gi\n");
        let p = pod.security_context.clone().unwrap();
        assert_eq!(
            (p.run_as_non_root, p.run_as_user, p.run_as_group, p.fs_group),
            (Some(true), Some(999), Some(999), Some(999))
        );
        assert_eq!(p.seccomp_profile.unwrap().type_, "RuntimeDefault");
        let volumes = pod.volumes.clone().unwrap();
        let volume = |name: &str| volumes.iter().find(|v| v.name == name).unwrap();
        let init = &pod.init_containers.as_ref().unwrap()[0];
        for c in [init, &pod.containers[0]] {
            let s = c.security_context.clone().unwrap();
            assert_eq!(s.allow_privilege_escalation, Some(false), "{}", c.name);
            assert_eq!(s.read_only_root_filesystem, Some(true), "{}", c.name);
            assert_eq!(s.capabilities.unwrap().drop, Some(vec!["ALL".to_owned()]));
            for m in c.volume_mounts.clone().unwrap() {
                let writable = m.read_only != Some(true);
                assert_eq!(
                    writable,
                    m.name == DATA_VOLUME || volume(&m.name).empty_dir.is_some(),
                    "{}: {}",
                    c.name,
                    m.mount_path
                );
            }
            let passwd = c.volume_mounts.clone().unwrap();
            let passwd = passwd.iter().find(|m| m.mount_path == "/etc/passwd").unwrap();
            assert_eq!(passwd.sub_path.as_deref(), Some(names::PASSWD_KEY));
        }
        let scratch = init.volume_mounts.clone().unwrap();
        let scratch = scratch.iter().find(|m| m.mount_path == "/tmp").unwrap();
        assert_eq!(
            volume(&scratch.name).empty_dir.clone().unwrap().medium.as_deref(),
            Some("Memory")
        );
        assert!(
            pod.containers[0]
                .volume_mounts
                .as_ref()
                .unwrap()
                .iter()
                .all(|m| m.name != scratch.name),
            "the bootstrap's scratch space is its own"
        );
    }

    #[test]
    fn resources_from_spec_or_defaults() {
        let pod = pod_of("storage: 1Gi\n");
        assert_eq!(pod.containers[0].resources, Some(default_resources()));
        let own = pod_of("storage: 1Gi\nresources:\n  requests:\n    cpu: '2'\n");
        for c in [&own.containers[0], &own.init_containers.as_ref().unwrap()[0]] {
            assert_eq!(c.resources.clone().unwrap().requests.unwrap()["cpu"].0, "2");
        }
    }
}
