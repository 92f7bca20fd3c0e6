//! The desired children of a Customer: pure functions of its spec, one per kind, no client in sight.

use std::collections::BTreeMap;

use berth_api::{
    AdminKind, Customer, Database, DatabaseSpec, DeletionPolicy, Egress, Scheduler, SchedulerSpec, Webhook,
    WebhookSpec,
};
use berth_kit::TenantAccess;
use berth_kit::labels::{self, labels};
use k8s_openapi::api::core::v1::{
    LimitRange, LimitRangeItem, LimitRangeSpec, Namespace, ResourceQuota, ResourceQuotaSpec,
};
use k8s_openapi::api::networking::v1::{
    IPBlock, NetworkPolicy, NetworkPolicyEgressRule, NetworkPolicyIngressRule, NetworkPolicyPeer,
    NetworkPolicyPort, NetworkPolicySpec,
};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{
    LabelSelector, LabelSelectorRequirement, ObjectMeta, OwnerReference,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use crate::names;

/// Everything a Customer owns. The applier destructures it whole, so a new kind cannot be forgotten.
///
/// Under `deletionPolicy: Retain` the namespace and its guard rails (quota, limits, network policies, admin
/// binding) carry no ownerReference: nothing the garbage collector does for the Customer, not even a
/// foreground cascade (which deletes dependents before any finalizer has run), can reach them or the data
/// they fence. The Database and Scheduler are always owned; their own `deletionPolicy` keeps the data.
#[derive(Clone, Debug, PartialEq)]
pub struct Children {
    pub namespace: Namespace,
    pub resource_quota: ResourceQuota,
    pub limit_range: LimitRange,
    pub network_policies: [NetworkPolicy; 3],
    /// `None` unless `spec.network.egress` restricts it: an existing one is deleted.
    pub egress: Option<NetworkPolicy>,
    pub admins: RoleBinding,
    /// `None` when the feature is off: an existing one is deleted.
    pub database: Option<Database>,
    pub scheduler: Option<Scheduler>,
    pub webhook: Option<Webhook>,
}

/// Builds every child of `customer`. Fails only when the Customer has no UID yet (not from the API server).
#[must_use]
pub fn children(customer: &Customer) -> Option<Children> {
    let b = Builder::of(customer)?;
    Some(Children {
        namespace: b.namespace(),
        resource_quota: b.resource_quota(),
        limit_range: b.limit_range(),
        network_policies: b.network_policies(),
        egress: b.egress(),
        admins: b.admins(),
        database: b.database(),
        scheduler: b.scheduler(),
        webhook: b.webhook(),
    })
}

/// berth's own rights in the tenant namespace: its tenant ClusterRole bound to its own identity (`None`
/// where berth holds them cluster-wide, or the Customer has no UID). Always owned by the Customer, even
/// under `Retain`: what is retained is the tenant's data, not berth's access to it.
#[must_use]
pub fn operator_binding(customer: &Customer, access: Option<&TenantAccess>) -> Option<RoleBinding> {
    let access = access?;
    let b = Builder::of(customer)?;
    Some(RoleBinding {
        metadata: b.meta(names::OPERATOR, "rbac"),
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".to_owned(),
            kind: "ClusterRole".to_owned(),
            name: access.role.clone(),
        },
        subjects: Some(vec![access.subject.clone()]),
    })
}

/// The tenant namespace as it is left behind under `deletionPolicy: Retain`: as it was, marked as retained.
/// `None` when the Customer has no UID.
#[must_use]
pub fn retained_namespace(customer: &Customer) -> Option<Namespace> {
    let mut ns = children(customer)?.namespace;
    ns.metadata.owner_references = None;
    ns.metadata
        .labels
        .get_or_insert_default()
        .insert(labels::RETAINED.to_owned(), "true".to_owned());
    Some(ns)
}

struct Builder<'a> {
    customer: &'a Customer,
    owner: OwnerReference,
    uid: String,
    ns: String,
}

/// Component label of the tenant namespace.
const TENANT: &str = "tenant";

/// The Pod Security Standards version the tenant namespace enforces: the Kubernetes minor berth is tested
/// on. With `latest`, a cluster upgrade that tightens `restricted` would start refusing the tenant's pods
/// (berth's own included) with nobody having changed anything; a pinned version moves only with a berth
/// release that was tested against the new one. A constant rather than a setting for that reason.
pub const POD_SECURITY_VERSION: &str = "v1.35";

/// Default object counts of the tenant quota (`spec.quota` overrides each). Sized for a tenant with a
/// database and a scheduler, with berth's own children well inside: the database keeps 3 Secrets,
/// 2 ConfigMaps (and Kubernetes adds `kube-root-ca.crt`) and 2 Services; a Customer's scheduler keeps at
/// most 64 workflows x (3 succeeded + 1 failed) = 256 finished Jobs plus at most 64 running, leaving room
/// for queued runs and the tenant's own objects.
const SECRETS: i32 = 100;
const CONFIG_MAPS: i32 = 100;
const SERVICES: i32 = 20;
const JOBS: i32 = 500;

/// Not "the internet" under `egress: Internet`: this host, private and shared address space, link-local
/// (and with it cloud metadata services).
const PRIVATE_V4: &[&str] = &[
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.168.0.0/16",
];
const PRIVATE_V6: &[&str] = &["::1/128", "fc00::/7", "fe80::/10"];

impl<'a> Builder<'a> {
    fn of(customer: &'a Customer) -> Option<Self> {
        let owner = berth_kit::owner_ref(customer)?;
        Some(Builder {
            customer,
            uid: owner.uid.clone(),
            owner,
            ns: customer.namespace_name(),
        })
    }

    /// Without an owner under Retain, this is how berth tells its tenant from a namespace left behind by
    /// an earlier Customer of the same name.
    fn recorded_uid(&self) -> BTreeMap<String, String> {
        BTreeMap::from([(names::CUSTOMER_UID.to_owned(), self.uid.clone())])
    }

    /// Metadata of a feature child: always owned by the Customer.
    fn meta(&self, name: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(self.ns.clone()),
            labels: Some(labels(&self.customer.name_any(), component)),
            owner_references: Some(vec![self.owner.clone()]),
            ..ObjectMeta::default()
        }
    }

    /// Metadata of the namespace's guard rails: owned only when the tenant goes with its Customer.
    fn fence_meta(&self, name: &str, component: &str) -> ObjectMeta {
        ObjectMeta {
            owner_references: self.owners(),
            ..self.meta(name, component)
        }
    }

    fn owners(&self) -> Option<Vec<OwnerReference>> {
        match self.customer.spec.deletion_policy {
            DeletionPolicy::Delete => Some(vec![self.owner.clone()]),
            DeletionPolicy::Retain => None,
        }
    }

    fn namespace(&self) -> Namespace {
        let customer = self.customer;
        let mut l = labels(&customer.name_any(), TENANT);
        // Pod Security admission: the tenant runs nothing privileged, and hears about it when it tries.
        for mode in ["enforce", "audit", "warn"] {
            l.insert(
                format!("pod-security.kubernetes.io/{mode}"),
                "restricted".to_owned(),
            );
            l.insert(
                format!("pod-security.kubernetes.io/{mode}-version"),
                POD_SECURITY_VERSION.to_owned(),
            );
        }
        Namespace {
            metadata: ObjectMeta {
                name: Some(customer.namespace_name()),
                labels: Some(l),
                annotations: Some(self.recorded_uid()),
                owner_references: self.owners(),
                ..ObjectMeta::default()
            },
            ..Namespace::default()
        }
    }

    fn resource_quota(&self) -> ResourceQuota {
        let q = &self.customer.spec.quota;
        let cpu = q.cpu.clone().unwrap_or_else(|| Quantity("16".to_owned()));
        let memory = q.memory.clone().unwrap_or_else(|| Quantity("64Gi".to_owned()));
        let count = |n: i32| Quantity(n.to_string());
        let mut hard = BTreeMap::from([
            ("requests.cpu".to_owned(), cpu.clone()),
            ("limits.cpu".to_owned(), cpu),
            ("requests.memory".to_owned(), memory.clone()),
            ("limits.memory".to_owned(), memory),
            ("pods".to_owned(), count(q.pods.unwrap_or(200))),
            ("persistentvolumeclaims".to_owned(), count(20)),
            ("count/secrets".to_owned(), count(q.secrets.unwrap_or(SECRETS))),
            (
                "count/configmaps".to_owned(),
                count(q.config_maps.unwrap_or(CONFIG_MAPS)),
            ),
            ("count/services".to_owned(), count(q.services.unwrap_or(SERVICES))),
            ("count/jobs.batch".to_owned(), count(q.jobs.unwrap_or(JOBS))),
            // Not overridable: a node port or load balancer opens the tenant to traffic from outside the
            // cluster, past the namespace's network policies, and that is the platform team's decision.
            ("services.loadbalancers".to_owned(), count(0)),
            ("services.nodeports".to_owned(), count(0)),
        ]);
        // Without an explicit limit the database volume decides the size; a default cap smaller than the
        // requested storage would only make the PostgreSQL volume claim fail.
        if let Some(storage) = &q.storage {
            hard.insert("requests.storage".to_owned(), storage.clone());
        }
        ResourceQuota {
            metadata: self.fence_meta(names::RESOURCE_QUOTA, "quota"),
            spec: Some(ResourceQuotaSpec {
                hard: Some(hard),
                ..ResourceQuotaSpec::default()
            }),
            ..ResourceQuota::default()
        }
    }

    /// Defaults for containers that state no resources, so the quota does not reject them.
    fn limit_range(&self) -> LimitRange {
        let q = |s: &str| Quantity(s.to_owned());
        LimitRange {
            metadata: self.fence_meta(names::LIMIT_RANGE, "quota"),
            spec: Some(LimitRangeSpec {
                limits: vec![LimitRangeItem {
                    type_: "Container".to_owned(),
                    default: Some(BTreeMap::from([
                        ("cpu".to_owned(), q("500m")),
                        ("memory".to_owned(), q("512Mi")),
                    ])),
                    default_request: Some(BTreeMap::from([
                        ("cpu".to_owned(), q("100m")),
                        ("memory".to_owned(), q("128Mi")),
                    ])),
                    ..LimitRangeItem::default()
                }],
            }),
        }
    }

    /// Ingress: nothing from outside the namespace; inside it, every pod reaches every pod but the database
    /// servers, which only the pools reach (on PostgreSQL's port), so every app's sessions go through the
    /// pool's limits. Egress is not restricted.
    fn network_policies(&self) -> [NetworkPolicy; 3] {
        let deny = NetworkPolicy {
            metadata: self.fence_meta(names::DENY_INGRESS, "network"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Ingress".to_owned()]),
                ..NetworkPolicySpec::default()
            }),
        };
        let not_isolated = LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: labels::ISOLATION.to_owned(),
                operator: "DoesNotExist".to_owned(),
                values: None,
            }]),
            match_labels: None,
        };
        let same_namespace = NetworkPolicy {
            metadata: self.fence_meta(names::ALLOW_SAME_NAMESPACE, "network"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(not_isolated),
                policy_types: Some(vec!["Ingress".to_owned()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(LabelSelector::default()),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ..NetworkPolicyIngressRule::default()
                }]),
                ..NetworkPolicySpec::default()
            }),
        };
        let select = |pairs: &[(&str, &str)]| LabelSelector {
            match_labels: Some(
                pairs
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            match_expressions: None,
        };
        let pools_to_servers = NetworkPolicy {
            metadata: self.fence_meta(names::ALLOW_POOLS_TO_SERVERS, "network"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(select(&[(labels::ISOLATION, labels::POOL_ONLY)])),
                policy_types: Some(vec!["Ingress".to_owned()]),
                ingress: Some(vec![NetworkPolicyIngressRule {
                    from: Some(vec![NetworkPolicyPeer {
                        pod_selector: Some(select(&[
                            (labels::MANAGED_BY, labels::BERTH),
                            (labels::COMPONENT, labels::POOL_COMPONENT),
                        ])),
                        ..NetworkPolicyPeer::default()
                    }]),
                    ports: Some(vec![NetworkPolicyPort {
                        port: Some(IntOrString::Int(i32::from(labels::POSTGRES_PORT))),
                        protocol: Some("TCP".to_owned()),
                        end_port: None,
                    }]),
                }]),
                ..NetworkPolicySpec::default()
            }),
        };
        [deny, same_namespace, pools_to_servers]
    }

    /// Under `Internet`: egress to the cluster's DNS pods, the namespace's own pods, and public addresses.
    /// Every private (RFC 1918), shared (RFC 6598), loopback and link-local range is left out of "public",
    /// which covers pod, Service and node addresses of any common cluster, the API server, and the cloud
    /// metadata address (169.254.169.254, fd00:ec2::254), without berth having to know the cluster's ranges.
    fn egress(&self) -> Option<NetworkPolicy> {
        if self.customer.spec.network.egress != Egress::Internet {
            return None;
        }
        let peer = |namespace: Option<LabelSelector>, pods: Option<LabelSelector>, block: Option<IPBlock>| {
            NetworkPolicyPeer {
                namespace_selector: namespace,
                pod_selector: pods,
                ip_block: block,
            }
        };
        let select = |k: &str, v: &str| LabelSelector {
            match_labels: Some(BTreeMap::from([(k.to_owned(), v.to_owned())])),
            match_expressions: None,
        };
        let public = |cidr: &str, except: &[&str]| IPBlock {
            cidr: cidr.to_owned(),
            except: Some(except.iter().map(|c| (*c).to_owned()).collect()),
        };
        let rule = |to: NetworkPolicyPeer| NetworkPolicyEgressRule {
            to: Some(vec![to]),
            ports: None,
        };
        Some(NetworkPolicy {
            metadata: self.fence_meta(names::RESTRICT_EGRESS, "network"),
            spec: Some(NetworkPolicySpec {
                pod_selector: Some(LabelSelector::default()),
                policy_types: Some(vec!["Egress".to_owned()]),
                egress: Some(vec![
                    // Any port: the DNS pods' own port is what the policy sees, after the Service's.
                    rule(peer(
                        Some(select("kubernetes.io/metadata.name", "kube-system")),
                        Some(select("k8s-app", "kube-dns")),
                        None,
                    )),
                    rule(peer(None, Some(LabelSelector::default()), None)),
                    rule(peer(None, None, Some(public("0.0.0.0/0", PRIVATE_V4)))),
                    rule(peer(None, None, Some(public("::/0", PRIVATE_V6)))),
                ]),
                ..NetworkPolicySpec::default()
            }),
        })
    }

    /// Always present, possibly with no subjects: one object whose subjects follow the spec is simpler
    /// than creating and deleting it as the admin list empties and fills.
    fn admins(&self) -> RoleBinding {
        let subjects = self
            .customer
            .spec
            .admins
            .iter()
            .map(|a| Subject {
                api_group: Some("rbac.authorization.k8s.io".to_owned()),
                kind: match a.kind {
                    AdminKind::User => "User",
                    AdminKind::Group => "Group",
                }
                .to_owned(),
                name: a.name.clone(),
                namespace: None,
            })
            .collect();
        RoleBinding {
            metadata: self.fence_meta(names::ADMINS, "rbac"),
            role_ref: RoleRef {
                api_group: "rbac.authorization.k8s.io".to_owned(),
                kind: "ClusterRole".to_owned(),
                name: names::ADMIN_CLUSTER_ROLE.to_owned(),
            },
            subjects: Some(subjects),
        }
    }

    fn database(&self) -> Option<Database> {
        let f = &self.customer.spec.features.database;
        if !f.enabled {
            return None;
        }
        let spec = DatabaseSpec {
            storage: f.storage.clone()?,
            storage_class_name: f.storage_class_name.clone(),
            pool: f.pool.clone().unwrap_or_default(),
            suspend: self.customer.spec.suspend,
            deletion_policy: self.customer.spec.deletion_policy,
            password_rotation: f.password_rotation,
            ..DatabaseSpec::default()
        };
        let mut db = Database::new(names::DATABASE, spec);
        db.metadata = self.meta(names::DATABASE, "database");
        Some(db)
    }

    fn scheduler(&self) -> Option<Scheduler> {
        let f = &self.customer.spec.features.scheduler;
        if !f.enabled {
            return None;
        }
        let database = self.customer.spec.features.database.enabled;
        let spec = SchedulerSpec {
            workers: f.workers,
            suspend: self.customer.spec.suspend,
            workflows: f.workflows.clone(),
            env_from_secret: database.then(|| berth_api::connection_secret(names::DATABASE)),
            ..SchedulerSpec::default()
        };
        let mut s = Scheduler::new(names::SCHEDULER, spec);
        s.metadata = self.meta(names::SCHEDULER, "scheduler");
        Some(s)
    }

    fn webhook(&self) -> Option<Webhook> {
        let f = &self.customer.spec.features.webhooks;
        if !f.enabled {
            return None;
        }
        let spec = WebhookSpec {
            endpoints: f.endpoints.clone(),
            retry_for_seconds: f.retry_for_seconds.unwrap_or_else(berth_api::default_retry_for),
        };
        let mut w = Webhook::new(names::WEBHOOK, spec);
        w.metadata = self.meta(names::WEBHOOK, "webhooks");
        Some(w)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::{DeletionPolicy, PoolSpec};

    /// A Customer as the API server returns it: with a UID. The name is unlike any product name so a
    /// label taken from the wrong place shows.
    fn customer(yaml: &str) -> Customer {
        let mut c: Customer = serde_yaml::from_str(yaml).unwrap();
        c.metadata.uid = Some("0a1b2c3d-uid".to_owned());
        c
    }

    const SEED: &str = "
metadata: {name: tenant-zeta}
spec:
  features:
    database: {enabled: true, storage: 256Gi}
    scheduler: {enabled: true, workers: 4}
    webhooks: {enabled: false}
";

    /// Metadata of every child: the namespace and its guard rails first, then the features.
    fn metas(c: &Children) -> (Vec<&ObjectMeta>, Vec<&ObjectMeta>) {
        let Children {
            namespace,
            resource_quota,
            limit_range,
            network_policies,
            egress,
            admins,
            database,
            scheduler,
            webhook: _,
        } = c;
        let mut fence = vec![
            &namespace.metadata,
            &resource_quota.metadata,
            &limit_range.metadata,
            &admins.metadata,
        ];
        fence.extend(network_policies.iter().map(|n| &n.metadata));
        fence.extend(egress.iter().map(|n| &n.metadata));
        let features = vec![
            &database.as_ref().unwrap().metadata,
            &scheduler.as_ref().unwrap().metadata,
        ];
        (fence, features)
    }

    fn owned(m: &ObjectMeta) -> bool {
        m.owner_references.as_ref().is_some_and(|o| {
            o.len() == 1
                && (o[0].kind.as_str(), o[0].name.as_str()) == ("Customer", "tenant-zeta")
                && o[0].controller == Some(true)
                && o[0].block_owner_deletion == Some(true)
        })
    }

    #[test]
    fn under_delete_every_child_is_owned_and_labelled() {
        let c = children(&customer(&format!("{SEED}  deletionPolicy: Delete\n"))).unwrap();
        let (fence, features) = metas(&c);
        for m in fence.into_iter().chain(features) {
            assert!(owned(m), "{m:?}");
            let l = m.labels.as_ref().unwrap();
            assert_eq!(l[labels::CUSTOMER], "tenant-zeta");
            assert_eq!(l[labels::MANAGED_BY], "berth");
        }
        assert_eq!(
            c.resource_quota.metadata.namespace.as_deref(),
            Some("tenant-zeta")
        );
    }

    #[test]
    fn under_retain_the_namespace_and_its_guard_rails_have_no_owner() {
        let c = children(&customer(SEED)).unwrap();
        let (fence, features) = metas(&c);
        for m in fence {
            assert_eq!(m.owner_references, None, "{m:?}");
            assert_eq!(m.labels.as_ref().unwrap()[labels::CUSTOMER], "tenant-zeta");
        }
        for m in features {
            assert!(owned(m), "the features go with the Customer: {m:?}");
        }
        let uid = c.namespace.metadata.annotations.as_ref().unwrap();
        assert_eq!(uid[names::CUSTOMER_UID], "0a1b2c3d-uid");
    }

    #[test]
    fn a_retained_namespace_is_marked_and_unowned() {
        let mut c = customer(&format!("{SEED}  deletionPolicy: Delete\n"));
        let ns = retained_namespace(&c).unwrap();
        assert_eq!(ns.metadata.owner_references, None);
        assert_eq!(ns.metadata.labels.unwrap()[labels::RETAINED], "true");
        c.metadata.uid = None;
        assert_eq!(retained_namespace(&c), None);
    }

    #[test]
    fn namespace_enforces_restricted_pod_security() {
        let ns = children(&customer(SEED)).unwrap().namespace;
        let l = ns.metadata.labels.unwrap();
        for mode in ["enforce", "audit", "warn"] {
            assert_eq!(l[&format!("pod-security.kubernetes.io/{mode}")], "restricted");
            assert_eq!(
                l[&format!("pod-security.kubernetes.io/{mode}-version")],
                "v1.35",
                "{mode}: pinned, so a cluster upgrade does not change what the tenant may run"
            );
        }
        assert_eq!(ns.metadata.namespace, None, "a Namespace is cluster-scoped");
    }

    #[test]
    fn explicit_namespace_is_used_everywhere() {
        let c = children(&customer("metadata: {name: zz}\nspec: {namespace: team-q}\n")).unwrap();
        assert_eq!(c.namespace.metadata.name.as_deref(), Some("team-q"));
        assert_eq!(c.limit_range.metadata.namespace.as_deref(), Some("team-q"));
    }

    #[test]
    fn features_pass_down_and_switch_off() {
        let c = children(&customer(SEED)).unwrap();
        let db = c.database.unwrap();
        assert_eq!(db.spec.storage.0, "256Gi");
        assert_eq!(db.spec.pool, PoolSpec::default());
        assert_eq!(db.spec.deletion_policy, DeletionPolicy::Retain);
        assert_eq!(db.spec.password_rotation, 0);
        let rotated = customer(
            "metadata: {name: acme}\nspec: {features: {database: {enabled: true, storage: 1Gi, passwordRotation: 2}}}\n",
        );
        assert_eq!(
            children(&rotated)
                .unwrap()
                .database
                .unwrap()
                .spec
                .password_rotation,
            2
        );
        let s = c.scheduler.unwrap();
        assert_eq!(s.spec.workers, 4);
        assert_eq!(
            s.spec.successful_jobs_history_limit, 3,
            "the API's defaults, not zero"
        );
        assert_eq!(
            s.spec.env_from_secret.as_deref(),
            Some(berth_api::connection_secret(names::DATABASE).as_str())
        );

        let off = children(&customer(
            "metadata: {name: zz}\nspec: {features: {scheduler: {enabled: true}}}\n",
        ))
        .unwrap();
        assert!(off.database.is_none());
        assert_eq!(
            off.scheduler.unwrap().spec.env_from_secret,
            None,
            "no database, no connection secret"
        );
    }

    #[test]
    fn webhooks_pass_their_endpoints_down_with_the_default_retry_window() {
        assert!(
            children(&customer(SEED)).unwrap().webhook.is_none(),
            "webhooks: {{enabled: false}}"
        );
        let c = customer(
            "metadata: {name: zz}\nspec: {features: {webhooks: {enabled: true, endpoints: [{name: ops, url: 'https://hooks.example.com/b', events: [WorkflowRunFailed]}]}}}\n",
        );
        let w = children(&c).unwrap().webhook.unwrap();
        assert_eq!(w.metadata.name.as_deref(), Some(names::WEBHOOK));
        assert_eq!(w.metadata.namespace.as_deref(), Some("zz"));
        assert_eq!(w.spec.endpoints.len(), 1);
        assert_eq!(
            w.spec.endpoints[0].events,
            [berth_api::WebhookEvent::WorkflowRunFailed]
        );
        assert_eq!(w.spec.retry_for_seconds, 86_400);
        assert!(w.metadata.owner_references.is_some(), "goes with its Customer");
    }

    #[test]
    fn suspend_and_deletion_policy_reach_the_children() {
        let c = customer(
            "metadata: {name: zz}\nspec: {suspend: true, deletionPolicy: Delete, features: {database: {enabled: true, storage: 1Gi}, scheduler: {enabled: true}}}\n",
        );
        let kids = children(&c).unwrap();
        assert!(kids.database.as_ref().unwrap().spec.suspend);
        assert_eq!(
            kids.database.unwrap().spec.deletion_policy,
            DeletionPolicy::Delete
        );
        assert!(kids.scheduler.unwrap().spec.suspend);
    }

    #[test]
    fn quota_follows_spec_and_defaults() {
        let c = customer("metadata: {name: zz}\nspec: {quota: {cpu: '4', pods: 7, storage: 9Gi}}\n");
        let hard = children(&c).unwrap().resource_quota.spec.unwrap().hard.unwrap();
        assert_eq!(hard["requests.cpu"].0, "4");
        assert_eq!(hard["limits.cpu"].0, "4");
        assert_eq!(hard["pods"].0, "7");
        assert_eq!(hard["requests.storage"].0, "9Gi");
        assert_eq!(hard["requests.memory"].0, "64Gi");
        let defaults = children(&customer("metadata: {name: zz}\nspec: {}\n")).unwrap();
        assert!(
            !defaults
                .resource_quota
                .spec
                .unwrap()
                .hard
                .unwrap()
                .contains_key("requests.storage")
        );
        let lr = defaults.limit_range.spec.unwrap().limits;
        assert_eq!(lr[0].default_request.as_ref().unwrap()["cpu"].0, "100m");
    }

    fn hard(yaml: &str) -> BTreeMap<String, Quantity> {
        children(&customer(yaml))
            .unwrap()
            .resource_quota
            .spec
            .unwrap()
            .hard
            .unwrap()
    }

    #[test]
    fn quota_bounds_object_counts_by_default() {
        let hard = hard("metadata: {name: zz}\nspec: {}\n");
        for (resource, n) in [
            ("count/secrets", "100"),
            ("count/configmaps", "100"),
            ("count/services", "20"),
            ("count/jobs.batch", "500"),
            ("services.loadbalancers", "0"),
            ("services.nodeports", "0"),
        ] {
            assert_eq!(hard[resource].0, n, "{resource}");
        }
    }

    #[test]
    fn quota_counts_follow_spec_but_outside_access_stays_closed() {
        let hard =
            hard("metadata: {name: zz}\nspec: {quota: {secrets: 7, configMaps: 8, services: 0, jobs: 9}}\n");
        assert_eq!(hard["count/secrets"].0, "7");
        assert_eq!(hard["count/configmaps"].0, "8");
        assert_eq!(hard["count/services"].0, "0");
        assert_eq!(hard["count/jobs.batch"].0, "9");
        assert_eq!(hard["services.loadbalancers"].0, "0");
        assert_eq!(hard["services.nodeports"].0, "0");
    }

    /// A Customer's scheduler at its largest (every workflow and worker the API allows, history at the
    /// defaults the Customer cannot change) fits the default Job count with room to queue.
    #[test]
    fn the_largest_scheduler_fits_the_default_job_count() {
        let (workflows, workers) = (64, 64);
        let s = SchedulerSpec::default();
        let kept = workflows * (s.successful_jobs_history_limit + s.failed_jobs_history_limit);
        assert!(
            kept + workers + workflows <= JOBS,
            "{kept} finished + {workers} running"
        );
    }

    #[test]
    fn network_policies_deny_then_allow_the_namespace_and_only_pools_to_servers() {
        let [deny, same, pools] = children(&customer(SEED)).unwrap().network_policies;
        let deny = deny.spec.unwrap();
        assert_eq!(deny.pod_selector, Some(LabelSelector::default()));
        assert!(deny.ingress.is_none(), "no ingress rule: nothing is allowed in");
        let same = same.spec.unwrap();
        let from = same.ingress.unwrap()[0].from.clone().unwrap();
        assert_eq!(from[0].pod_selector, Some(LabelSelector::default()));
        assert!(from[0].namespace_selector.is_none(), "only this namespace's pods");
        let to = same.pod_selector.unwrap().match_expressions.unwrap();
        assert_eq!(
            (to[0].key.as_str(), to[0].operator.as_str()),
            (labels::ISOLATION, "DoesNotExist"),
            "every pod but the isolated servers"
        );
        let pools = pools.spec.unwrap();
        let to = pools.pod_selector.unwrap().match_labels.unwrap();
        assert_eq!(
            to.get(labels::ISOLATION).map(String::as_str),
            Some(labels::POOL_ONLY)
        );
        let rule = &pools.ingress.unwrap()[0];
        let from = rule.from.clone().unwrap()[0]
            .pod_selector
            .clone()
            .unwrap()
            .match_labels
            .unwrap();
        assert_eq!(from.get(labels::COMPONENT).map(String::as_str), Some("pool"));
        assert!(
            rule.from.clone().unwrap()[0].namespace_selector.is_none(),
            "this namespace's pools"
        );
        let port = rule.ports.clone().unwrap()[0].port.clone();
        assert_eq!(port, Some(IntOrString::Int(5432)));
    }

    #[test]
    fn egress_is_open_unless_the_customer_asks_for_internet_only() {
        assert_eq!(children(&customer(SEED)).unwrap().egress, None);
        let c = customer("metadata: {name: zz}\nspec: {network: {egress: Internet}}\n");
        let spec = children(&c).unwrap().egress.unwrap().spec.unwrap();
        assert_eq!(spec.policy_types, Some(vec!["Egress".to_owned()]));
        assert_eq!(
            spec.pod_selector,
            Some(LabelSelector::default()),
            "every pod of the tenant"
        );
        let to: Vec<NetworkPolicyPeer> = spec
            .egress
            .unwrap()
            .into_iter()
            .flat_map(|r| r.to.unwrap())
            .collect();
        let dns = &to[0];
        assert!(
            dns.namespace_selector.is_some() && dns.pod_selector.is_some(),
            "the DNS pods, in kube-system"
        );
        assert_eq!(to[1].pod_selector, Some(LabelSelector::default()));
        assert!(to[1].namespace_selector.is_none(), "this namespace's pods");
        let v4 = to[2].ip_block.clone().unwrap();
        assert_eq!(v4.cidr, "0.0.0.0/0");
        let except = v4.except.unwrap();
        for private in [
            "10.0.0.0/8",
            "169.254.0.0/16",
            "172.16.0.0/12",
            "192.168.0.0/16",
            "100.64.0.0/10",
        ] {
            assert!(
                except.iter().any(|e| e == private),
                "{private} is not the internet"
            );
        }
        assert!(
            to[3]
                .ip_block
                .clone()
                .unwrap()
                .except
                .unwrap()
                .iter()
                .any(|e| e == "fe80::/10")
        );
    }

    #[test]
    fn admins_bind_the_admin_cluster_role() {
        let c = customer(
            "metadata: {name: zz}\nspec: {admins: [{kind: Group, name: g1}, {kind: User, name: u1}]}\n",
        );
        let rb = children(&c).unwrap().admins;
        assert_eq!(rb.role_ref.name, "admin");
        let subjects = rb.subjects.unwrap();
        assert_eq!(
            (subjects[0].kind.as_str(), subjects[0].name.as_str()),
            ("Group", "g1")
        );
        assert_eq!(subjects[1].kind, "User");
    }

    #[test]
    fn berth_binds_its_tenant_role_to_itself_owned_even_under_retain() {
        let access = TenantAccess {
            role: "berth-tenant".to_owned(),
            subject: Subject {
                kind: "ServiceAccount".to_owned(),
                name: "berth".to_owned(),
                namespace: Some("berth-system".to_owned()),
                api_group: None,
            },
        };
        assert_eq!(operator_binding(&customer(SEED), None), None, "nothing to bind");
        let retained = customer("metadata: {name: zz}\nspec: {deletionPolicy: Retain}\n");
        let rb = operator_binding(&retained, Some(&access)).unwrap();
        assert_eq!(rb.metadata.name.as_deref(), Some(names::OPERATOR));
        assert_eq!(rb.metadata.namespace.as_deref(), Some("zz"));
        assert_eq!(
            (rb.role_ref.kind.as_str(), rb.role_ref.name.as_str()),
            ("ClusterRole", "berth-tenant")
        );
        assert_eq!(rb.subjects, Some(vec![access.subject]));
        assert_eq!(rb.owner_references().len(), 1, "goes with the Customer");
    }

    #[test]
    fn no_uid_no_children() {
        let mut c = customer(SEED);
        c.metadata.uid = None;
        assert!(children(&c).is_none());
    }
}
