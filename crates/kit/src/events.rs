//! Publishes events.k8s.io/v1 Events the way kube's `Recorder` does, as seen from the cluster: the same
//! fields and names, and a repeat within [`TTL`] becomes a `series` patch on the first Event.
//!
//! Why not the `Recorder`: it keeps every Event it published, whole (~2.4 KB each), for six minutes, and
//! walks all of them under a write lock on every publish. At a thousand tenants that was a visible share
//! of the operator's peak memory. A repeat needs only where the first Event is and how often it was seen,
//! so that is all this keeps, under a hash of what makes two events the same, and it sweeps at most once
//! a minute.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Mutex, PoisonError};

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event as K8sEvent, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::events::{Event, EventType};

use crate::error::is_not_found;

/// How long a repeat still aggregates into the first Event (kube's `Recorder` and client-go agree).
const TTL: SignedDuration = SignedDuration::from_mins(6);
/// How often expired series are dropped: a publish must not walk the whole map.
const SWEEP_EVERY: SignedDuration = SignedDuration::from_mins(1);

/// One controller's Event publisher.
pub struct Publisher {
    client: kube::Client,
    controller: String,
    instance: String,
    memory: Mutex<Memory>,
}

impl Publisher {
    /// `instance` tells replicas apart (reportingInstance); without one, the controller's name stands in,
    /// as with the `Recorder`.
    #[must_use]
    pub fn new(client: kube::Client, controller: String, instance: Option<String>) -> Self {
        let instance = instance.unwrap_or_else(|| controller.clone());
        Self {
            client,
            controller,
            instance,
            memory: Mutex::default(),
        }
    }

    /// Creates an Event on `regarding`, or counts a repeat on the Event it repeats.
    ///
    /// # Errors
    /// Whatever the API server answers, but a 404 on a repeat: the first Event is gone (expired or
    /// deleted), so a new one is created instead.
    pub async fn publish(&self, ev: &Event, regarding: &ObjectReference) -> Result<(), kube::Error> {
        let now = Timestamp::now();
        let key = key(ev, regarding);
        // The lock is never held across an await: a repeat is looked up, then written without it.
        let repeat = self.memory().repeat(key, now);
        if let Some(r) = repeat {
            let events = Api::<K8sEvent>::namespaced(self.client.clone(), &r.namespace);
            let series = serde_json::json!({ "series": EventSeries {
                count: r.count,
                last_observed_time: MicroTime(now),
            }});
            match events
                .patch(&r.name, &PatchParams::default(), &Patch::Merge(&series))
                .await
            {
                Ok(_) => {
                    self.memory().remember(key, Series { last: now, ..r });
                    return Ok(());
                }
                Err(e) if is_not_found(&e) => {}
                Err(e) => return Err(e),
            }
        }
        let event = self.build(ev, regarding, now);
        let (namespace, name) = (event.metadata.namespace.clone(), event.metadata.name.clone());
        let namespace = namespace.unwrap_or_default();
        Api::<K8sEvent>::namespaced(self.client.clone(), &namespace)
            .create(&PostParams::default(), &event)
            .await?;
        self.memory().remember(
            key,
            Series {
                namespace: namespace.into(),
                name: name.unwrap_or_default().into(),
                count: 1,
                last: now,
            },
        );
        Ok(())
    }

    /// The Event kube's `Recorder` would create.
    fn build(&self, ev: &Event, regarding: &ObjectReference, now: Timestamp) -> K8sEvent {
        let name = regarding.name.as_deref().unwrap_or(&self.controller);
        K8sEvent {
            action: Some(ev.action.clone()),
            reason: Some(ev.reason.clone()),
            note: ev.note.clone(),
            type_: Some(severity(ev.type_).to_owned()),
            regarding: Some(regarding.clone()),
            related: ev.secondary.clone(),
            reporting_controller: Some(self.controller.clone()),
            reporting_instance: Some(self.instance.clone()),
            event_time: Some(MicroTime(now)),
            metadata: ObjectMeta {
                // Cluster-scoped objects' Events live in `default`.
                namespace: Some(
                    regarding
                        .namespace
                        .clone()
                        .unwrap_or_else(|| "default".to_owned()),
                ),
                name: Some(format!("{name}.{:x}", now.as_nanosecond())),
                ..ObjectMeta::default()
            },
            ..K8sEvent::default()
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        // The map holds no invariant a panic could break halfway.
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn severity(t: EventType) -> &'static str {
    match t {
        EventType::Normal => "Normal",
        EventType::Warning => "Warning",
    }
}

/// What makes two events one series: what the `Recorder` compares, but for the reporter, which is fixed
/// per publisher. The whole references count, resourceVersion included, as they do for the `Recorder`
/// and client-go: an event on a newer version of the object is a new Event.
fn key(ev: &Event, regarding: &ObjectReference) -> u64 {
    let mut h = DefaultHasher::new();
    severity(ev.type_).hash(&mut h);
    ev.action.hash(&mut h);
    ev.reason.hash(&mut h);
    reference(regarding, &mut h);
    match &ev.secondary {
        None => 0u8.hash(&mut h),
        Some(r) => {
            1u8.hash(&mut h);
            reference(r, &mut h);
        }
    }
    h.finish()
}

fn reference(r: &ObjectReference, h: &mut DefaultHasher) {
    // Destructured without `..`: a field k8s-openapi adds cannot be left out of the key unnoticed.
    let ObjectReference {
        api_version,
        field_path,
        kind,
        name,
        namespace,
        resource_version,
        uid,
    } = r;
    (
        api_version,
        field_path,
        kind,
        name,
        namespace,
        resource_version,
        uid,
    )
        .hash(h);
}

/// Where a series' first Event is, how many times it was seen and when last.
#[derive(Clone, Debug, PartialEq)]
struct Series {
    namespace: Box<str>,
    name: Box<str>,
    count: i32,
    last: Timestamp,
}

#[derive(Default)]
struct Memory {
    series: HashMap<u64, Series>,
    swept: Option<Timestamp>,
}

impl Memory {
    /// The series a publish at `now` continues, with its count already raised; `None` for a new Event.
    fn repeat(&mut self, key: u64, now: Timestamp) -> Option<Series> {
        if self.swept.is_none_or(|at| at + SWEEP_EVERY <= now) {
            self.series.retain(|_, s| live(s, now));
            self.swept = Some(now);
        }
        // Between sweeps an expired series may still be here; it must not be continued.
        let s = self.series.get(&key).filter(|s| live(s, now))?;
        Some(Series {
            count: s.count.saturating_add(1),
            ..s.clone()
        })
    }

    fn remember(&mut self, key: u64, series: Series) {
        self.series.insert(key, series);
    }
}

fn live(s: &Series, now: Timestamp) -> bool {
    s.last + TTL > now
}

#[cfg(test)]
mod tests {
    use super::*;

    fn db(rv: &str) -> ObjectReference {
        ObjectReference {
            api_version: Some("berth.example/v1".into()),
            kind: Some("Database".into()),
            name: Some("orders".into()),
            namespace: Some("ns-x".into()),
            resource_version: Some(rv.into()),
            uid: Some("u-1".into()),
            field_path: None,
        }
    }

    fn event(type_: EventType, reason: &str, note: &str) -> Event {
        Event {
            type_,
            reason: reason.into(),
            note: Some(note.into()),
            action: "Reconcile".into(),
            secondary: None,
        }
    }

    fn at(secs: i64) -> Timestamp {
        Timestamp::from_second(1_700_000_000 + secs).unwrap()
    }

    fn first(last: Timestamp) -> Series {
        Series {
            namespace: "ns-x".into(),
            name: "orders.1".into(),
            count: 1,
            last,
        }
    }

    #[test]
    fn keys_tell_apart_what_makes_a_new_event() {
        let base = key(&event(EventType::Normal, "Rotated", "a"), &db("5"));
        // The note is not part of it: a repeat with another text still counts on the first Event.
        assert_eq!(base, key(&event(EventType::Normal, "Rotated", "b"), &db("5")));
        assert_ne!(base, key(&event(EventType::Warning, "Rotated", "a"), &db("5")));
        assert_ne!(base, key(&event(EventType::Normal, "Issued", "a"), &db("5")));
        assert_ne!(base, key(&event(EventType::Normal, "Rotated", "a"), &db("6")));
        let mut other_action = event(EventType::Normal, "Rotated", "a");
        other_action.action = "Delete".into();
        assert_ne!(base, key(&other_action, &db("5")));
        let mut related = event(EventType::Normal, "Rotated", "a");
        related.secondary = Some(db("5"));
        assert_ne!(base, key(&related, &db("5")));
        // Fields that only differ in where one ends and the next begins.
        let mut a = db("5");
        let mut b = db("5");
        (a.name, a.namespace) = (Some("ab".into()), Some("c".into()));
        (b.name, b.namespace) = (Some("a".into()), Some("bc".into()));
        let ev = event(EventType::Normal, "Rotated", "a");
        assert_ne!(key(&ev, &a), key(&ev, &b));
        // Absent and empty differ.
        b = a.clone();
        b.field_path = Some(String::new());
        assert_ne!(key(&ev, &a), key(&ev, &b));
    }

    #[test]
    fn a_repeat_counts_on_the_first_event() {
        let mut m = Memory::default();
        assert_eq!(m.repeat(7, at(0)), None);
        m.remember(7, first(at(0)));
        let second = m.repeat(7, at(10)).unwrap();
        assert_eq!((second.count, &*second.name), (2, "orders.1"));
        m.remember(
            7,
            Series {
                last: at(10),
                ..second
            },
        );
        assert_eq!(m.repeat(7, at(20)).unwrap().count, 3);
        assert_eq!(m.repeat(8, at(20)), None);
    }

    #[test]
    fn a_series_expires_six_minutes_after_it_was_last_seen() {
        let mut m = Memory::default();
        m.remember(7, first(at(0)));
        // Seen again at 5 minutes: that keeps it alive past the first Event's six minutes.
        let again = m.repeat(7, at(300)).unwrap();
        m.remember(
            7,
            Series {
                last: at(300),
                ..again
            },
        );
        assert!(m.repeat(7, at(659)).is_some());
        assert_eq!(m.repeat(7, at(660)), None);
    }

    #[test]
    fn expired_series_are_swept_at_most_once_a_minute() {
        let mut m = Memory::default();
        m.remember(1, first(at(0)));
        m.remember(2, first(at(50)));
        // Swept at 365: the first is gone (expired at 360), the second lives until 410.
        m.repeat(9, at(365));
        assert_eq!(m.series.keys().collect::<Vec<_>>(), [&2]);
        // Expired, but the next sweep is due at 425: kept until then, though never continued.
        assert_eq!(m.repeat(2, at(415)), None);
        assert_eq!(m.series.len(), 1);
        m.repeat(9, at(425));
        assert!(m.series.is_empty());
    }
}
