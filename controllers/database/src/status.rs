//! Status as a pure function of the Database and what was observed of its workloads. No clock but the
//! one passed in, which kit's `conditions` only uses when a condition flips, so an unchanged world
//! gives an identical status and no write.

use berth_api::{Database, DatabaseStatus};
use berth_kit::conditions::{READY, Verdict, conditions, ready};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::ResourceExt;

use crate::names;

pub(crate) const SERVER_READY: &str = "ServerReady";
pub(crate) const POOL_READY: &str = "PoolReady";
const SUSPENDED: &str = "Suspended";
/// Reason of `ServerReady` and `PoolReady` when the API server refuses their pods (a quota, say).
const PODS_REFUSED: &str = "PodsRefused";
/// Reason of `Ready` when the credentials Secret is gone and the volume may hold data (see `origin`).
pub(crate) const CREDENTIALS_MISSING: &str = "CredentialsMissing";
/// Reason of `Ready` when a value in the credentials Secret cannot be used as it is (see `readback`).
pub(crate) const CREDENTIALS_INVALID: &str = "CredentialsInvalid";

/// What the cluster shows of the two workloads (`None`: not there yet).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Observed {
    /// Ready replicas of the StatefulSet.
    pub server_ready: Option<i32>,
    /// Why the server's pod cannot be created, from the StatefulSet controller's event (see `refused`).
    pub server_refused: Option<String>,
    pub pool: Option<PoolObserved>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct PoolObserved {
    pub wanted: i32,
    pub available: i32,
    /// The Deployment's `Available` condition is `True`.
    pub available_condition: bool,
    /// Why pgbouncer pods cannot be created, from the Deployment's `ReplicaFailure` condition.
    pub refused: Option<String>,
}

impl Observed {
    pub(crate) fn from(server: Option<&StatefulSet>, pool: Option<&Deployment>) -> Self {
        Self {
            server_ready: server.map(|s| s.status.as_ref().and_then(|st| st.ready_replicas).unwrap_or(0)),
            // Read by the reconcile, from an event, only while the pod is missing.
            server_refused: None,
            pool: pool.map(|d| {
                let status = d.status.clone().unwrap_or_default();
                let conditions = status.conditions.unwrap_or_default();
                PoolObserved {
                    wanted: d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1),
                    available: status.available_replicas.unwrap_or(0),
                    available_condition: conditions
                        .iter()
                        .any(|c| c.type_ == "Available" && c.status == "True"),
                    refused: conditions
                        .iter()
                        .find(|c| c.type_ == "ReplicaFailure" && c.status == "True")
                        .and_then(|c| c.message.as_deref())
                        .map(refusal),
                }
            }),
        }
    }
}

/// The API server's reason for refusing a pod, without the pod's name: the ReplicaSet controller names a new
/// pod at every attempt, and a message that changed with each would rewrite this status (and the Customer's)
/// at every retry. `pods "x" is forbidden: exceeded quota: ...` becomes `exceeded quota: ...`.
fn refusal(message: &str) -> String {
    let message = message.strip_prefix("Error creating: ").unwrap_or(message);
    match message.split_once(" is forbidden: ") {
        Some((_, why)) => why.to_owned(),
        None => message.to_owned(),
    }
}

/// `ServerReady` and `PoolReady`, in that order.
pub(crate) fn verdicts(db: &Database, observed: &Observed) -> [Verdict; 2] {
    if db.spec.suspend {
        let why = "spec.suspend is true: scaled to zero, volume and credentials kept";
        return [
            Verdict::new(SERVER_READY, false, SUSPENDED, why),
            Verdict::new(POOL_READY, false, SUSPENDED, why),
        ];
    }
    let server = match observed.server_ready {
        None => Verdict::new(SERVER_READY, false, "Creating", "StatefulSet not created yet"),
        Some(n) if n >= 1 => Verdict::new(SERVER_READY, true, "Running", "PostgreSQL accepts connections"),
        Some(_) => match &observed.server_refused {
            Some(why) => {
                let message = format!("the PostgreSQL pod cannot be created: {}", refusal(why));
                Verdict::new(SERVER_READY, false, PODS_REFUSED, message)
            }
            None => Verdict::new(SERVER_READY, false, "Starting", "PostgreSQL is not ready yet"),
        },
    };
    let pool = match &observed.pool {
        None => Verdict::new(POOL_READY, false, "Creating", "Deployment not created yet"),
        Some(p) => {
            // No live counts in the message (status.readyReplicas has them): every pod becoming ready
            // would otherwise rewrite this status and, through it, the Customer's.
            if p.available >= 1 && p.available_condition {
                Verdict::new(POOL_READY, true, "Available", "pgbouncer accepts connections")
            } else if let Some(why) = &p.refused {
                let message = format!("pgbouncer pods cannot be created: {why}");
                Verdict::new(POOL_READY, false, PODS_REFUSED, message)
            } else {
                let message = format!(
                    "waiting for pgbouncer pods to become available ({} wanted)",
                    p.wanted
                );
                Verdict::new(POOL_READY, false, "Progressing", message)
            }
        }
    };
    [server, pool]
}

/// The status of a Database whose children were applied.
pub(crate) fn status(db: &Database, namespace: &str, observed: &Observed, now: &Time) -> DatabaseStatus {
    let [server, pool] = verdicts(db, observed);
    let overall = ready(&[server.clone(), pool.clone()]);
    assemble(db, namespace, observed, &[overall, server, pool], now)
}

/// The status of a Database for which nothing was applied because of its credentials ([`CREDENTIALS_MISSING`],
/// [`CREDENTIALS_INVALID`]): `Ready` is false with that `reason` and `message` (the way out), while
/// `ServerReady` and `PoolReady` keep telling what the workloads, left as they were, are doing.
pub(crate) fn held(
    db: &Database,
    namespace: &str,
    observed: &Observed,
    reason: &str,
    message: &str,
    now: &Time,
) -> DatabaseStatus {
    let [server, pool] = verdicts(db, observed);
    let overall = Verdict::new(READY, false, reason, message);
    assemble(db, namespace, observed, &[overall, server, pool], now)
}

/// `Ready`, `ServerReady` and `PoolReady` (in that order) with the rest of the status.
fn assemble(
    db: &Database,
    namespace: &str,
    observed: &Observed,
    all: &[Verdict; 3],
    now: &Time,
) -> DatabaseStatus {
    let name = db.name_any();
    DatabaseStatus {
        observed_generation: db.metadata.generation,
        conditions: conditions(old(db), all, db.metadata.generation, now),
        endpoint: Some(format!(
            "{}:{}",
            names::service_host(&names::pool_service(&name), namespace),
            names::PORT
        )),
        connection_secret: Some(names::connection(&name)),
        ready_replicas: Some(observed.pool.as_ref().map_or(0, |p| p.available)),
        // Set by the reconcile, which knows the credentials.
        password_rotation: None,
        // Kept until a reconcile that ensured the children records anew (see `berth_kit::Ledger`).
        applied: db.status.as_ref().and_then(|s| s.applied.clone()),
    }
}

fn old(db: &Database) -> &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition] {
    db.status.as_ref().map_or(&[], |s| s.conditions.as_slice())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::database;
    use berth_api::{condition_status, find_condition};
    use k8s_openapi::api::apps::v1::{
        DeploymentCondition, DeploymentSpec, DeploymentStatus, StatefulSetStatus,
    };

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn sts(ready: Option<i32>) -> StatefulSet {
        StatefulSet {
            status: Some(StatefulSetStatus {
                ready_replicas: ready,
                replicas: 1,
                ..StatefulSetStatus::default()
            }),
            ..StatefulSet::default()
        }
    }

    fn deploy(wanted: i32, available: i32, condition: &str) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(wanted),
                ..DeploymentSpec::default()
            }),
            status: Some(DeploymentStatus {
                available_replicas: Some(available),
                conditions: Some(vec![DeploymentCondition {
                    type_: "Available".into(),
                    status: condition.into(),
                    ..DeploymentCondition::default()
                }]),
                ..DeploymentStatus::default()
            }),
            ..Deployment::default()
        }
    }

    #[test]
    fn ready_when_server_and_pool_are() {
        let db = database("storage: 1Gi\n");
        let seen = Observed::from(Some(&sts(Some(1))), Some(&deploy(2, 2, "True")));
        let s = status(&db, "tenant-zz", &seen, &at(10));
        assert_eq!(condition_status(&s.conditions, "Ready"), Some(true));
        assert_eq!(condition_status(&s.conditions, SERVER_READY), Some(true));
        assert_eq!(condition_status(&s.conditions, POOL_READY), Some(true));
        assert_eq!(s.endpoint.as_deref(), Some("ledger.tenant-zz.svc:5432"));
        assert_eq!(s.connection_secret.as_deref(), Some("ledger-connection"));
        assert_eq!(s.ready_replicas, Some(2));
        assert_eq!(s.observed_generation, Some(4));
        assert!(s.conditions.iter().all(|c| c.observed_generation == Some(4)));
    }

    #[test]
    fn a_refused_server_pod_is_named_without_the_pods_name() {
        let db = database("storage: 1Gi\n");
        let mut seen = Observed::from(Some(&sts(Some(0))), Some(&deploy(2, 2, "True")));
        seen.server_refused = Some(
            "create Pod ledger-postgres-0 in StatefulSet ledger-postgres failed error: pods \"ledger-postgres-0\" \
             is forbidden: exceeded quota: tenant-quota, requested: pods=1, used: pods=2, limited: pods=2"
                .to_owned(),
        );
        let s = status(&db, "n", &seen, &at(1));
        let server = find_condition(&s.conditions, SERVER_READY).unwrap();
        assert_eq!(
            (server.reason.as_str(), server.message.as_str()),
            (
                PODS_REFUSED,
                "the PostgreSQL pod cannot be created: exceeded quota: tenant-quota, requested: pods=1, \
                 used: pods=2, limited: pods=2"
            )
        );
        let ready = find_condition(&s.conditions, "Ready").unwrap();
        assert_eq!(ready.reason, PODS_REFUSED, "the overall condition says why");
    }

    #[test]
    fn not_ready_names_the_part_that_is_not() {
        let db = database("storage: 1Gi\n");
        let s = status(
            &db,
            "n",
            &Observed::from(Some(&sts(None)), Some(&deploy(2, 1, "True"))),
            &at(1),
        );
        let r = find_condition(&s.conditions, "Ready").unwrap();
        assert_eq!((r.status.as_str(), r.reason.as_str()), ("False", "Starting"));
        assert_eq!(condition_status(&s.conditions, POOL_READY), Some(true));

        let s = status(
            &db,
            "n",
            &Observed::from(Some(&sts(Some(1))), Some(&deploy(2, 0, "False"))),
            &at(1),
        );
        let pool = find_condition(&s.conditions, POOL_READY).unwrap();
        assert_eq!(
            (pool.reason.as_str(), pool.message.as_str()),
            (
                "Progressing",
                "waiting for pgbouncer pods to become available (2 wanted)"
            )
        );

        let mut refused = deploy(2, 0, "False");
        if let Some(st) = refused.status.as_mut() {
            st.conditions.get_or_insert_with(Vec::new).push(DeploymentCondition {
                type_: "ReplicaFailure".into(),
                status: "True".into(),
                reason: Some("FailedCreate".into()),
                message: Some("pods \"db-pgbouncer-5d8-x7k2p\" is forbidden: exceeded quota: tenant-quota, requested: pods=1, used: pods=1, limited: pods=1".into()),
                ..DeploymentCondition::default()
            });
        }
        let s = status(
            &db,
            "n",
            &Observed::from(Some(&sts(Some(1))), Some(&refused)),
            &at(1),
        );
        let pool = find_condition(&s.conditions, POOL_READY).unwrap();
        assert_eq!(
            (pool.reason.as_str(), pool.message.as_str()),
            (
                "PodsRefused",
                "pgbouncer pods cannot be created: exceeded quota: tenant-quota, requested: pods=1, used: pods=1, limited: pods=1"
            ),
            "the refusal, without the pod name that changes at every attempt"
        );

        let s = status(&db, "n", &Observed::default(), &at(1));
        assert_eq!(
            find_condition(&s.conditions, SERVER_READY).unwrap().reason,
            "Creating"
        );
        assert_eq!(s.ready_replicas, Some(0));
    }

    #[test]
    fn suspended_says_so() {
        let db = database("storage: 1Gi\nsuspend: true\n");
        let s = status(
            &db,
            "n",
            &Observed::from(Some(&sts(Some(0))), Some(&deploy(0, 0, "True"))),
            &at(1),
        );
        for t in ["Ready", SERVER_READY, POOL_READY] {
            let c = find_condition(&s.conditions, t).unwrap();
            assert_eq!(
                (c.status.as_str(), c.reason.as_str()),
                ("False", "Suspended"),
                "{t}"
            );
        }
    }

    #[test]
    fn an_unchanged_world_gives_an_identical_status() {
        let mut db = database("storage: 1Gi\n");
        let seen = Observed::from(Some(&sts(Some(1))), Some(&deploy(2, 2, "True")));
        let first = status(&db, "n", &seen, &at(100));
        db.status = Some(first.clone());
        assert_eq!(
            status(&db, "n", &seen, &at(999)),
            first,
            "no flip, no new time, no write"
        );
    }

    #[test]
    fn missing_credentials_turn_ready_false_and_keep_telling_what_the_workloads_do() {
        let mut db = database("storage: 1Gi\n");
        let seen = Observed::from(Some(&sts(Some(1))), Some(&deploy(2, 2, "True")));
        db.status = Some(status(&db, "tenant-zz", &seen, &at(10)));
        let s = held(
            &db,
            "tenant-zz",
            &seen,
            CREDENTIALS_MISSING,
            "restore it",
            &at(20),
        );
        let r = find_condition(&s.conditions, "Ready").unwrap();
        assert_eq!(
            (r.status.as_str(), r.reason.as_str(), r.message.as_str()),
            ("False", "CredentialsMissing", "restore it")
        );
        assert_eq!(r.last_transition_time, at(20), "Ready flipped");
        assert_eq!(condition_status(&s.conditions, SERVER_READY), Some(true));
        assert_eq!(condition_status(&s.conditions, POOL_READY), Some(true));
        assert_eq!(s.endpoint.as_deref(), Some("ledger.tenant-zz.svc:5432"));

        db.status = Some(s.clone());
        assert_eq!(
            held(
                &db,
                "tenant-zz",
                &seen,
                CREDENTIALS_MISSING,
                "restore it",
                &at(50)
            ),
            s,
            "no write while nothing changes"
        );
        let invalid = held(
            &db,
            "tenant-zz",
            &seen,
            CREDENTIALS_INVALID,
            "fix APP_USER",
            &at(55),
        );
        let r = find_condition(&invalid.conditions, "Ready").unwrap();
        assert_eq!(
            (r.reason.as_str(), r.message.as_str()),
            ("CredentialsInvalid", "fix APP_USER")
        );
        let back = status(&db, "tenant-zz", &seen, &at(60));
        assert_eq!(
            condition_status(&back.conditions, "Ready"),
            Some(true),
            "converges again"
        );
    }
}
