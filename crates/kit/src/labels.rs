//! The labels on every object berth creates (see DESIGN.md). Watches of common kinds select on them.

use std::collections::BTreeMap;

pub const MANAGED_BY: &str = "app.kubernetes.io/managed-by";
pub const PART_OF: &str = "app.kubernetes.io/part-of";
pub const COMPONENT: &str = "app.kubernetes.io/component";
pub const INSTANCE: &str = "app.kubernetes.io/instance";
pub const CUSTOMER: &str = "berth.dev/customer";
/// Put on a tenant namespace that outlived its Customer under `deletionPolicy: Retain`.
pub const RETAINED: &str = "berth.dev/retained";
pub const BERTH: &str = "berth";
/// On the pods only a tenant's pools may reach (a PostgreSQL server): the tenant's
/// `allow-same-namespace` policy leaves them out, and a policy of their own lets the pools in.
pub const ISOLATION: &str = "berth.dev/isolation";
pub const POOL_ONLY: &str = "pool-only";
/// Component of a Database's pgbouncer pods, the only pods a server lets in.
pub const POOL_COMPONENT: &str = "pool";
/// The port a tenant's PostgreSQL servers listen on.
pub const POSTGRES_PORT: u16 = 5432;

/// `app.kubernetes.io/managed-by=berth`, the selector every berth watch of a common kind uses.
#[must_use]
pub fn managed_selector() -> String {
    format!("{MANAGED_BY}={BERTH}")
}

/// Labels of a child: owned by berth, part of `customer`'s tenant, playing `component`.
#[must_use]
pub fn labels(customer: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        (MANAGED_BY.to_owned(), BERTH.to_owned()),
        (PART_OF.to_owned(), BERTH.to_owned()),
        (CUSTOMER.to_owned(), customer.to_owned()),
        (COMPONENT.to_owned(), component.to_owned()),
    ])
}

/// The customer a namespaced berth object belongs to: its own label, else the namespace it lives in
/// (a Database or Scheduler created by hand still gets labelled children).
#[must_use]
pub fn customer_of(labels: &BTreeMap<String, String>, namespace: &str) -> String {
    labels
        .get(CUSTOMER)
        .cloned()
        .unwrap_or_else(|| namespace.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn child_labels_name_customer_and_component() {
        let l = labels("tenant-x", "pool");
        assert_eq!(l[CUSTOMER], "tenant-x");
        assert_eq!(l[COMPONENT], "pool");
        assert_eq!(l[MANAGED_BY], "berth");
        assert_eq!(managed_selector(), "app.kubernetes.io/managed-by=berth");
    }

    #[test]
    fn customer_falls_back_to_namespace() {
        assert_eq!(customer_of(&BTreeMap::new(), "ns-a"), "ns-a");
        assert_eq!(customer_of(&labels("c-b", "database"), "ns-a"), "c-b");
    }
}
