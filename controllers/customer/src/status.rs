//! The Customer's status as a pure function of what the reconcile saw. Children's own `Ready` conditions
//! are copied, so the Customer tells the same truth its children do.

use berth_api::{CustomerStatus, Database, Scheduler, Webhook, find_condition};
use berth_kit::conditions::{Verdict, conditions, ready};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

pub const NAMESPACE_READY: &str = "NamespaceReady";
pub const DATABASE_READY: &str = "DatabaseReady";
pub const SCHEDULER_READY: &str = "SchedulerReady";
pub const WEBHOOKS_READY: &str = "WebhooksReady";
pub use berth_api::SUSPENDED;

/// What became of the tenant namespace in this reconcile.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceState {
    /// Applied and in phase `Active`.
    Active,
    /// Applied, but not (yet) `Active`, e.g. `Terminating`.
    NotActive(String),
    /// berth does not touch the namespace of that name: `reason` says why (someone else's, or one an earlier
    /// tenant left behind and this Customer has not asked for), `message` what a person can do.
    Refused { reason: &'static str, message: String },
}

/// A child Customer feature as observed after applying it.
pub enum Feature<'a, K> {
    Disabled,
    Applied(&'a K),
    /// Not applied because the namespace is not usable.
    Blocked,
}

pub struct Observed<'a> {
    pub namespace_name: String,
    pub namespace: NamespaceState,
    pub database: Feature<'a, Database>,
    pub scheduler: Feature<'a, Scheduler>,
    pub webhooks: Feature<'a, Webhook>,
    pub suspended: bool,
    pub generation: Option<i64>,
}

#[must_use]
pub fn status(old: Option<&CustomerStatus>, seen: &Observed<'_>, now: &Time) -> CustomerStatus {
    let ns = match &seen.namespace {
        NamespaceState::Active => Verdict::new(
            NAMESPACE_READY,
            true,
            "Active",
            "namespace is active and isolated",
        ),
        NamespaceState::NotActive(phase) => Verdict::new(
            NAMESPACE_READY,
            false,
            "NotActive",
            format!("namespace is {phase}"),
        ),
        NamespaceState::Refused { reason, message } => {
            Verdict::new(NAMESPACE_READY, false, *reason, message.clone())
        }
    };
    let db = child(DATABASE_READY, &seen.database, |d| {
        (
            d.metadata.generation,
            d.status
                .as_ref()
                .map(|s| (s.observed_generation, s.conditions.as_slice())),
        )
    });
    let sched = child(SCHEDULER_READY, &seen.scheduler, |s| {
        (
            s.metadata.generation,
            s.status
                .as_ref()
                .map(|s| (s.observed_generation, s.conditions.as_slice())),
        )
    });
    let hooks = child(WEBHOOKS_READY, &seen.webhooks, |w| {
        (
            w.metadata.generation,
            w.status
                .as_ref()
                .map(|s| (s.observed_generation, s.conditions.as_slice())),
        )
    });
    // A tenant's own receiver being down is the tenant's to fix: it shows in WebhooksReady, and does not
    // make the tenant itself not Ready (nor page whoever watches Ready).
    let parts = [ns, db, sched];
    let mut all = vec![ready(&parts)];
    all.extend(parts);
    all.push(hooks);
    let summary = summary(&all, seen.suspended);
    let old_conditions = old.map_or(&[][..], |s| s.conditions.as_slice());
    all.push(suspended(old_conditions, seen.suspended));
    CustomerStatus {
        observed_generation: seen.generation,
        namespace: Some(seen.namespace_name.clone()),
        conditions: conditions(old_conditions, &all, seen.generation, now),
        summary: Some(summary),
        // Kept until a reconcile that ensured the children records anew (see `berth_kit::Ledger`).
        applied: old.and_then(|s| s.applied.clone()),
    }
}

fn suspended(old: &[Condition], now: bool) -> Verdict {
    if now {
        return Verdict::new(
            SUSPENDED,
            true,
            "Suspended",
            "spec.suspend is true: nothing new starts",
        );
    }
    let was =
        find_condition(old, SUSPENDED).is_some_and(|c| c.status == "True" || c.reason == berth_api::RESUMED);
    if was {
        Verdict::new(SUSPENDED, false, berth_api::RESUMED, "resumed after a suspension")
    } else {
        Verdict::new(SUSPENDED, false, "Active", "not suspended")
    }
}

type ChildView<'a> = (Option<i64>, Option<(Option<i64>, &'a [Condition])>);

fn child<'a, K>(type_: &'static str, f: &Feature<'a, K>, view: impl Fn(&'a K) -> ChildView<'a>) -> Verdict {
    let k = match f {
        Feature::Disabled => return Verdict::new(type_, true, "Disabled", "feature is not enabled"),
        Feature::Blocked => {
            return Verdict::new(
                type_,
                false,
                "NamespaceNotReady",
                "waiting for the tenant namespace",
            );
        }
        Feature::Applied(k) => *k,
    };
    match view(k) {
        (generation, Some((observed, conds))) if observed.is_some() && observed >= generation => {
            match find_condition(conds, "Ready") {
                Some(c) => Verdict::new(type_, c.status == "True", c.reason.clone(), c.message.clone()),
                None => Verdict::new(type_, false, "Pending", "no Ready condition reported yet"),
            }
        }
        _ => Verdict::new(
            type_,
            false,
            "Pending",
            "its controller has not observed the latest spec yet",
        ),
    }
}

fn summary(all: &[Verdict], suspended: bool) -> String {
    let mut parts: Vec<String> = all[1..]
        .iter()
        .map(|v| {
            let what = v.type_.trim_end_matches("Ready").to_lowercase();
            let state = if v.reason == "Disabled" {
                "off"
            } else if v.ok {
                "ready"
            } else {
                "not ready"
            };
            format!("{what} {state}")
        })
        .collect();
    if suspended {
        parts.push("suspended".to_owned());
    }
    parts.join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::{DatabaseStatus, SchedulerStatus};

    fn at(s: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(s).unwrap())
    }

    fn cond(type_: &str, ok: bool, reason: &str) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: if ok { "True" } else { "False" }.to_owned(),
            reason: reason.to_owned(),
            message: format!("{reason} message"),
            observed_generation: Some(1),
            last_transition_time: at(1),
        }
    }

    fn database(ready: bool, observed: i64) -> Database {
        let mut d = Database::default();
        d.metadata.generation = Some(2);
        d.status = Some(DatabaseStatus {
            observed_generation: Some(observed),
            conditions: vec![cond(
                "Ready",
                ready,
                if ready { "Ready" } else { "ServerStarting" },
            )],
            ..DatabaseStatus::default()
        });
        d
    }

    fn observed<'a>(db: Feature<'a, Database>, sched: Feature<'a, Scheduler>) -> Observed<'a> {
        Observed {
            namespace_name: "ns-q".into(),
            namespace: NamespaceState::Active,
            database: db,
            scheduler: sched,
            webhooks: Feature::Disabled,
            suspended: false,
            generation: Some(5),
        }
    }

    fn get<'a>(s: &'a CustomerStatus, t: &str) -> &'a Condition {
        find_condition(&s.conditions, t).unwrap()
    }

    #[test]
    fn children_ready_make_the_customer_ready() {
        let db = database(true, 2);
        let mut sched = Scheduler::default();
        sched.metadata.generation = Some(1);
        sched.status = Some(SchedulerStatus {
            observed_generation: Some(1),
            conditions: vec![cond("Ready", true, "Scheduling")],
            ..SchedulerStatus::default()
        });
        let s = status(
            None,
            &observed(Feature::Applied(&db), Feature::Applied(&sched)),
            &at(10),
        );
        assert_eq!(get(&s, "Ready").status, "True");
        assert_eq!(get(&s, SCHEDULER_READY).reason, "Scheduling");
        assert_eq!(
            s.summary.as_deref(),
            Some("namespace ready, database ready, scheduler ready, webhooks off")
        );
        assert_eq!(s.observed_generation, Some(5));
        assert_eq!(s.namespace.as_deref(), Some("ns-q"));
        assert_eq!(get(&s, SUSPENDED).reason, "Active");
    }

    #[test]
    fn a_failing_webhook_endpoint_shows_but_leaves_the_tenant_ready() {
        let mut hook = Webhook::default();
        hook.metadata.generation = Some(1);
        hook.status = Some(berth_api::WebhookStatus {
            observed_generation: Some(1),
            conditions: vec![cond("Ready", false, "EndpointFailing")],
            ..berth_api::WebhookStatus::default()
        });
        let mut seen = observed(Feature::Disabled, Feature::Disabled);
        seen.webhooks = Feature::Applied(&hook);
        let s = status(None, &seen, &at(10));
        assert_eq!(get(&s, WEBHOOKS_READY).status, "False");
        assert_eq!(get(&s, WEBHOOKS_READY).reason, "EndpointFailing");
        assert_eq!(get(&s, "Ready").status, "True");
        assert!(
            s.summary.as_deref().unwrap().ends_with("webhooks not ready"),
            "{s:?}"
        );
    }

    #[test]
    fn suspended_then_resumed_is_told_apart_from_never_suspended() {
        let mut seen = observed(Feature::Disabled, Feature::Disabled);
        seen.suspended = true;
        let s = status(None, &seen, &at(10));
        assert_eq!(
            (
                get(&s, SUSPENDED).status.as_str(),
                get(&s, SUSPENDED).reason.as_str()
            ),
            ("True", "Suspended")
        );
        seen.suspended = false;
        let resumed = status(Some(&s), &seen, &at(20));
        assert_eq!(get(&resumed, SUSPENDED).reason, "Resumed");
        assert_eq!(get(&resumed, SUSPENDED).last_transition_time, at(20));
        let again = status(Some(&resumed), &seen, &at(30));
        assert_eq!(
            get(&again, SUSPENDED).reason,
            "Resumed",
            "stays Resumed, its time unchanged"
        );
        assert_eq!(get(&again, SUSPENDED).last_transition_time, at(20));
    }

    #[test]
    fn child_reason_is_copied_and_blocks_ready() {
        let db = database(false, 2);
        let s = status(None, &observed(Feature::Applied(&db), Feature::Disabled), &at(10));
        assert_eq!(get(&s, DATABASE_READY).reason, "ServerStarting");
        assert_eq!(get(&s, "Ready").status, "False");
        assert_eq!(get(&s, "Ready").reason, "ServerStarting");
        assert_eq!(get(&s, SCHEDULER_READY).reason, "Disabled");
        assert_eq!(get(&s, SCHEDULER_READY).status, "True");
    }

    #[test]
    fn stale_child_status_is_not_trusted() {
        let db = database(true, 1);
        let s = status(None, &observed(Feature::Applied(&db), Feature::Disabled), &at(10));
        assert_eq!(get(&s, DATABASE_READY).reason, "Pending");
    }

    #[test]
    fn a_refused_namespace_is_reported_with_its_reason() {
        let mut seen = observed(Feature::Blocked, Feature::Blocked);
        seen.namespace = NamespaceState::Refused {
            reason: "NameConflict",
            message: "namespace ns-q exists and is not managed by berth".into(),
        };
        let s = status(None, &seen, &at(10));
        assert_eq!(get(&s, "Ready").reason, "NameConflict");
        assert!(get(&s, "Ready").message.contains("not managed by berth"));
        seen.namespace = NamespaceState::Refused {
            reason: "RetainedNamespace",
            message: "namespace ns-q was kept".into(),
        };
        let s = status(Some(&s), &seen, &at(20));
        assert_eq!(get(&s, NAMESPACE_READY).reason, "RetainedNamespace");
        assert_eq!(get(&s, "Ready").reason, "RetainedNamespace");
        assert_eq!(get(&s, "Ready").status, "False");
    }

    #[test]
    fn unchanged_world_gives_identical_status() {
        let db = database(true, 2);
        let first = status(None, &observed(Feature::Applied(&db), Feature::Disabled), &at(10));
        let again = status(
            Some(&first),
            &observed(Feature::Applied(&db), Feature::Disabled),
            &at(99),
        );
        assert_eq!(first, again, "no needless status write");
    }
}
