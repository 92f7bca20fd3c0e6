//! What happened in a tenant, read from its objects as they are now: every event is a fact that the
//! cluster still shows (a finished Job, a condition and the time it last changed), so a restarted or new
//! leader derives the same events with the same ids and sends only those not recorded as delivered.
//!
//! The price of deriving instead of recording: a state that came and went while no berth was running
//! (a Database Ready, then not Ready, within one outage) is reported as the state it ended in; a run's
//! event lasts as long as its Job (the Scheduler's history limits). Once an endpoint is owed an event,
//! the Webhook's status holds it whole (see `plan::hold`), so a fact changing under a retry loses nothing.

use berth_api::{Customer, Database, Scheduler, find_condition};
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::ResourceExt;
use serde_json::json;

use berth_scheduler::job::WORKFLOW;

use crate::event::{Event, EventType};

/// The tenant's objects events are derived from, all from its namespace (and its Customer).
pub struct Tenant<'a> {
    pub customer: &'a Customer,
    pub databases: &'a [Database],
    pub schedulers: &'a [Scheduler],
    /// Runs: Jobs the caller has already checked are berth's (sealed and controlled by a Scheduler).
    pub runs: &'a [Job],
}

/// Every event the tenant's objects show, oldest first (ties by id, so the order is stable).
#[must_use]
pub fn events(t: &Tenant<'_>) -> Vec<Event> {
    let source = source(t.customer);
    let mut out = Vec::new();
    out.extend(customer(t.customer, &source));
    for db in t.databases {
        out.extend(database(db, &source));
    }
    for s in t.schedulers {
        out.extend(skipped(s, &source));
    }
    for job in t.runs {
        out.extend(run(job, &source));
    }
    out.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    out
}

/// The CloudEvents `source` of every event of the tenant.
#[must_use]
pub fn source(customer: &Customer) -> String {
    format!("/customers/{}", customer.name_any())
}

fn unix(t: &Time) -> i64 {
    t.0.as_second()
}

fn true_since<'a>(conditions: &'a [Condition], type_: &str) -> Option<(bool, &'a Time)> {
    find_condition(conditions, type_).map(|c| (c.status == "True", &c.last_transition_time))
}

/// `CustomerReady` while the Customer is Ready (once per transition to Ready); `CustomerSuspended` and
/// `CustomerResumed` from its `Suspended` condition.
fn customer(c: &Customer, source: &str) -> Vec<Event> {
    let uid = c.uid().unwrap_or_default();
    let conditions = c
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let mut out = Vec::new();
    let subject = format!("customers/{}", c.name_any());
    if let Some((true, at)) = true_since(conditions, "Ready") {
        out.push(event(
            EventType::CustomerReady,
            &uid,
            at,
            source,
            &subject,
            json!({"customer": c.name_any()}),
        ));
    }
    if let Some(cond) = find_condition(conditions, SUSPENDED) {
        let kind = match (cond.status.as_str(), cond.reason.as_str()) {
            ("True", _) => Some(EventType::CustomerSuspended),
            ("False", RESUMED) => Some(EventType::CustomerResumed),
            _ => None,
        };
        if let Some(kind) = kind {
            let data = json!({"customer": c.name_any()});
            out.push(event(
                kind,
                &uid,
                &cond.last_transition_time,
                source,
                &subject,
                data,
            ));
        }
    }
    out
}

pub use berth_api::{RESUMED, SUSPENDED};

/// `DatabaseReady` or `DatabaseNotReady`, from the Database's `Ready` condition and its last transition.
fn database(db: &Database, source: &str) -> Option<Event> {
    let conditions = db
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let ready = find_condition(conditions, "Ready")?;
    let kind = match ready.status.as_str() {
        "True" => EventType::DatabaseReady,
        "False" => EventType::DatabaseNotReady,
        _ => return None,
    };
    let subject = format!("databases/{}", db.name_any());
    let data = json!({"database": db.name_any(), "reason": ready.reason, "message": ready.message});
    Some(event(
        kind,
        &db.uid().unwrap_or_default(),
        &ready.last_transition_time,
        source,
        &subject,
        data,
    ))
}

/// `WorkflowRunSkipped` when a workflow's count of missed runs grows: one event per count, at the due
/// time the scheduler last acted on.
fn skipped(s: &Scheduler, source: &str) -> Vec<Event> {
    let uid = s.uid().unwrap_or_default();
    let workflows = s
        .status
        .as_ref()
        .map(|st| st.workflows.as_slice())
        .unwrap_or_default();
    workflows
        .iter()
        .filter(|w| w.missed > 0)
        .filter_map(|w| {
            let at = w.last_schedule_time.as_ref()?;
            let subject = format!("workflows/{}", w.name);
            let data = json!({"workflow": w.name, "missed": w.missed, "scheduler": s.name_any()});
            let discriminator = format!("{}\0{}", w.name, w.missed);
            Some(Event {
                id: Event::id_for(EventType::WorkflowRunSkipped, &uid, &discriminator),
                kind: EventType::WorkflowRunSkipped,
                source: source.to_owned(),
                subject,
                time: unix(at),
                data,
            })
        })
        .collect()
}

/// `WorkflowRunSucceeded` or `WorkflowRunFailed` for a finished run, at the time it finished.
fn run(job: &Job, source: &str) -> Option<Event> {
    let conditions = job.status.as_ref()?.conditions.as_ref()?;
    let (kind, cond) = conditions.iter().find_map(|c| {
        let kind = match (c.type_.as_str(), c.status.as_str()) {
            ("Complete", "True") => EventType::WorkflowRunSucceeded,
            ("Failed", "True") => EventType::WorkflowRunFailed,
            _ => return None,
        };
        Some((kind, c))
    })?;
    let at = cond
        .last_transition_time
        .as_ref()
        .or(cond.last_probe_time.as_ref())?;
    let workflow = job.labels().get(WORKFLOW).cloned().unwrap_or_default();
    let status = job.status.as_ref()?;
    let data = json!({
        "workflow": workflow,
        "run": job.name_any(),
        "startTime": status.start_time.as_ref().map(|t| t.0.to_string()),
        "finishTime": Timestamp::from_second(unix(at)).ok().map(|t| t.to_string()),
        "reason": cond.reason,
        "message": cond.message,
    });
    Some(Event {
        id: Event::id_for(kind, &job.uid().unwrap_or_default(), ""),
        kind,
        source: source.to_owned(),
        subject: format!("workflows/{workflow}/runs/{}", job.name_any()),
        time: unix(at),
        data,
    })
}

fn event(
    kind: EventType,
    uid: &str,
    at: &Time,
    source: &str,
    subject: &str,
    data: serde_json::Value,
) -> Event {
    Event {
        // A transition is told from the next one of the same kind by its time.
        id: Event::id_for(kind, uid, &unix(at).to_string()),
        kind,
        source: source.to_owned(),
        subject: subject.to_owned(),
        time: unix(at),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_api::{CustomerStatus, DatabaseStatus, SchedulerStatus, WorkflowStatus};
    use k8s_openapi::api::batch::v1::{JobCondition, JobStatus};

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn cond(type_: &str, status: &str, reason: &str, at: &str) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: String::new(),
            last_transition_time: time(at),
            observed_generation: None,
        }
    }

    fn customer(conditions: Vec<Condition>) -> Customer {
        let mut c = Customer::default();
        c.metadata.name = Some("acme".to_owned());
        c.metadata.uid = Some("c-uid".to_owned());
        c.status = Some(CustomerStatus {
            conditions,
            ..CustomerStatus::default()
        });
        c
    }

    fn database(status: &str, at: &str) -> Database {
        let mut d = Database::default();
        d.metadata.name = Some("db".to_owned());
        d.metadata.uid = Some("d-uid".to_owned());
        d.status = Some(DatabaseStatus {
            conditions: vec![cond("Ready", status, "Whatever", at)],
            ..DatabaseStatus::default()
        });
        d
    }

    fn job(name: &str, uid: &str, type_: &str, at: &str) -> Job {
        let mut j = Job::default();
        j.metadata.name = Some(name.to_owned());
        j.metadata.uid = Some(uid.to_owned());
        j.metadata.labels = Some([(WORKFLOW.to_owned(), "nightly".to_owned())].into());
        j.status = Some(JobStatus {
            conditions: Some(vec![JobCondition {
                type_: type_.to_owned(),
                status: "True".to_owned(),
                last_transition_time: Some(time(at)),
                ..JobCondition::default()
            }]),
            ..JobStatus::default()
        });
        j
    }

    fn kinds(events: &[Event]) -> Vec<EventType> {
        events.iter().map(|e| e.kind).collect()
    }

    #[test]
    fn finished_runs_and_a_ready_database_are_events_oldest_first() {
        let c = customer(vec![]);
        let dbs = [database("True", "2026-01-01T10:00:00Z")];
        let runs = [
            job("nightly-2", "j2", "Failed", "2026-01-01T12:00:00Z"),
            job("nightly-1", "j1", "Complete", "2026-01-01T11:00:00Z"),
            job("nightly-3", "j3", "Suspended", "2026-01-01T13:00:00Z"),
        ];
        let got = events(&Tenant {
            customer: &c,
            databases: &dbs,
            schedulers: &[],
            runs: &runs,
        });
        assert_eq!(
            kinds(&got),
            [
                EventType::DatabaseReady,
                EventType::WorkflowRunSucceeded,
                EventType::WorkflowRunFailed
            ]
        );
        assert_eq!(got[1].subject, "workflows/nightly/runs/nightly-1");
        assert_eq!(got[1].source, "/customers/acme");
        assert_eq!(got[1].data["workflow"], "nightly");
    }

    #[test]
    fn the_same_fact_has_the_same_id_and_a_new_transition_a_new_one() {
        let c = customer(vec![]);
        let once = |at: &str| {
            let dbs = [database("True", at)];
            events(&Tenant {
                customer: &c,
                databases: &dbs,
                schedulers: &[],
                runs: &[],
            })
            .remove(0)
            .id
        };
        assert_eq!(once("2026-01-01T10:00:00Z"), once("2026-01-01T10:00:00Z"));
        assert_ne!(once("2026-01-01T10:00:00Z"), once("2026-01-02T10:00:00Z"));
        let a = events(&Tenant {
            customer: &c,
            databases: &[],
            schedulers: &[],
            runs: &[job("r", "same-uid", "Complete", "2026-01-01T10:00:00Z")],
        });
        let b = events(&Tenant {
            customer: &c,
            databases: &[],
            schedulers: &[],
            runs: &[job("r", "same-uid", "Failed", "2026-01-01T10:00:00Z")],
        });
        assert_ne!(a[0].id, b[0].id, "type is part of the id");
    }

    #[test]
    fn suspend_and_resume_come_from_the_customer_condition_never_from_a_fresh_customer() {
        let of = |conditions| {
            let c = customer(conditions);
            kinds(&events(&Tenant {
                customer: &c,
                databases: &[],
                schedulers: &[],
                runs: &[],
            }))
        };
        assert_eq!(
            of(vec![cond(SUSPENDED, "False", "Active", "2026-01-01T10:00:00Z")]),
            []
        );
        assert_eq!(
            of(vec![cond(SUSPENDED, "True", "Suspended", "2026-01-01T10:00:00Z")]),
            [EventType::CustomerSuspended]
        );
        assert_eq!(
            of(vec![
                cond("Ready", "True", "Ready", "2026-01-01T09:00:00Z"),
                cond(SUSPENDED, "False", RESUMED, "2026-01-01T10:00:00Z")
            ]),
            [EventType::CustomerReady, EventType::CustomerResumed]
        );
    }

    #[test]
    fn a_growing_missed_count_is_one_skipped_event_per_count() {
        let c = customer(vec![]);
        let sched = |missed| {
            let mut s = Scheduler::default();
            s.metadata.name = Some("workflows".to_owned());
            s.metadata.uid = Some("s-uid".to_owned());
            s.status = Some(SchedulerStatus {
                workflows: vec![WorkflowStatus {
                    name: "nightly".to_owned(),
                    last_schedule_time: Some(time("2026-01-01T10:00:00Z")),
                    missed,
                    ..WorkflowStatus::default()
                }],
                ..SchedulerStatus::default()
            });
            s
        };
        let ids = |missed| {
            let s = [sched(missed)];
            events(&Tenant {
                customer: &c,
                databases: &[],
                schedulers: &s,
                runs: &[],
            })
            .into_iter()
            .map(|e| e.id)
            .collect::<Vec<_>>()
        };
        assert!(ids(0).is_empty());
        assert_eq!(ids(1).len(), 1);
        assert_ne!(ids(1), ids(2));
    }
}
