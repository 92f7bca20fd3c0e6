//! Desired state: pure functions from a Database (plus its credentials and the operator's settings) to
//! the objects it owns. No client in sight; everything here is unit-tested.

mod config_map;
mod deployment;
mod pdb;
mod secret;
mod server_pod;
mod service;
mod stateful_set;

use std::collections::BTreeMap;

use berth_api::Database;
use berth_kit::Settings;
use berth_kit::labels::{COMPONENT, INSTANCE, MANAGED_BY, labels};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, EmptyDirVolumeSource, KeyToPath, PersistentVolumeClaim, PodSecurityContext,
    SeccompProfile, Secret, SecretVolumeSource, SecurityContext, Service, Volume, VolumeMount,
};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};

use crate::credentials::Credentials;
use crate::pgbouncer::{Endpoints, PoolConfig, config_hash, render_ini, render_userlist};
use crate::tls::{CA_CERT_KEY, CA_FILE, CERT_FILE, KEY_FILE, Tls};

/// User and group of the PostgreSQL server, whatever the image: the pod mounts its own `/etc/passwd`
/// naming this uid (see [`crate::postgres::passwd`]). 999 is `postgres` in Debian's and the official
/// images, so their files and berth's pod agree.
pub(crate) const POSTGRES_UID: i64 = 999;
/// User and group of pgbouncer: the `pgbouncer` account of the default (CloudNativePG) image. pgbouncer
/// looks no account up, so any image runs as it.
pub(crate) const POOL_UID: i64 = 998;

/// What the builders read.
pub struct Inputs<'a> {
    pub db: &'a Database,
    pub namespace: &'a str,
    pub name: &'a str,
    pub customer: &'a str,
    /// The Database as controller owner (`controller: true`, `blockOwnerDeletion: true`).
    pub owner: &'a OwnerReference,
    pub credentials: &'a Credentials,
    /// The Database's certificates, read back from their Secret or issued by this reconcile.
    pub tls: &'a Tls,
    pub settings: &'a Settings,
    /// `volumeClaimTemplates` of the StatefulSet as it exists, if it does. They are immutable, so they
    /// are sent back unchanged rather than rebuilt (a changed `storage` would otherwise fail every apply).
    pub existing_claims: Option<&'a [PersistentVolumeClaim]>,
}

/// Every object a Database owns. The applier destructures it without `..`, so a new child cannot be
/// built and then forgotten.
#[derive(Clone, Debug)]
pub struct Children {
    pub credentials: Secret,
    pub tls: Secret,
    pub server_init: ConfigMap,
    pub pool_config: ConfigMap,
    pub pool_auth: Secret,
    pub connection: Secret,
    pub server: StatefulSet,
    pub pool: Deployment,
    pub server_service: Service,
    pub pool_service: Service,
    pub pool_budget: PodDisruptionBudget,
}

impl Children {
    /// Every child's kind and metadata, in the order the controller applies them.
    pub fn metas_mut(&mut self) -> [(&'static str, &mut ObjectMeta); 11] {
        [
            ("Secret", &mut self.credentials.metadata),
            ("Secret", &mut self.tls.metadata),
            ("ConfigMap", &mut self.server_init.metadata),
            ("ConfigMap", &mut self.pool_config.metadata),
            ("Secret", &mut self.pool_auth.metadata),
            ("Secret", &mut self.connection.metadata),
            ("StatefulSet", &mut self.server.metadata),
            ("Deployment", &mut self.pool.metadata),
            ("Service", &mut self.server_service.metadata),
            ("Service", &mut self.pool_service.metadata),
            ("PodDisruptionBudget", &mut self.pool_budget.metadata),
        ]
    }
}

/// The whole desired state of one Database.
pub fn children(inputs: &Inputs<'_>) -> Children {
    let pool_config = PoolConfig::new(
        &inputs.db.spec.pool,
        inputs.credentials,
        Endpoints::in_cluster(inputs.name, inputs.namespace),
    );
    let ini = render_ini(&pool_config);
    let userlist = render_userlist(inputs.credentials);
    let hash = config_hash(&ini, &inputs.tls.pool_cert);
    Children {
        credentials: secret::credentials(inputs),
        tls: secret::tls(inputs),
        server_init: config_map::server_init(inputs),
        pool_config: config_map::pool_config(inputs, ini),
        pool_auth: secret::pool_auth(inputs, userlist),
        connection: secret::connection(inputs),
        server: stateful_set::server(inputs),
        pool: deployment::pool(inputs, &hash),
        server_service: service::server(inputs),
        pool_service: service::pool(inputs),
        pool_budget: pdb::pool(inputs),
    }
}

impl Inputs<'_> {
    /// Labels of a child and of its pods: berth's labels plus the Database it belongs to.
    fn labels(&self, component: &str) -> BTreeMap<String, String> {
        let mut l = labels(self.customer, component);
        l.insert(INSTANCE.to_owned(), self.name.to_owned());
        l
    }

    /// Metadata of a child owned (as controller) by the Database.
    fn meta(&self, name: String, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name),
            namespace: Some(self.namespace.to_owned()),
            labels: Some(self.labels(component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// Selects the pods of one component of this Database. Only labels that never change, since a
    /// workload's selector is immutable.
    fn selector(&self, component: &str) -> BTreeMap<String, String> {
        BTreeMap::from([
            (MANAGED_BY.to_owned(), berth_kit::labels::BERTH.to_owned()),
            (INSTANCE.to_owned(), self.name.to_owned()),
            (COMPONENT.to_owned(), component.to_owned()),
        ])
    }

    fn label_selector(&self, component: &str) -> LabelSelector {
        LabelSelector {
            match_labels: Some(self.selector(component)),
            ..LabelSelector::default()
        }
    }

    fn replicas(&self, wanted: i32) -> i32 {
        if self.db.spec.suspend { 0 } else { wanted }
    }
}

/// Pod-level part of the `restricted` Pod Security Standard, as `uid`.
fn pod_security(uid: i64) -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(uid),
        run_as_group: Some(uid),
        fs_group: Some(uid),
        fs_group_change_policy: Some("OnRootMismatch".to_owned()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".to_owned(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn mount(volume: &str, path: &str, read_only: bool) -> VolumeMount {
    VolumeMount {
        name: volume.to_owned(),
        mount_path: path.to_owned(),
        read_only: read_only.then_some(true),
        ..VolumeMount::default()
    }
}

/// The `tls` volume of a pod: its own certificate and key (`cert`, `key` in the Secret) as `tls.crt` and
/// `tls.key`, and the CA's certificate; never the CA's key. Readable by the pod's group (fsGroup) only,
/// which PostgreSQL requires of a key file owned by root.
fn tls_volume(inputs: &Inputs<'_>, cert: &str, key: &str) -> Volume {
    let item = |key: &str, path: &str| KeyToPath {
        key: key.to_owned(),
        path: path.to_owned(),
        mode: None,
    };
    Volume {
        name: "tls".to_owned(),
        secret: Some(SecretVolumeSource {
            secret_name: Some(crate::names::tls(inputs.name)),
            items: Some(vec![
                item(cert, CERT_FILE),
                item(key, KEY_FILE),
                item(CA_CERT_KEY, CA_FILE),
            ]),
            default_mode: Some(0o440),
            ..SecretVolumeSource::default()
        }),
        ..Volume::default()
    }
}

/// Writable scratch space for a container whose root filesystem is read-only.
fn empty_dir(name: &str) -> Volume {
    Volume {
        name: name.to_owned(),
        empty_dir: Some(EmptyDirVolumeSource::default()),
        ..Volume::default()
    }
}

/// Container-level part of the `restricted` Pod Security Standard, with a read-only root filesystem.
fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".to_owned()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use berth_api::{DatabaseSpec, DeletionPolicy, PoolSpec};

    /// A Database whose names are unlike the product's defaults, so a swapped label shows.
    pub(crate) fn database(yaml_spec: &str) -> Database {
        let spec: DatabaseSpec = serde_yaml::from_str(yaml_spec).unwrap();
        let mut db = Database::new("ledger", spec);
        db.metadata.namespace = Some("tenant-zz".into());
        db.metadata.uid = Some("0d5b1c7e-uid".into());
        db.metadata.generation = Some(4);
        db
    }

    pub(crate) fn credentials() -> Credentials {
        Credentials {
            superuser: "postgres".into(),
            superuser_password: "S".repeat(32),
            database: "ledger".into(),
            app_user: "app".into(),
            app_password: "A".repeat(32),
            rotation: 0,
        }
    }

    /// One set of certificates for every test (issuing takes a few key generations).
    pub(crate) fn tls() -> &'static Tls {
        static TLS: std::sync::OnceLock<Tls> = std::sync::OnceLock::new();
        TLS.get_or_init(|| {
            let subjects = crate::tls::Subjects::in_cluster("ledger", "tenant-zz");
            Tls::generate("ledger", &subjects, "app", time::OffsetDateTime::now_utc()).unwrap()
        })
    }

    pub(crate) fn build_with(db: &Database, claims: Option<&[PersistentVolumeClaim]>) -> Children {
        build_from(db, claims, &Settings::default(), &credentials())
    }

    pub(crate) fn build_creds(db: &Database, creds: &Credentials) -> Children {
        build_from(db, None, &Settings::default(), creds)
    }

    pub(crate) fn build_settings(db: &Database, settings: &Settings) -> Children {
        build_from(db, None, settings, &credentials())
    }

    fn build_from(
        db: &Database,
        claims: Option<&[PersistentVolumeClaim]>,
        settings: &Settings,
        creds: &Credentials,
    ) -> Children {
        let owner = berth_kit::owner_ref(db).unwrap();
        children(&Inputs {
            db,
            namespace: "tenant-zz",
            name: "ledger",
            customer: "acme-corp",
            owner: &owner,
            credentials: creds,
            tls: tls(),
            settings,
            existing_claims: claims,
        })
    }

    pub(crate) fn build(db: &Database) -> Children {
        build_with(db, None)
    }

    const SPEC: &str = "storage: 5Gi\nstorageClassName: fast-ssd\n";

    #[test]
    fn every_child_is_labelled_namespaced_and_named_once() {
        let mut c = build(&database(SPEC));
        let mut seen = std::collections::BTreeSet::new();
        for (kind, meta) in c.metas_mut() {
            let what = format!("{kind} {:?}", meta.name);
            let l = meta.labels.as_ref().unwrap();
            assert_eq!(l["app.kubernetes.io/managed-by"], "berth", "{what}");
            assert_eq!(l["berth.dev/customer"], "acme-corp", "{what}");
            assert_eq!(l["app.kubernetes.io/instance"], "ledger", "{what}");
            assert!(
                ["database", "pool"].contains(&l["app.kubernetes.io/component"].as_str()),
                "{what}"
            );
            assert_eq!(meta.namespace.as_deref(), Some("tenant-zz"), "{what}");
            assert!(
                seen.insert((kind, meta.name.clone().unwrap())),
                "{what}: two {kind}s of one name"
            );
        }
    }

    #[test]
    fn every_child_but_retained_credentials_is_controlled_by_the_database() {
        for policy in ["Retain", "Delete"] {
            let mut c = build(&database(&format!("{SPEC}deletionPolicy: {policy}\n")));
            for (kind, meta) in c.metas_mut() {
                let what = format!("{kind} {:?}", meta.name);
                let refs = meta.owner_references.clone().unwrap_or_default();
                if meta.name.as_deref() == Some(crate::names::credentials("ledger").as_str())
                    && policy == "Retain"
                {
                    assert!(refs.is_empty(), "retained credentials must outlive the Database");
                    continue;
                }
                assert_eq!(refs.len(), 1, "{what}");
                let r = &refs[0];
                assert_eq!(
                    (r.kind.as_str(), r.name.as_str(), r.uid.as_str()),
                    ("Database", "ledger", "0d5b1c7e-uid")
                );
                assert_eq!(
                    (r.controller, r.block_owner_deletion),
                    (Some(true), Some(true)),
                    "{what}"
                );
            }
        }
        assert_eq!(database(SPEC).spec.deletion_policy, DeletionPolicy::Retain);
    }

    /// Passwords live in Secrets only: no ConfigMap, workload, Service, budget or status carries one
    /// (pods get them through `secretKeyRef`s), and the pool's Secrets carry the app role's only.
    #[test]
    fn pods_mount_their_own_certificate_and_never_the_ca_key() {
        let c = build(&database(SPEC));
        let pods = [
            (c.server.spec.unwrap().template.spec.unwrap(), "server"),
            (c.pool.spec.unwrap().template.spec.unwrap(), "pool"),
        ];
        for (pod, own) in pods {
            let volume = pod
                .volumes
                .unwrap()
                .into_iter()
                .find(|v| v.name == "tls")
                .unwrap();
            let secret = volume.secret.unwrap();
            assert_eq!(secret.secret_name.as_deref(), Some("ledger-tls"));
            let items: Vec<(String, String)> = secret
                .items
                .unwrap()
                .into_iter()
                .map(|i| (i.key, i.path))
                .collect();
            assert_eq!(
                items,
                [
                    (format!("{own}.crt"), "tls.crt".to_owned()),
                    (format!("{own}.key"), "tls.key".to_owned()),
                    ("ca.crt".to_owned(), "ca.crt".to_owned())
                ]
            );
            assert_eq!(secret.default_mode, Some(0o440));
            let mounted = pod.containers[0].volume_mounts.clone().unwrap();
            assert!(
                mounted
                    .iter()
                    .any(|m| m.name == "tls" && m.read_only == Some(true))
            );
        }
    }

    #[test]
    fn no_password_outside_secrets() {
        let creds = Credentials {
            superuser_password: "Superuser-Pw-7f3a9c".into(),
            app_password: "App-Pw-51be0d".into(),
            ..credentials()
        };
        let passwords = [&creds.superuser_password, &creds.app_password];
        let db = database(&format!("{SPEC}pool: {{replicas: 3}}\n"));
        let Children {
            credentials: stored,
            tls,
            server_init,
            pool_config,
            pool_auth,
            connection,
            server,
            pool,
            server_service,
            pool_service,
            pool_budget,
        } = build_from(&db, None, &Settings::default(), &creds);
        let now =
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH);
        let observed = crate::status::Observed::from(Some(&server), Some(&pool));
        let status = crate::status::status(&db, "tenant-zz", &observed, &now);
        let public = [
            ("server_init", serde_json::to_string(&server_init)),
            ("pool_config", serde_json::to_string(&pool_config)),
            ("server", serde_json::to_string(&server)),
            ("pool", serde_json::to_string(&pool)),
            ("server_service", serde_json::to_string(&server_service)),
            ("pool_service", serde_json::to_string(&pool_service)),
            ("pool_budget", serde_json::to_string(&pool_budget)),
            ("status", serde_json::to_string(&status)),
            ("tls", serde_json::to_string(&tls)),
        ];
        for (what, json) in public {
            let json = json.unwrap();
            for pw in passwords {
                assert!(!json.contains(pw.as_str()), "{what} holds a password");
            }
        }
        let text = |s: &Secret| -> String {
            s.data
                .as_ref()
                .unwrap()
                .values()
                .map(|v| String::from_utf8_lossy(&v.0).into_owned())
                .collect()
        };
        assert!(text(&stored).contains(&creds.superuser_password));
        for (what, secret) in [("pool_auth", &pool_auth), ("connection", &connection)] {
            assert!(text(secret).contains(&creds.app_password), "{what}");
            assert!(
                !text(secret).contains(&creds.superuser_password),
                "{what} holds the superuser's"
            );
        }
    }

    #[test]
    fn pool_settings_default_from_the_api() {
        assert_eq!(database(SPEC).spec.pool, PoolSpec::default());
    }
}
