//! A tenant's tree: the Customer, its namespace and everything berth made in it, put together from flat
//! lists by ownerReference. Pure: `gather` reads the cluster, this module only arranges what it read.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::health::{Health, Ready};

/// A Warning event about one object: the latest of its kind, with how often it happened.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Warning {
    pub reason: String,
    pub message: String,
    pub count: i32,
    /// When it last happened (RFC 3339).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last: Option<String>,
}

/// One object as read, before it has a place in the tree.
#[derive(Clone, Debug)]
pub struct Item {
    pub kind: &'static str,
    pub name: String,
    pub uid: String,
    /// The owner it hangs under: its controller's UID, or another owner's.
    pub owner: Option<String>,
    /// Carries `app.kubernetes.io/managed-by: berth`: shown even when its owner is not.
    pub berth: bool,
    /// RFC 3339.
    pub created: Option<String>,
    pub health: Health,
    pub warnings: Vec<Warning>,
}

/// One line of the tree and what hangs under it.
#[derive(Clone, Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Node {
    pub kind: String,
    pub name: String,
    #[serde(flatten)]
    pub health: Health,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    /// Not healthy, and nothing under it is failing: where to look first.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub cause: bool,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<Warning>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<Node>,
}

impl Node {
    fn from_item(item: Item) -> Self {
        Self {
            kind: item.kind.to_owned(),
            name: item.name,
            health: item.health,
            created: item.created,
            cause: false,
            warnings: item.warnings,
            children: Vec::new(),
        }
    }

    /// Every node, depth first.
    #[cfg(test)]
    pub fn walk(&self) -> Box<dyn Iterator<Item = &Node> + '_> {
        Box::new(std::iter::once(self).chain(self.children.iter().flat_map(Node::walk)))
    }
}

/// Where a kind sorts among its siblings: the order a person reads a tenant in.
fn rank(kind: &str) -> usize {
    const ORDER: [&str; 20] = [
        "Namespace",
        "ResourceQuota",
        "LimitRange",
        "NetworkPolicy",
        "RoleBinding",
        "Database",
        "StatefulSet",
        "PersistentVolumeClaim",
        "Deployment",
        "ReplicaSet",
        "Pod",
        "Service",
        "PodDisruptionBudget",
        "ConfigMap",
        "Secret",
        "Scheduler",
        "Job",
        "Webhook",
        "Event",
        "",
    ];
    ORDER.iter().position(|k| *k == kind).unwrap_or(ORDER.len())
}

/// The tree under `customer`: `namespace` (when it exists) under the Customer, and under it every item
/// whose owner chain reaches the Customer or that berth labelled as its own. Items owned by something not
/// shown (a tenant's own app) are left out.
#[must_use]
pub fn assemble(customer: Item, namespace: Option<Item>, items: Vec<Item>) -> Node {
    let customer_uid = customer.uid.clone();
    let mut shown: HashSet<String> = HashSet::from([customer_uid.clone()]);
    // Owners are listed in any order: widen the shown set until it stops growing.
    loop {
        let before = shown.len();
        for i in &items {
            if !shown.contains(&i.uid) && (i.berth || i.owner.as_ref().is_some_and(|o| shown.contains(o))) {
                shown.insert(i.uid.clone());
            }
        }
        if shown.len() == before {
            break;
        }
    }
    let known: HashSet<String> = items.iter().map(|i| i.uid.clone()).collect();
    let mut by_parent: BTreeMap<String, Vec<Item>> = BTreeMap::new();
    let top = namespace.as_ref().map_or(customer_uid.clone(), |n| n.uid.clone());
    for item in items.into_iter().filter(|i| shown.contains(&i.uid)) {
        let parent = match &item.owner {
            Some(o) if known.contains(o) => o.clone(),
            _ => top.clone(),
        };
        by_parent.entry(parent).or_default().push(item);
    }
    let mut root = Node::from_item(customer);
    if let Some(ns) = namespace {
        let mut ns_node = Node::from_item(ns.clone());
        attach(&mut ns_node, &ns.uid, &mut by_parent);
        root.children.push(ns_node);
    } else {
        attach(&mut root, &customer_uid, &mut by_parent);
    }
    mark_causes(&mut root);
    root
}

fn attach(node: &mut Node, uid: &str, by_parent: &mut BTreeMap<String, Vec<Item>>) {
    let mut children = by_parent.remove(uid).unwrap_or_default();
    children.sort_by(|a, b| (rank(a.kind), &a.name).cmp(&(rank(b.kind), &b.name)));
    for child in children {
        let child_uid = child.uid.clone();
        let mut n = Node::from_item(child);
        attach(&mut n, &child_uid, by_parent);
        node.children.push(n);
    }
}

/// Marks the deepest unhealthy nodes; returns whether anything in this subtree is unhealthy.
fn mark_causes(node: &mut Node) -> bool {
    let mut below = false;
    for c in &mut node.children {
        below |= mark_causes(c);
    }
    let unhealthy = node.health.ready == Ready::False
        || (node.health.ready == Ready::Unknown && node.health.message.is_some());
    node.cause = unhealthy && !below;
    unhealthy || below
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(kind: &'static str, name: &str, owner: Option<&str>, health: Health) -> Item {
        Item {
            kind,
            name: name.to_owned(),
            uid: format!("{kind}/{name}"),
            owner: owner.map(str::to_owned),
            berth: false,
            created: None,
            health,
            warnings: Vec::new(),
        }
    }

    fn names(n: &Node, depth: usize, out: &mut Vec<String>) {
        out.push(format!("{}{}/{}", "  ".repeat(depth), n.kind, n.name));
        for c in &n.children {
            names(c, depth + 1, out);
        }
    }

    #[test]
    fn children_hang_under_their_owners_in_reading_order_and_strangers_stay_out() {
        let customer = item("Customer", "acme", None, Health::ok(None));
        let ns = item("Namespace", "acme", Some("Customer/acme"), Health::ok(None));
        let mut quota = item(
            "ResourceQuota",
            "tenant-quota",
            Some("Customer/acme"),
            Health::none(None),
        );
        quota.berth = true;
        let items = vec![
            item(
                "Pod",
                "db-pgbouncer-1-a",
                Some("ReplicaSet/db-pgbouncer-1"),
                Health::ok(None),
            ),
            item(
                "ReplicaSet",
                "db-pgbouncer-1",
                Some("Deployment/db-pgbouncer"),
                Health::ok(None),
            ),
            item(
                "Deployment",
                "db-pgbouncer",
                Some("Database/db"),
                Health::ok(None),
            ),
            item(
                "StatefulSet",
                "db-postgres",
                Some("Database/db"),
                Health::ok(None),
            ),
            item("Database", "db", Some("Customer/acme"), Health::ok(None)),
            quota,
            // A tenant's own app: not berth's, not shown.
            item("Pod", "web-1", Some("ReplicaSet/web"), Health::ok(None)),
        ];
        let tree = assemble(customer, Some(ns), items);
        let mut out = Vec::new();
        names(&tree, 0, &mut out);
        assert_eq!(
            out,
            [
                "Customer/acme",
                "  Namespace/acme",
                "    ResourceQuota/tenant-quota",
                "    Database/db",
                "      StatefulSet/db-postgres",
                "      Deployment/db-pgbouncer",
                "        ReplicaSet/db-pgbouncer-1",
                "          Pod/db-pgbouncer-1-a",
            ]
        );
    }

    #[test]
    fn the_deepest_failing_object_is_the_cause_not_its_failing_parents() {
        let quota_message = "pods \"db-pgbouncer-1-x\" is forbidden: exceeded quota: tenant-quota";
        let customer = item(
            "Customer",
            "acme",
            None,
            Health::failing("DatabaseNotReady", "database: pool"),
        );
        let items = vec![
            item(
                "Database",
                "db",
                Some("Customer/acme"),
                Health::failing("PoolNotReady", "0 of 2"),
            ),
            item(
                "Deployment",
                "db-pgbouncer",
                Some("Database/db"),
                Health::failing("FailedCreate", quota_message),
            ),
            item(
                "ReplicaSet",
                "db-pgbouncer-1",
                Some("Deployment/db-pgbouncer"),
                Health::failing("FailedCreate", quota_message),
            ),
            item(
                "StatefulSet",
                "db-postgres",
                Some("Database/db"),
                Health::ok(None),
            ),
        ];
        let tree = assemble(customer, None, items);
        let causes: Vec<_> = tree
            .walk()
            .filter(|n| n.cause)
            .map(|n| format!("{}/{}", n.kind, n.name))
            .collect();
        assert_eq!(causes, ["ReplicaSet/db-pgbouncer-1"]);
        assert!(!tree.cause);
    }
}
