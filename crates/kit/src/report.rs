//! The end of every reconcile, for every kind: success forgets past failures; a failure a person must act
//! on (see [`Error::needs_attention`]) is put where they look — `Ready=False` with the error's category as
//! reason and its message, and a Warning event — each only when that news is new. The error policy then
//! counts it and backs off.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::conditions::{READY, Verdict, conditions, now};
use crate::context::Context;
use crate::error::{Error, Result};

/// Settles a reconcile's `result` for `obj` (see the module documentation) and returns it.
///
/// # Errors
/// `result`'s error; a failure to report it is only logged.
pub async fn settle<K>(kit: &Context, api: &Api<K>, obj: &K, result: Result<Action>) -> Result<Action>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    match result {
        Ok(action) => {
            kit.succeeded(obj);
            Ok(action)
        }
        Err(e) if e.needs_attention() => {
            if let Err(unreported) = report(kit, api, obj, &e).await {
                tracing::warn!(error = %unreported, "could not report the failure in status");
            }
            Err(e)
        }
        Err(e) => Err(e),
    }
}

async fn report<K>(kit: &Context, api: &Api<K>, obj: &K, error: &Error) -> Result<()>
where
    K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
{
    // The status as it is, whatever the kind; only its `Ready` condition changes.
    let mut status = serde_json::to_value(obj)?
        .get("status")
        .filter(|s| s.is_object())
        .cloned()
        .unwrap_or_else(|| serde_json::json!({}));
    let old: Vec<Condition> = match status.get("conditions") {
        Some(c) => serde_json::from_value(c.clone())?,
        None => Vec::new(),
    };
    let (category, message) = (error.category(), error.to_string());
    let Some(new) = failed_ready(&old, category, &message, obj.meta().generation, &now()) else {
        return Ok(());
    };
    let me = obj.object_ref(&());
    kit.event(&me, EventType::Warning, category, message).await;
    status["conditions"] = serde_json::to_value(new)?;
    tracing::info!(name = %obj.name_any(), category, "reported in status");
    kit.write_status(api, obj, &status).await
}

/// `old` with `Ready` False for `reason`, in its place; `None` when `Ready` says exactly that already.
#[must_use]
pub fn failed_ready(
    old: &[Condition],
    reason: &str,
    message: &str,
    generation: Option<i64>,
    now: &Time,
) -> Option<Vec<Condition>> {
    let verdict = Verdict::new(READY, false, reason, message);
    let ready = conditions(old, &[verdict], generation, now).pop()?;
    let same = |c: &Condition| {
        c.type_ == READY && c.status == ready.status && c.reason == ready.reason && c.message == ready.message
    };
    if old.iter().any(same) {
        return None;
    }
    let mut out: Vec<Condition> = old.to_vec();
    match out.iter_mut().find(|c| c.type_ == READY) {
        Some(c) => *c = ready,
        None => out.insert(0, ready),
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: i64) -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(secs).unwrap())
    }

    fn condition(type_: &str, status: &str, reason: &str) -> Condition {
        Condition {
            type_: type_.to_owned(),
            status: status.to_owned(),
            reason: reason.to_owned(),
            message: String::new(),
            observed_generation: Some(1),
            last_transition_time: at(1),
        }
    }

    #[test]
    fn ready_turns_false_in_place_and_the_rest_stays() {
        let old = [
            condition("NamespaceReady", "True", "Active"),
            condition(READY, "True", "Ready"),
        ];
        let new = failed_ready(&old, "Forbidden", "cannot patch", Some(2), &at(9)).unwrap();
        assert_eq!(new[0], old[0]);
        assert_eq!(
            (
                new[1].type_.as_str(),
                new[1].status.as_str(),
                new[1].reason.as_str()
            ),
            (READY, "False", "Forbidden")
        );
        assert_eq!(new[1].message, "cannot patch");
        assert_eq!(new[1].last_transition_time, at(9), "it flipped");
    }

    #[test]
    fn the_same_news_twice_is_no_news() {
        let once = failed_ready(&[], "Rejected", "denied", Some(1), &at(5)).unwrap();
        assert_eq!(once.len(), 1);
        assert_eq!(failed_ready(&once, "Rejected", "denied", Some(1), &at(6)), None);
        let other = failed_ready(&once, "Forbidden", "denied", Some(1), &at(7)).unwrap();
        assert_eq!(
            other[0].last_transition_time,
            at(5),
            "still False: no new transition time"
        );
    }
}
