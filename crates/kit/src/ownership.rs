//! Whether an object that already exists under a child's name is berth's to apply over. Server-side apply
//! with `force` takes every field it sends from whoever held it, so without this check a tenant's own
//! Service, ConfigMap or PodDisruptionBudget that happens to bear a child's name would be silently taken
//! over. Asked of every object berth applies over (see [`crate::Context::ensure`]): from the cache when it
//! holds the object (no request), else from a metadata read.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;

use crate::labels::{BERTH, CUSTOMER, MANAGED_BY};

/// The API group of berth's own kinds, the only controllers berth takes its children back from.
const GROUP: &str = "berth.dev";

/// The Customer controller's claim on a tenant namespace: its Customer's UID. The constant belongs to the
/// customer crate, which this crate cannot depend on.
const CUSTOMER_UID: &str = "berth.dev/customer-uid";

/// Who holds an existing object.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holder {
    /// berth, for the same parent or tenant as the desired object: applying over it is an update.
    Berth,
    /// Someone else; says who, to finish "… already exists and …".
    Other(String),
}

/// Who holds `existing`, judged by what berth would apply there (`desired`):
/// - claimed with the same `berth.dev/customer-uid` annotation (a tenant namespace): berth;
/// - else, with a controller ownerReference: berth when that owner is one of `desired`'s owners, the
///   parent's own UID, so a child of a deleted parent of the same name is not adopted; or when `desired`
///   has no owner (its parent turned to `Retain`) and the controller is a berth kind, with berth's labels
///   for the same customer;
/// - else (berth leaves some objects unowned on purpose: a retained namespace and its guard rails, a
///   Database's credentials under `Retain`): berth when labelled managed by berth for the same customer.
#[must_use]
pub fn holder(desired: &ObjectMeta, existing: &ObjectMeta) -> Holder {
    let claim = |m: &ObjectMeta| m.annotations.as_ref().and_then(|a| a.get(CUSTOMER_UID)).cloned();
    let label = |m: &ObjectMeta, key: &str| m.labels.as_ref().and_then(|l| l.get(key)).cloned();
    if claim(desired).is_some_and(|uid| claim(existing) == Some(uid)) {
        return Holder::Berth;
    }
    let controller = existing
        .owner_references
        .iter()
        .flatten()
        .find(|o| o.controller == Some(true));
    if let Some(owner) = controller {
        let ours = desired
            .owner_references
            .iter()
            .flatten()
            .any(|o| o.uid == owner.uid);
        // The parent's deletionPolicy turned to `Retain`: berth's child, still controlled by its berth parent,
        // which the desired object no longer names, since the apply over it takes that reference away.
        // (Not for a namespace: its claim alone says whose it is, and an earlier Customer's stays its own.)
        let unowning = desired.owner_references.as_ref().is_none_or(Vec::is_empty)
            && claim(desired).is_none()
            && owner.api_version.split('/').next() == Some(GROUP)
            && label(existing, MANAGED_BY).as_deref() == Some(BERTH)
            && label(existing, CUSTOMER).is_some_and(|have| label(desired, CUSTOMER) == Some(have));
        return if ours || unowning {
            Holder::Berth
        } else {
            Holder::Other(format!("is controlled by {} {}", owner.kind, owner.name))
        };
    }
    let customer = label(existing, CUSTOMER);
    match label(existing, MANAGED_BY) {
        Some(by) if by == BERTH => match (label(desired, CUSTOMER), customer) {
            (Some(want), Some(have)) if want == have => Holder::Berth,
            (_, Some(have)) => Holder::Other(format!("belongs to berth's customer {have}")),
            (_, None) => Holder::Other("carries no berth customer label".to_owned()),
        },
        _ => Holder::Other("is not managed by berth".to_owned()),
    }
}

/// What a user reads when berth refuses to take `kind` `name` (in `namespace`, when namespaced) over.
#[must_use]
pub fn refusal(kind: &str, namespace: Option<&str>, name: &str, who: &str) -> String {
    let at = namespace.map_or_else(|| name.to_owned(), |ns| format!("{ns}/{name}"));
    format!(
        "{kind} {at} already exists and {who}; berth leaves it untouched (delete it, or rename it, so berth \
         can create its own)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    use std::collections::BTreeMap;

    fn owner(uid: &str, controller: bool) -> OwnerReference {
        OwnerReference {
            api_version: "berth.dev/v1alpha1".into(),
            kind: "Database".into(),
            name: "ledger".into(),
            uid: uid.into(),
            controller: Some(controller),
            block_owner_deletion: Some(true),
        }
    }

    fn map(pairs: &[(&str, &str)]) -> Option<BTreeMap<String, String>> {
        (!pairs.is_empty()).then(|| pairs.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect())
    }

    fn meta(labels: &[(&str, &str)], owners: &[OwnerReference], annotations: &[(&str, &str)]) -> ObjectMeta {
        ObjectMeta {
            name: Some("ledger-pgbouncer".into()),
            labels: map(labels),
            annotations: map(annotations),
            owner_references: (!owners.is_empty()).then(|| owners.to_vec()),
            ..ObjectMeta::default()
        }
    }

    const BERTHS: [(&str, &str); 2] = [(MANAGED_BY, BERTH), (CUSTOMER, "acme-9")];

    #[test]
    fn only_berths_own_objects_may_be_applied_over() {
        let owned = meta(&BERTHS, &[owner("uid-db-1", true)], &[]);
        let unowned = meta(&BERTHS, &[], &[]);
        let claim = [(CUSTOMER_UID, "uid-cust-1")];
        let namespace = meta(&BERTHS, &[], &claim);
        let other = |who: &str| Holder::Other(who.to_owned());
        let foreign = OwnerReference {
            api_version: "apps/v1".into(),
            kind: "ReplicaSet".into(),
            ..owner("uid-x", true)
        };
        let cases = [
            (
                "a child of the same parent",
                &owned,
                meta(&BERTHS, &[owner("uid-db-1", true)], &[]),
                Holder::Berth,
            ),
            (
                "a child of a deleted parent of the same name",
                &owned,
                meta(&BERTHS, &[owner("uid-db-0", true)], &[]),
                other("is controlled by Database ledger"),
            ),
            (
                "someone else's controller, whatever its labels",
                &unowned,
                meta(&BERTHS, std::slice::from_ref(&foreign), &[]),
                other("is controlled by ReplicaSet ledger"),
            ),
            (
                "controlled by its berth parent, which turned to Retain",
                &unowned,
                meta(&BERTHS, &[owner("uid-db-1", true)], &[]),
                Holder::Berth,
            ),
            (
                "controlled by a berth parent, for another customer",
                &unowned,
                meta(
                    &[(MANAGED_BY, BERTH), (CUSTOMER, "globex-2")],
                    &[owner("uid-db-1", true)],
                    &[],
                ),
                other("is controlled by Database ledger"),
            ),
            (
                "controlled by a berth parent, not labelled berth's",
                &unowned,
                meta(&[(CUSTOMER, "acme-9")], &[owner("uid-db-1", true)], &[]),
                other("is controlled by Database ledger"),
            ),
            (
                "kept unowned for the same customer (Retain)",
                &owned,
                unowned.clone(),
                Holder::Berth,
            ),
            (
                "kept unowned, with an owner that is no controller",
                &owned,
                meta(&BERTHS, &[owner("uid-gc", false)], &[]),
                Holder::Berth,
            ),
            (
                "berth's, for another customer",
                &unowned,
                meta(&[(MANAGED_BY, BERTH), (CUSTOMER, "globex-2")], &[], &[]),
                other("belongs to berth's customer globex-2"),
            ),
            (
                "labelled managed by berth, with no customer",
                &unowned,
                meta(&[(MANAGED_BY, BERTH)], &[], &[]),
                other("carries no berth customer label"),
            ),
            (
                "the tenant's own, with the customer label alone",
                &unowned,
                meta(&[(CUSTOMER, "acme-9")], &[], &[]),
                other("is not managed by berth"),
            ),
            (
                "the tenant's own, unlabelled",
                &owned,
                meta(&[], &[], &[]),
                other("is not managed by berth"),
            ),
            (
                "a namespace claimed for this Customer",
                &namespace,
                meta(&[], &[], &claim),
                Holder::Berth,
            ),
            (
                "a namespace claimed and owned (Delete) by this Customer",
                &namespace,
                meta(&BERTHS, &[owner("uid-cust-1", true)], &claim),
                Holder::Berth,
            ),
            (
                "a namespace claimed by an earlier Customer, then retained",
                &namespace,
                meta(&BERTHS, &[], &[(CUSTOMER_UID, "uid-cust-0")]),
                Holder::Berth,
            ),
            (
                "a namespace claimed by an earlier Customer, still owned by it",
                &namespace,
                meta(
                    &BERTHS,
                    &[owner("uid-cust-0", true)],
                    &[(CUSTOMER_UID, "uid-cust-0")],
                ),
                other("is controlled by Database ledger"),
            ),
            (
                "a claim annotation berth does not send proves nothing",
                &unowned,
                meta(&[], &[], &claim),
                other("is not managed by berth"),
            ),
        ];
        for (what, desired, existing, want) in cases {
            assert_eq!(holder(desired, &existing), want, "{what}");
        }
    }

    #[test]
    fn the_refusal_names_the_object_and_what_to_do() {
        assert_eq!(
            refusal("ConfigMap", Some("t1"), "pool-config", "is not managed by berth"),
            "ConfigMap t1/pool-config already exists and is not managed by berth; berth leaves it untouched \
             (delete it, or rename it, so berth can create its own)"
        );
        assert!(refusal("Namespace", None, "t1", "x").starts_with("Namespace t1 already exists and x;"));
    }
}
