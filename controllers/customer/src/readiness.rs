//! `berth_customer_ready{customer}`: each Customer's `Ready` condition as the API server holds it, for the
//! `BerthTenantNotReady` alert.
//!
//! Two writers put `Ready` into a Customer's status: this controller at the end of a reconcile, and
//! `berth_kit::report::settle` when a reconcile fails in a way a person must see. And a Customer under
//! `deletionPolicy: Delete` holds no finalizer, so no reconcile ever sees it go. Setting the gauge where
//! status is written would miss the second writer and the third case; reading it back from the watch of
//! Customers (deletions included) covers all three in one place, and a gauge that says what `kubectl get
//! customers` says.

use std::sync::Arc;

use berth_api::{Customer, condition_status};
use berth_kit::conditions::READY;
use berth_kit::metrics::{CustomerLabel, Metrics};
use berth_kit::shared::Subscription;
use futures::StreamExt;
use kube::ResourceExt;
use kube::runtime::reflector::{ObjectRef, Store};

/// Keeps the gauge in step with the Customers until the watch ends with the term of leadership; then
/// drops every series, so a standby exports none (the alert rules ignore a standby's series as well).
pub async fn export(metrics: Arc<Metrics>, customers: Subscription<Customer>) {
    let Subscription {
        store, mut changes, ..
    } = customers;
    while let Some(changed) = changes.next().await {
        observe(&metrics, &store, &changed);
    }
    metrics.customer_ready.clear();
}

/// The store is written before the change is passed on, so it holds the newest version, or nothing once
/// the Customer is gone.
fn observe(metrics: &Metrics, store: &Store<Customer>, changed: &Customer) {
    let label = CustomerLabel {
        customer: changed.name_any(),
    };
    match store.get(&ObjectRef::from_obj(changed)) {
        Some(now) => {
            metrics
                .customer_ready
                .get_or_create(&label)
                .set(i64::from(is_ready(&now)));
        }
        None => {
            metrics.customer_ready.remove(&label);
        }
    }
}

/// `Ready=True`. A Customer no reconcile has reported on yet is not ready: one that stays so is what the
/// alert is for.
#[must_use]
pub fn is_ready(c: &Customer) -> bool {
    c.status
        .as_ref()
        .and_then(|s| condition_status(&s.conditions, READY))
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use berth_api::{CustomerSpec, CustomerStatus};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
    use kube::runtime::reflector::store::Writer;
    use kube::runtime::watcher;
    use prometheus_client::encoding::text::encode;
    use prometheus_client::registry::Registry;

    use super::*;

    // Named unlike any product default, so a swapped label shows.
    fn customer(name: &str, ready: Option<&str>) -> Customer {
        let mut c = Customer::new(name, CustomerSpec::default());
        c.metadata.uid = Some(format!("uid-{name}"));
        c.status = ready.map(|status| CustomerStatus {
            conditions: vec![Condition {
                type_: READY.to_owned(),
                status: status.to_owned(),
                reason: "Tested".to_owned(),
                message: String::new(),
                observed_generation: Some(1),
                last_transition_time: Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH),
            }],
            ..CustomerStatus::default()
        });
        c
    }

    fn exported(registry: &Registry) -> Vec<String> {
        let mut out = String::new();
        encode(&mut out, registry).unwrap();
        let mut lines: Vec<String> = out
            .lines()
            .filter(|l| l.starts_with("berth_customer_ready{"))
            .map(str::to_owned)
            .collect();
        lines.sort();
        lines
    }

    #[test]
    fn the_gauge_follows_ready_and_goes_with_the_customer() {
        let mut registry = Registry::default();
        let metrics = Metrics::default().register(&mut registry);
        let mut writer = Writer::<Customer>::default();
        let store = writer.as_reader();
        let mut event = |e: watcher::Event<Customer>, c: &Customer| {
            writer.apply_watcher_event(&e);
            observe(&metrics, &store, c);
        };

        let fresh = customer("harbour-7", None);
        event(watcher::Event::Apply(fresh.clone()), &fresh);
        let ready = customer("harbour-7", Some("True"));
        let other = customer("quay-3", Some("False"));
        event(watcher::Event::Apply(other.clone()), &other);
        assert_eq!(
            exported(&registry),
            [
                "berth_customer_ready{customer=\"harbour-7\"} 0",
                "berth_customer_ready{customer=\"quay-3\"} 0",
            ],
            "no status yet is not ready"
        );

        event(watcher::Event::Apply(ready.clone()), &ready);
        assert!(exported(&registry).contains(&"berth_customer_ready{customer=\"harbour-7\"} 1".to_owned()));

        event(watcher::Event::Delete(ready.clone()), &ready);
        assert_eq!(
            exported(&registry),
            ["berth_customer_ready{customer=\"quay-3\"} 0"],
            "a deleted Customer's series goes"
        );
    }

    #[test]
    fn only_ready_true_counts() {
        assert!(is_ready(&customer("a", Some("True"))));
        for status in [Some("False"), Some("Unknown"), None] {
            assert!(!is_ready(&customer("a", status)), "{status:?}");
        }
    }
}
