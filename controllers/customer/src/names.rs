//! Names of the children of a Customer, in one place. Other controllers and the tests read them here.

/// The Database in every tenant namespace.
pub const DATABASE: &str = "db";
/// The Scheduler in every tenant namespace.
pub const SCHEDULER: &str = "workflows";
/// The Webhook in every tenant namespace (the webhooks controller maps everything in a namespace to it).
pub const WEBHOOK: &str = "webhooks";
pub const RESOURCE_QUOTA: &str = "tenant-quota";
pub const LIMIT_RANGE: &str = "tenant-defaults";
pub const DENY_INGRESS: &str = "default-deny-ingress";
pub const ALLOW_SAME_NAMESPACE: &str = "allow-same-namespace";
/// Lets the pools in to the database servers, which `allow-same-namespace` leaves out.
pub const ALLOW_POOLS_TO_SERVERS: &str = "allow-pools-to-database-servers";
/// Present under `spec.network.egress: Internet` only.
pub const RESTRICT_EGRESS: &str = "restrict-egress";
pub const ADMINS: &str = "tenant-admins";
/// Binds berth's tenant ClusterRole to berth itself in the tenant namespace (see `berth_kit::TenantAccess`).
pub const OPERATOR: &str = "berth-operator";
/// The built-in ClusterRole tenant admins are bound to; the chart grants `bind` on exactly this one.
pub const ADMIN_CLUSTER_ROLE: &str = "admin";
/// Annotation on the tenant namespace: the UID of the Customer it belongs to.
pub const CUSTOMER_UID: &str = "berth.dev/customer-uid";
/// Held on a `deletionPolicy: Retain` Customer until its namespace is marked as retained.
pub const FINALIZER: &str = "berth.dev/customer-retention";
