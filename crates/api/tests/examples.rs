//! The shipped examples deserialise into the types with the defaults a user expects.

#![allow(clippy::unwrap_used)]

use berth_api::{ConcurrencyPolicy, Customer, DeletionPolicy, PoolMode, PoolSpec};

fn example(name: &str) -> Customer {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/").to_owned() + name;
    serde_yaml::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn seed_example_has_database_and_four_workers() {
    let c = example("customer.yaml");
    assert_eq!(c.namespace_name(), "big-client-0815");
    let db = &c.spec.features.database;
    assert!(db.enabled);
    assert_eq!(db.storage.as_ref().unwrap().0, "256Gi");
    assert_eq!(db.pool, None, "pool settings default later, in the Database");
    assert!(c.spec.features.scheduler.enabled);
    assert_eq!(c.spec.features.scheduler.workers, 4);
    assert!(!c.spec.features.webhooks.enabled);
    assert_eq!(
        c.spec.deletion_policy,
        DeletionPolicy::Retain,
        "data is kept unless asked otherwise"
    );
    assert!(!c.spec.suspend);
}

#[test]
fn full_example_reads_every_section() {
    let c = example("customer-full.yaml");
    assert_eq!(c.namespace_name(), "tenant-acme");
    assert_eq!(c.spec.deletion_policy, DeletionPolicy::Delete);
    assert_eq!(c.spec.admins.len(), 2);
    assert_eq!(c.spec.quota.pods, Some(200));
    let pool = c.spec.features.database.pool.clone().unwrap();
    assert_eq!(
        pool,
        PoolSpec {
            mode: PoolMode::Transaction,
            default_pool_size: 25,
            max_client_connections: 500,
            replicas: 2
        }
    );
    let wf = &c.spec.features.scheduler.workflows;
    assert_eq!(wf[0].time_zone.as_deref(), Some("Europe/Berlin"));
    assert_eq!(wf[0].concurrency_policy, ConcurrencyPolicy::Forbid);
    assert_eq!(wf[1].concurrency_policy, ConcurrencyPolicy::Allow);
}

#[test]
fn omitted_fields_take_documented_defaults() {
    let c: Customer = serde_yaml::from_str(
        "apiVersion: berth.dev/v1alpha1\nkind: Customer\nmetadata: {name: x}\nspec: {}\n",
    )
    .unwrap();
    assert!(!c.spec.features.database.enabled);
    assert_eq!(c.spec.features.scheduler.workers, 1);
    let pool = PoolSpec::default();
    assert_eq!(
        (
            pool.mode,
            pool.default_pool_size,
            pool.max_client_connections,
            pool.replicas
        ),
        (PoolMode::Transaction, 20, 200, 2)
    );
}

#[test]
fn status_round_trips_without_empty_fields() {
    let c = example("customer.yaml");
    let json = serde_json::to_value(&c).unwrap();
    assert!(json.get("status").is_none() || json["status"].is_null());
    assert!(
        json["spec"].get("namespace").is_none(),
        "an unset namespace is not written as null"
    );
}
