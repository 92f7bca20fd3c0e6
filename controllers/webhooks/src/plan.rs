//! Per endpoint: which events to send now, which to give up on, and the endpoint's status after the
//! attempts. Pure, so the rules of at-least-once delivery are tested without a cluster or a receiver.

use std::collections::BTreeSet;
use std::time::Duration;

use berth_api::{EndpointStatus, HeldEvent, WebhookEndpoint};
use jiff::Timestamp;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use crate::deliver::Outcome;
use crate::event::Event;
use crate::retry::Backoff;

/// At most this many events go to one endpoint per reconcile; the rest wait for the next one, which
/// comes at once. Keeps one reconcile short and its status write bounded.
pub const BATCH: usize = 32;

/// What to do for one endpoint now.
#[derive(Debug, PartialEq)]
pub struct Due<'a> {
    /// Send these, oldest first.
    pub send: Vec<&'a Event>,
    /// Older than the retry window: settled without sending.
    pub expired: Vec<&'a Event>,
    /// Undelivered events, those to send now included.
    pub pending: usize,
    /// Every event this endpoint is owed, whether or not it is sent now.
    pub owed: Vec<&'a Event>,
    /// The endpoint is backing off (or gone): nothing is sent before this time.
    pub wait_until: Option<Timestamp>,
}

/// The endpoint's status to start from: the recorded one while its URL is unchanged, else a fresh one
/// that sends only what happens from `start` on, so a new endpoint is not flooded with the tenant's
/// history. `start` is when the Webhook was made for endpoints it was made with (what happens while berth
/// first looks at it counts), and the present for endpoints added or moved later.
#[must_use]
pub fn baseline(
    endpoint: &WebhookEndpoint,
    old: Option<&EndpointStatus>,
    start: Timestamp,
) -> EndpointStatus {
    match old {
        Some(s) if s.url == endpoint.url => s.clone(),
        _ => EndpointStatus {
            name: endpoint.name.clone(),
            url: endpoint.url.clone(),
            since: Some(Time(start)),
            ..EndpointStatus::default()
        },
    }
}

fn subscribed(endpoint: &WebhookEndpoint, event: &Event) -> bool {
    endpoint.events.is_empty() || endpoint.events.contains(&event.kind)
}

/// The events to deliver from: those the tenant's objects show, and those held in status because an
/// endpoint was owed them (whose facts may have changed since), oldest first.
#[must_use]
pub fn with_held(mut derived: Vec<Event>, held: &[HeldEvent], source: &str) -> Vec<Event> {
    let known: BTreeSet<String> = derived.iter().map(|e| e.id.clone()).collect();
    derived.extend(held.iter().filter(|h| !known.contains(&h.id)).map(|h| Event {
        id: h.id.clone(),
        kind: h.kind,
        source: source.to_owned(),
        subject: h.subject.clone(),
        time: h.time.0.as_second(),
        data: serde_json::from_str(&h.data).unwrap_or_default(),
    }));
    derived.sort_by(|a, b| (a.time, &a.id).cmp(&(b.time, &b.id)));
    derived
}

/// What to hold in status: every event some endpoint is still `owed`, the newest [`MAX_HELD`] of them.
#[must_use]
pub fn hold(events: &[Event], owed: &BTreeSet<String>) -> Vec<HeldEvent> {
    let mut held: Vec<HeldEvent> = events
        .iter()
        .filter(|e| owed.contains(&e.id))
        .filter_map(|e| {
            Some(HeldEvent {
                id: e.id.clone(),
                kind: e.kind,
                subject: e.subject.clone(),
                time: Time(Timestamp::from_second(e.time).ok()?),
                data: e.data.to_string(),
            })
        })
        .collect();
    let extra = held.len().saturating_sub(MAX_HELD);
    held.drain(..extra);
    held
}

/// The most events held in a Webhook's status (its CRD says the same).
pub const MAX_HELD: usize = 256;

/// What `endpoint` (with status `st`) is owed from `events` at `now`.
#[must_use]
pub fn due<'a>(
    endpoint: &WebhookEndpoint,
    st: &EndpointStatus,
    events: &'a [Event],
    now: Timestamp,
    retry_for: Duration,
) -> Due<'a> {
    let settled: BTreeSet<&str> = st.settled.iter().map(String::as_str).collect();
    let since = st.since.as_ref().map_or(i64::MIN, |t| t.0.as_second());
    let oldest_kept = now
        .as_second()
        .saturating_sub(i64::try_from(retry_for.as_secs()).unwrap_or(i64::MAX));
    let (mut send, mut expired) = (Vec::new(), Vec::new());
    for e in events {
        if e.time < since || !subscribed(endpoint, e) || settled.contains(e.id.as_str()) {
            continue;
        }
        if e.time < oldest_kept {
            expired.push(e);
        } else {
            send.push(e);
        }
    }
    let pending = send.len();
    let owed = if st.gone { Vec::new() } else { send.clone() };
    let waiting = st.next_attempt.as_ref().map(|t| t.0).filter(|t| *t > now);
    if st.gone || waiting.is_some() {
        return Due {
            send: Vec::new(),
            expired,
            pending,
            owed,
            wait_until: waiting,
        };
    }
    send.truncate(BATCH);
    Due {
        send,
        expired,
        pending,
        owed,
        wait_until: None,
    }
}

/// The endpoint's status after the attempts: `outcomes` answer `due.send` in order (fewer when the
/// sender stopped at a failure). `current` holds the ids of every event the tenant still shows, so ids of
/// facts that are gone are dropped. `jitter` is in `[0, 1)`.
#[must_use]
pub fn settle(
    mut st: EndpointStatus,
    due: &Due<'_>,
    outcomes: &[Outcome],
    current: &BTreeSet<&str>,
    now: Timestamp,
    backoff: &Backoff,
    jitter: f64,
) -> EndpointStatus {
    st.settled.retain(|id| current.contains(id.as_str()));
    st.settled.extend(due.expired.iter().map(|e| e.id.clone()));
    st.expired += i64::try_from(due.expired.len()).unwrap_or(i64::MAX);
    let mut delivered = 0;
    for (event, outcome) in due.send.iter().zip(outcomes) {
        match outcome {
            Outcome::Delivered(_) => {
                st.settled.push(event.id.clone());
                delivered += 1;
                st.last_success = Some(Time(now));
                st.consecutive_failures = 0;
                st.next_attempt = None;
            }
            Outcome::Gone => {
                st.gone = true;
                st.last_failure = Some(Time(now));
                st.last_failure_reason =
                    Some("endpoint answered 410 Gone; it is no longer called".to_owned());
            }
            Outcome::Retry { reason } => {
                let attempt = u32::try_from(st.consecutive_failures).unwrap_or(u32::MAX);
                st.consecutive_failures = st.consecutive_failures.saturating_add(1);
                st.last_failure = Some(Time(now));
                st.last_failure_reason = Some(reason.clone());
                let delay = backoff.next_delay(attempt, jitter);
                let delay = jiff::SignedDuration::try_from(delay).unwrap_or(jiff::SignedDuration::MAX);
                st.next_attempt = now.checked_add(delay).ok().map(Time);
            }
        }
    }
    st.pending = i32::try_from(due.pending.saturating_sub(delivered)).unwrap_or(i32::MAX);
    st
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventType;
    use serde_json::Value;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn endpoint(events: &[EventType]) -> WebhookEndpoint {
        WebhookEndpoint {
            name: "ops".to_owned(),
            url: "https://hooks.example.com/berth".to_owned(),
            events: events.to_vec(),
            ca_bundle: None,
        }
    }

    fn event(id: &str, kind: EventType, time: &str) -> Event {
        Event {
            id: id.to_owned(),
            kind,
            source: "/customers/acme".to_owned(),
            subject: "x".to_owned(),
            time: at(time).as_second(),
            data: Value::Null,
        }
    }

    const DAY: Duration = Duration::from_secs(86_400);

    fn ids(events: &[&Event]) -> Vec<String> {
        events.iter().map(|e| e.id.clone()).collect()
    }

    #[test]
    fn a_new_endpoint_gets_what_happens_from_now_on_and_only_what_it_subscribed_to() {
        let now = at("2026-01-01T12:00:00Z");
        let ep = endpoint(&[EventType::WorkflowRunFailed]);
        let st = baseline(&ep, None, now);
        let events = [
            event("old", EventType::WorkflowRunFailed, "2026-01-01T11:00:00Z"),
            event("ok", EventType::WorkflowRunSucceeded, "2026-01-01T12:00:00Z"),
            event("bad", EventType::WorkflowRunFailed, "2026-01-01T12:00:00Z"),
        ];
        let due = due(&ep, &st, &events, now, DAY);
        assert_eq!(ids(&due.send), ["bad"]);
        assert_eq!(due.pending, 1);
    }

    #[test]
    fn a_settled_event_is_never_sent_again_and_its_id_goes_when_its_fact_does() {
        let now = at("2026-01-01T12:00:00Z");
        let ep = endpoint(&[]);
        let mut st = baseline(&ep, None, at("2026-01-01T00:00:00Z"));
        let events = [
            event("a", EventType::DatabaseReady, "2026-01-01T10:00:00Z"),
            event("b", EventType::WorkflowRunSucceeded, "2026-01-01T11:00:00Z"),
        ];
        let d = due(&ep, &st, &events, now, DAY);
        let current: BTreeSet<&str> = ["a", "b"].into();
        let outcomes = [Outcome::Delivered(200), Outcome::Delivered(204)];
        st = settle(st, &d, &outcomes, &current, now, &Backoff::default(), 0.5);
        assert_eq!(st.settled, ["a", "b"]);
        assert_eq!(st.pending, 0);
        assert!(
            due(&ep, &st, &events, now, DAY).send.is_empty(),
            "at least once, not again and again"
        );

        // The run's Job is gone (history limit): its id goes too, the Database's stays.
        let d = due(&ep, &st, &events[..1], now, DAY);
        let st = settle(st, &d, &[], &["a"].into(), now, &Backoff::default(), 0.5);
        assert_eq!(st.settled, ["a"]);
    }

    #[test]
    fn a_failure_backs_off_and_keeps_the_event_pending_then_a_success_recovers() {
        let now = at("2026-01-01T12:00:00Z");
        let ep = endpoint(&[]);
        let st = baseline(&ep, None, at("2026-01-01T00:00:00Z"));
        let events = [event("a", EventType::DatabaseReady, "2026-01-01T11:00:00Z")];
        let current: BTreeSet<&str> = ["a"].into();
        let d = due(&ep, &st, &events, now, DAY);
        let fail = [Outcome::Retry {
            reason: "endpoint answered 500 Internal Server Error".to_owned(),
        }];
        let st = settle(st, &d, &fail, &current, now, &Backoff::default(), 0.0);
        assert_eq!((st.consecutive_failures, st.pending), (1, 1));
        assert_eq!(st.next_attempt, Some(Time(at("2026-01-01T12:00:02.5Z"))));
        assert!(st.settled.is_empty());

        let waiting = due(&ep, &st, &events, now, DAY);
        assert!(waiting.send.is_empty());
        assert_eq!(waiting.wait_until, Some(at("2026-01-01T12:00:02.5Z")));

        let later = at("2026-01-01T12:00:03Z");
        let d = due(&ep, &st, &events, later, DAY);
        assert_eq!(ids(&d.send), ["a"], "the same event again, so the same id");
        let st = settle(
            st,
            &d,
            &[Outcome::Delivered(200)],
            &current,
            later,
            &Backoff::default(),
            0.0,
        );
        assert_eq!(
            (st.consecutive_failures, st.pending, st.next_attempt.clone()),
            (0, 0, None)
        );
        assert_eq!(
            st.last_failure_reason.as_deref(),
            Some("endpoint answered 500 Internal Server Error")
        );
    }

    #[test]
    fn events_older_than_the_retry_window_are_given_up_and_counted() {
        let now = at("2026-01-03T12:00:00Z");
        let ep = endpoint(&[]);
        let st = baseline(&ep, None, at("2026-01-01T00:00:00Z"));
        let events = [
            event("stale", EventType::DatabaseReady, "2026-01-01T11:00:00Z"),
            event("fresh", EventType::DatabaseNotReady, "2026-01-03T11:00:00Z"),
        ];
        let d = due(&ep, &st, &events, now, DAY);
        assert_eq!(
            (ids(&d.expired), ids(&d.send)),
            (vec!["stale".to_owned()], vec!["fresh".to_owned()])
        );
        let st = settle(
            st,
            &d,
            &[Outcome::Delivered(200)],
            &["stale", "fresh"].into(),
            now,
            &Backoff::default(),
            0.0,
        );
        assert_eq!(st.expired, 1);
        assert_eq!(st.settled, ["stale", "fresh"]);
    }

    #[test]
    fn gone_stops_deliveries_until_the_url_changes() {
        let now = at("2026-01-01T12:00:00Z");
        let ep = endpoint(&[]);
        let st = baseline(&ep, None, at("2026-01-01T00:00:00Z"));
        let events = [event("a", EventType::DatabaseReady, "2026-01-01T11:00:00Z")];
        let d = due(&ep, &st, &events, now, DAY);
        let st = settle(
            st,
            &d,
            &[Outcome::Gone],
            &["a"].into(),
            now,
            &Backoff::default(),
            0.0,
        );
        assert!(st.gone);
        assert!(due(&ep, &st, &events, now, DAY).send.is_empty());
        let mut moved = ep.clone();
        moved.url = "https://hooks.example.com/v2".to_owned();
        let fresh = baseline(&moved, Some(&st), now);
        assert!(!fresh.gone && fresh.settled.is_empty());
        assert_eq!(fresh.since, Some(Time(now)));
    }

    #[test]
    fn an_owed_event_is_held_and_still_sent_after_its_fact_changed() {
        let now = at("2026-01-01T12:00:00Z");
        let ep = endpoint(&[]);
        let st = baseline(&ep, None, at("2026-01-01T00:00:00Z"));
        let not_ready = event("nr", EventType::DatabaseNotReady, "2026-01-01T11:00:00Z");
        let events = with_held(vec![not_ready], &[], "/customers/acme");
        let d = due(&ep, &st, &events, now, DAY);
        let fail = [Outcome::Retry {
            reason: "500".to_owned(),
        }];
        let st = settle(st, &d, &fail, &["nr"].into(), now, &Backoff::default(), 0.0);
        let owed: BTreeSet<String> = d.owed.iter().map(|e| e.id.clone()).collect();
        let held = hold(&events, &owed);
        assert_eq!(held.len(), 1);

        // The Database is Ready now: its objects no longer show the NotReady, the status still does.
        let ready = event("r", EventType::DatabaseReady, "2026-01-01T11:30:00Z");
        let events = with_held(vec![ready], &held, "/customers/acme");
        let later = at("2026-01-01T12:01:00Z");
        let d = due(&ep, &st, &events, later, DAY);
        assert_eq!(ids(&d.send), ["nr", "r"], "the owed one first, unchanged");
        assert_eq!(d.send[0].kind, EventType::DatabaseNotReady);
        let current: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();
        let ok = [Outcome::Delivered(200), Outcome::Delivered(200)];
        let st = settle(st, &d, &ok, &current, later, &Backoff::default(), 0.0);
        assert!(
            hold(&events, &BTreeSet::new()).is_empty(),
            "nothing owed, nothing held"
        );
        assert_eq!(st.settled, ["nr", "r"]);
    }

    #[test]
    fn one_reconcile_sends_at_most_a_batch() {
        let now = at("2026-01-01T12:00:00Z");
        let ep = endpoint(&[]);
        let st = baseline(&ep, None, at("2026-01-01T00:00:00Z"));
        let events: Vec<Event> = (0..BATCH + 5)
            .map(|i| {
                event(
                    &format!("e{i}"),
                    EventType::WorkflowRunSucceeded,
                    "2026-01-01T11:00:00Z",
                )
            })
            .collect();
        let d = due(&ep, &st, &events, now, DAY);
        assert_eq!((d.send.len(), d.pending), (BATCH, BATCH + 5));
    }
}
