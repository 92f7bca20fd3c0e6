//! What a reconcile gets besides the object: the shared client, event publisher, metrics and settings,
//! plus per-object failure counts for exponential back-off.

use std::collections::{HashMap, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ManagedFieldsEntry, ObjectMeta};
use kube::api::{Patch, PatchParams};

use crate::error::{Error, Result, backoff};
use crate::events::Publisher;
use crate::managers;
use crate::metrics::{ErrorLabels, Metrics, WriteLabels};
use crate::ownership::{self, Holder};
use crate::slim::{Cached, Slim};

/// Operator-wide settings the Helm chart can change.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of the PostgreSQL server when a Database does not name one.
    pub postgres_image: String,
    /// Image of the pgbouncer pool.
    pub pgbouncer_image: String,
    /// Directory of PostgreSQL's server binaries in the server image; empty means they are on `PATH`.
    pub postgres_bin_dir: String,
    /// How berth gets its rights inside a tenant namespace; `None` where it holds them cluster-wide.
    pub tenant_access: Option<TenantAccess>,
    /// Marks what berth creates as berth's (see [`crate::seal`]); `None` in tests that run no operator.
    pub seal: Option<crate::seal::Seal>,
    /// Webhook endpoints may be `http://` (development clusters only: bodies travel in clear).
    pub webhooks_allow_http: bool,
    /// Webhook endpoints may be on loopback, private, link-local or the cluster's own addresses.
    pub webhooks_allow_private: bool,
}

/// berth's rights inside a tenant namespace come from a ClusterRole that no ClusterRoleBinding grants:
/// the Customer controller binds it to berth's own identity in each tenant namespace, right after creating
/// the namespace, so berth cannot write workloads or read Secrets anywhere else.
#[derive(Clone, Debug, PartialEq)]
pub struct TenantAccess {
    /// The ClusterRole (the chart's `<release>-tenant`).
    pub role: String,
    /// Who berth is, as the API server authenticates it (a ServiceAccount in the cluster).
    pub subject: k8s_openapi::api::rbac::v1::Subject,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            postgres_image: "ghcr.io/cloudnative-pg/postgresql:17".to_owned(),
            pgbouncer_image: "ghcr.io/cloudnative-pg/pgbouncer:1.24.1".to_owned(),
            postgres_bin_dir: String::new(),
            tenant_access: None,
            seal: None,
            webhooks_allow_http: false,
            webhooks_allow_private: false,
        }
    }
}

pub struct Context {
    pub client: kube::Client,
    pub controller: &'static str,
    /// The controller's field manager for every write (see [`crate::managers`]).
    pub manager: String,
    pub publisher: Publisher,
    pub metrics: Arc<Metrics>,
    pub settings: Settings,
    failures: Mutex<HashMap<String, u32>>,
    synced: tokio::sync::watch::Sender<bool>,
    /// Per child (kind/namespace/name): what berth last applied and what the API server answered. Lost
    /// on restart, or once unused for a while, which only costs one apply per child.
    applied: Mutex<Memos>,
    /// When each object's status was last written (see [`crate::pace`]).
    pace: crate::pace::Pace,
}

impl Context {
    #[must_use]
    pub fn new(
        client: kube::Client,
        controller: &'static str,
        publisher: Publisher,
        metrics: Arc<Metrics>,
        settings: Settings,
    ) -> Arc<Self> {
        let synced = tokio::sync::watch::Sender::new(false);
        Arc::new(Self {
            client,
            controller,
            manager: crate::managers::of(controller),
            publisher,
            metrics,
            settings,
            failures: Mutex::default(),
            synced,
            applied: Mutex::default(),
            pace: crate::pace::Pace::default(),
        })
    }

    /// Marks this controller's own watch as listed (see [`crate::watch::primary`]).
    pub fn mark_synced(&self) {
        self.synced.send_replace(true);
    }

    /// Resolves once the controller's caches have synced (for `/readyz`).
    pub async fn synced(&self) {
        let _ = self.synced.subscribe().wait_for(|s| *s).await;
    }

    /// Counts a write made outside the helpers below (create-only, merge patches).
    pub fn count_write(&self, verb: &'static str) {
        self.metrics
            .writes
            .get_or_create(&WriteLabels {
                controller: self.controller,
                verb,
            })
            .inc();
    }

    /// Server-side apply of a child, counted as a write.
    ///
    /// # Errors
    /// Whatever the API server answers.
    #[tracing::instrument(name = "apply", skip_all, fields(kind = %K::kind(&()), name = %obj.name_any()))]
    pub async fn apply<K>(&self, api: &Api<K>, obj: &K) -> Result<K>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug + Slim,
    {
        self.count_write("apply");
        let mut applied = crate::apply::apply(api, obj, &self.manager).await?;
        if let Some(entries) = managers::inherited(applied.managed_fields(), &self.manager, None) {
            self.inherit(api, &applied, entries).await?;
            // Now the owner of what it no longer sends, so this apply removes it.
            self.count_write("apply");
            applied = crate::apply::apply(api, obj, &self.manager).await?;
        }
        self.remember(obj, &applied);
        Ok(applied)
    }

    /// Creates `obj` only if nothing of its name exists (see [`crate::apply::create`]), counted as a create.
    ///
    /// # Errors
    /// 409 ([`crate::error::is_conflict`]) when the name is taken; else whatever the API server answers.
    #[tracing::instrument(name = "create", skip_all, fields(kind = %K::kind(&()), name = %obj.name_any()))]
    pub async fn create<K>(&self, api: &Api<K>, obj: &K) -> Result<K>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug,
    {
        self.count_write("create");
        crate::apply::create(api, obj, &self.manager).await
    }

    /// Takes note of a child berth wrote with a create of `desired` (where an unconditional apply could not
    /// be the first write), as [`Context::apply`] does of an apply: the next reconcile that finds it as created
    /// then has nothing to write, where it would otherwise apply the same body once more.
    pub fn created<K>(&self, desired: &K, created: K) -> Applied<K>
    where
        K: Resource<DynamicType = ()> + Serialize + Clone + Slim,
    {
        self.remember(desired, &created);
        Applied {
            object: created,
            outcome: Outcome::Created,
        }
    }

    /// Writes `entries` as `obj`'s managedFields (see [`crate::managers`]).
    async fn inherit<K>(&self, api: &Api<K>, obj: &K, entries: Vec<ManagedFieldsEntry>) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        tracing::info!(kind = %K::kind(&()), name = %obj.name_any(), "inheriting the fields applied as berth");
        self.swap_metadata(api, obj, serde_json::json!({"managedFields": entries}))
            .await
    }

    /// Merges `metadata` into `obj`'s, counted as a write. A metadata list (finalizers, managedFields) is
    /// replaced whole, so the write carries the resourceVersion `obj` was read at: a compare-and-swap that
    /// a concurrent writer fails (409) rather than loses its entries to, and the next reconcile reads again.
    ///
    /// # Errors
    /// Whatever the API server answers, a lost race included.
    pub async fn swap_metadata<K>(&self, api: &Api<K>, obj: &K, mut metadata: serde_json::Value) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
    {
        metadata["resourceVersion"] = serde_json::json!(obj.resource_version());
        let params = PatchParams {
            field_manager: Some(self.manager.clone()),
            ..PatchParams::default()
        };
        self.count_write("patch");
        let patch = serde_json::json!({ "metadata": metadata });
        api.patch(&obj.name_any(), &params, &Patch::Merge(&patch)).await?;
        Ok(())
    }

    /// Like [`Context::apply`], but no request at all when the apply would change nothing, and says what
    /// happened: the one answer to "did anything change" for writes and events. `obj` is what
    /// berth last applied to this object, and `cached` (the watch cache's copy) is, but for its status and
    /// version stamps, what that apply returned, so nobody has touched it since. Anything else (a changed
    /// desired state, a hand edit of spec or metadata, a deleted object, a restart of berth) applies. A
    /// status update by another controller (quota usage, replica counts) is not a reason to apply. This
    /// keeps a converged tenant at zero API writes while every reconcile still states the whole desired
    /// state.
    ///
    /// An object the cache does not hold (on creation, or while the cache does not know it yet: never for a
    /// converged tenant) is never applied blindly, because a same-named object outside berth's
    /// label-selected cache may be someone else's, which a forced apply would silently take over (see
    /// [`crate::ownership`]). It is created by a write that only creates; only when its name is taken is the
    /// holder read. One this process applied before, likely there and only not yet cached, is read first.
    ///
    /// # Errors
    /// [`Error::Conflict`] when the object exists and is not berth's; else whatever the API server answers.
    pub async fn ensure<K>(&self, api: &Api<K>, obj: &K, cached: Option<Arc<Cached<K>>>) -> Result<Applied<K>>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug + Slim,
    {
        if let Some(cached) = cached.as_ref().filter(|c| self.unchanged(obj, c)) {
            return Ok(Applied {
                object: cached.object(),
                outcome: Outcome::Unchanged,
            });
        }
        let before = self.memo(obj);
        let existing = match &cached {
            // A cache of a kind people also create by hand (Databases, Schedulers) holds theirs too.
            Some(c) => {
                refuse_unless_berths(obj, &c.meta_against(obj.meta()))?;
                Some(c.resource_version())
            }
            // A new tenant's children: one write each, where a read first would add a round trip.
            None if before.is_none() => match self.create_absent(api, obj).await? {
                Some(object) => {
                    let outcome = outcome(None, None, object.resource_version().as_deref());
                    return Ok(Applied { object, outcome });
                }
                None => self.claimable(api, obj).await?,
            },
            None => self.claimable(api, obj).await?,
        };
        let object = self.apply(api, obj).await?;
        let outcome = outcome(
            before.as_ref().map(|m| (m.wanted == hash(obj), m.version)),
            existing,
            object.resource_version().as_deref(),
        );
        Ok(Applied { object, outcome })
    }

    /// Creates `obj` where its name is free (see [`crate::apply::create`]) and remembers it as applied;
    /// `None` when the name is taken.
    ///
    /// # Errors
    /// Whatever the API server answers but the 409 of a taken name.
    async fn create_absent<K>(&self, api: &Api<K>, obj: &K) -> Result<Option<K>>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug + Slim,
    {
        match self.create(api, obj).await {
            Ok(created) => {
                self.remember(obj, &created);
                Ok(Some(created))
            }
            Err(Error::Kube(e)) if crate::error::is_conflict(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// The version of the object under `obj`'s name (`None`: there is none), read because no cache holds
    /// it; only its metadata, so a foreign Secret's data is never read.
    ///
    /// # Errors
    /// [`Error::Conflict`] when it is not berth's (see [`ownership::holder`]).
    async fn claimable<K>(&self, api: &Api<K>, obj: &K) -> Result<Option<Option<String>>>
    where
        K: Resource<DynamicType = ()> + DeserializeOwned + Clone + Debug,
    {
        let Some(existing) = api.get_metadata_opt(&obj.name_any()).await? else {
            return Ok(None);
        };
        refuse_unless_berths(obj, &existing.metadata)?;
        Ok(Some(existing.metadata.resource_version))
    }

    fn unchanged<K: Resource<DynamicType = ()> + Serialize>(&self, desired: &K, cached: &Cached<K>) -> bool {
        self.memo(desired)
            .is_some_and(|m| m.wanted == hash(desired) && m.seen == fingerprint(desired, cached))
    }

    fn memo<K: Resource<DynamicType = ()>>(&self, desired: &K) -> Option<Memo> {
        self.applied.lock().ok()?.get(&memo_key(desired), Instant::now())
    }

    fn remember<K: Resource<DynamicType = ()> + Serialize + Clone + Slim>(&self, desired: &K, applied: &K) {
        // Compared later with the cache's view, so viewed the same way.
        let now = Instant::now();
        let memo = Memo {
            wanted: hash(desired),
            seen: fingerprint(desired, &Cached::new(applied.clone())),
            version: applied.resource_version().as_deref().map(version),
            used: now,
        };
        if let Ok(mut all) = self.applied.lock() {
            all.insert(&memo_key(desired), memo, now);
        }
    }

    /// After a restart there is no memo, and `ensure` would apply every child once. When the parent's status
    /// `recorded` this child's [`Context::entry`], computed from what the cache shows now, then the cache
    /// shows the child as berth's last apply left it, for the desired state berth still wants: that is
    /// taken as the memo, and the apply is skipped. Anything else (a child edited or deleted while no berth
    /// ran, a new desired state) finds no entry and is applied as before.
    pub(crate) fn recall<K>(&self, desired: &K, cached: &Cached<K>, recorded: &HashSet<String>)
    where
        K: Resource<DynamicType = ()> + Serialize + Clone,
    {
        if recorded.is_empty() || self.memo(desired).is_some() {
            return;
        }
        let now = Instant::now();
        let memo = Memo {
            wanted: hash(desired),
            seen: fingerprint(desired, cached),
            version: cached.resource_version().as_deref().map(version),
            used: now,
        };
        if recorded.contains(&entry(&memo_key(desired), &memo))
            && let Ok(mut all) = self.applied.lock()
        {
            all.insert(&memo_key(desired), memo, now);
        }
    }

    /// What berth last applied to this child and what the API server answered, as one short digest for
    /// the parent's status (see [`crate::Ledger`]); `None` while berth has not applied it.
    pub(crate) fn entry<K: Resource<DynamicType = ()>>(&self, desired: &K) -> Option<String> {
        self.memo(desired).map(|m| entry(&memo_key(desired), &m))
    }

    /// The API of a namespaced kind in `namespace`.
    #[must_use]
    pub fn api<K>(&self, namespace: &str) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::NamespaceResourceScope>,
    {
        Api::namespaced(self.client.clone(), namespace)
    }

    /// The API of a cluster-scoped kind.
    #[must_use]
    pub fn cluster_api<K>(&self) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = kube::core::ClusterResourceScope>,
    {
        Api::all(self.client.clone())
    }

    /// Applies `status` on `obj` unless it equals what the object already shows.
    ///
    /// # Errors
    /// Whatever the API server answers.
    #[tracing::instrument(name = "apply_status", skip_all, fields(kind = %K::kind(&()), name = %obj.name_any()))]
    pub async fn apply_status<K, S>(
        &self,
        api: &Api<K>,
        obj: &K,
        current: Option<&S>,
        status: &S,
    ) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
        S: Serialize + PartialEq,
    {
        if current == Some(status) {
            return Ok(());
        }
        self.write_status(api, obj, status).await
    }

    /// [`Context::apply_status`] at the pace of [`crate::pace`]: a change that is not urgent (see
    /// [`crate::pace::urgent`]) waits until [`crate::pace::PACE`] after this process last wrote `obj`'s
    /// status. Returns how long it waits, for the caller to look again then; `None` when written, or when
    /// there is nothing to write.
    ///
    /// # Errors
    /// As [`Context::apply_status`].
    pub async fn paced_status<K, S>(
        &self,
        api: &Api<K>,
        obj: &K,
        current: Option<&S>,
        status: &S,
    ) -> Result<Option<Duration>>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
        S: Serialize + PartialEq + crate::pace::Progress,
    {
        if current == Some(status) {
            return Ok(None);
        }
        let uid = obj.meta().uid.clone().unwrap_or_default();
        let now = Instant::now();
        let urgent = crate::pace::urgent(current, status);
        if let Some(wait) = self.pace.hold(&uid, urgent, now) {
            return Ok(Some(wait));
        }
        self.write_status(api, obj, status).await?;
        self.pace.wrote(&uid, now);
        Ok(None)
    }

    /// Applies `status` on `obj`, counted as a write; an object gone meanwhile is done.
    ///
    /// # Errors
    /// Whatever the API server answers but 404.
    pub async fn write_status<K, S>(&self, api: &Api<K>, obj: &K, status: &S) -> Result<()>
    where
        K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
        S: Serialize,
    {
        self.count_write("status");
        let written = match crate::apply::apply_status(api, obj, status, &self.manager).await {
            Ok(written) => written,
            // Deleted while this reconcile ran (its tenant going away): nobody is left to read a status,
            // and a failed reconcile would only be noise in the log and the error metric.
            Err(Error::Kube(e)) if crate::error::is_not_found(&e) => return Ok(()),
            Err(e) => return Err(e),
        };
        if let Some(entries) = managers::inherited(written.managed_fields(), &self.manager, Some("status")) {
            self.inherit(api, &written, entries).await?;
            self.count_write("status");
            crate::apply::apply_status(api, obj, status, &self.manager).await?;
        }
        Ok(())
    }

    /// Background deletion, counted as a write when something was there.
    ///
    /// # Errors
    /// Any API error but 404.
    #[tracing::instrument(name = "delete", skip_all, fields(name))]
    pub async fn delete<K>(&self, api: &Api<K>, name: &str) -> Result<bool>
    where
        K: Resource + Clone + DeserializeOwned + Debug,
    {
        self.count_write("delete");
        crate::apply::delete_if_exists(api, name).await
    }

    /// Publishes an Event on `reference`; a failure to record is logged, never fails the reconcile.
    pub async fn event(&self, reference: &ObjectReference, type_: EventType, reason: &str, note: String) {
        self.publish(reference, None, type_, reason, note).await;
    }

    pub(crate) async fn publish(
        &self,
        reference: &ObjectReference,
        related: Option<ObjectReference>,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        let ev = Event {
            type_,
            reason: reason.to_owned(),
            note: Some(note),
            action: "Reconcile".to_owned(),
            secondary: related,
        };
        self.count_write("event");
        if let Err(e) = self.publisher.publish(&ev, reference).await {
            tracing::warn!(error = %e, reason, "could not record event");
        }
    }

    /// Forgets the failures of every object whose UID `present` denies.
    pub fn forget_unless(&self, present: impl Fn(&str) -> bool) {
        if let Ok(mut f) = self.failures.lock() {
            f.retain(|uid, _| present(uid));
        }
    }

    /// Forget an object's failures after a successful reconcile.
    pub fn succeeded<K: Resource>(&self, obj: &K) {
        if let Ok(mut f) = self.failures.lock() {
            f.remove(&key(obj));
        }
    }

    /// The error policy every controller shares: count it, back off exponentially per object.
    pub fn failed<K: Resource>(&self, obj: &K, error: &Error) -> Action {
        let category = error.category();
        self.metrics
            .errors
            .get_or_create(&ErrorLabels {
                controller: self.controller,
                category,
            })
            .inc();
        let failures = self.failures.lock().map_or(0, |mut f| {
            let n = f.entry(key(obj)).or_insert(0);
            *n = n.saturating_add(1);
            *n - 1
        });
        let wait = backoff(error, failures);
        tracing::warn!(error = %error, category, retry_in = ?wait, "reconcile failed");
        Action::requeue(wait)
    }
}

/// [`Error::Conflict`] unless `existing`, found under `desired`'s name, is berth's (see [`ownership::holder`]).
fn refuse_unless_berths<K: Resource<DynamicType = ()>>(desired: &K, existing: &ObjectMeta) -> Result<()> {
    match ownership::holder(desired.meta(), existing) {
        Holder::Berth => Ok(()),
        Holder::Other(who) => Err(Error::Conflict(ownership::refusal(
            &K::kind(&()),
            desired.meta().namespace.as_deref(),
            &desired.name_any(),
            &who,
        ))),
    }
}

/// What berth last applied to one child (a hash), and what the API server answered: its fingerprint (see
/// [`fingerprint`]) and resourceVersion (hashed: it is only compared, and the string would take more than
/// the rest of the memo); and when berth last looked it up.
#[derive(Clone, Debug)]
struct Memo {
    wanted: u64,
    seen: u64,
    version: Option<u64>,
    used: Instant,
}

/// Every child's [`Memo`], kept to the children berth still applies: with tenant churn, those of deleted
/// parents and turned-off features would otherwise stay for the life of the process.
#[derive(Debug, Default)]
struct Memos {
    /// By the hash of the child's key (kind, namespace, name): a few bytes where the key takes dozens.
    entries: HashMap<u64, Memo>,
    /// When stale entries were last swept out (`None`: never).
    swept: Option<Instant>,
}

/// Every live child is ensured at least once per resync, so an entry unused for two is a dead child's;
/// one wrongly dropped costs a single apply.
const STALE_AFTER: Duration = crate::runtime::RESYNC.saturating_mul(2);

/// A sweep walks every entry, so it runs on an insert at most this often.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

impl Memos {
    /// The entry of `key`, which counts as a use at `now`.
    fn get(&mut self, key: &str, now: Instant) -> Option<Memo> {
        let memo = self.entries.get_mut(&slot(key))?;
        memo.used = now;
        Some(memo.clone())
    }

    fn insert(&mut self, key: &str, memo: Memo, now: Instant) {
        self.entries.insert(slot(key), memo);
        if self.swept.is_none_or(|at| sweep_due(at, now)) {
            self.entries.retain(|_, m| !stale(m.used, now));
            self.swept = Some(now);
        }
    }
}

fn stale(used: Instant, now: Instant) -> bool {
    now.saturating_duration_since(used) > STALE_AFTER
}

fn sweep_due(last: Instant, now: Instant) -> bool {
    now.saturating_duration_since(last) >= SWEEP_EVERY
}

/// What [`Context::ensure`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing to write, or a write that changed nothing.
    Unchanged,
    Created,
    /// berth wanted something new (or, after a restart, did not remember what it wanted).
    Updated,
    /// Someone else changed it since berth last applied the same thing; put back.
    Repaired,
    /// Someone else deleted it since berth last applied it; created again.
    Recreated,
}

/// A child after [`Context::ensure`], and what happened to it.
#[derive(Clone, Debug)]
pub struct Applied<K> {
    pub object: K,
    pub outcome: Outcome,
}

/// What an apply did, from versions alone. `memo`: whether berth wants what it last applied, and the
/// version that apply left; `cached`: the watch cache's version (`None`: not in the cache); `answer`: the
/// version after this apply. An answer at the version berth left, or at the cache's version, means the
/// apply wrote nothing (the cache was behind, or someone changed only fields berth does not own).
fn outcome(
    memo: Option<(bool, Option<u64>)>,
    cached: Option<Option<String>>,
    answer: Option<&str>,
) -> Outcome {
    let wrote_nothing = memo.is_some_and(|(_, v)| v.is_some() && v == answer.map(version))
        || cached
            .as_ref()
            .is_some_and(|c| c.is_some() && c.as_deref() == answer);
    match (memo, cached) {
        _ if wrote_nothing => Outcome::Unchanged,
        (Some((true, _)), None) => Outcome::Recreated,
        (Some((true, _)), Some(_)) => Outcome::Repaired,
        (_, None) => Outcome::Created,
        (_, Some(_)) => Outcome::Updated,
    }
}

/// A resourceVersion as a memo keeps it.
fn version(resource_version: &str) -> u64 {
    crate::changes::hash(&resource_version)
}

fn slot(key: &str) -> u64 {
    crate::changes::hash(&key)
}

fn memo_key<K: Resource<DynamicType = ()>>(obj: &K) -> String {
    format!(
        "{}/{}/{}",
        K::kind(&()),
        obj.namespace().unwrap_or_default(),
        obj.name_any()
    )
}

/// Stable across processes (a fixed-key hasher over sorted JSON), which a recorded entry has to be.
fn entry(key: &str, memo: &Memo) -> String {
    format!("{:016x}", crate::changes::hash(&(key, memo.wanted, memo.seen)))
}

fn hash<K: Serialize>(obj: &K) -> u64 {
    hash_json(&serde_json::to_value(obj).unwrap_or_default())
}

fn hash_json(value: &serde_json::Value) -> u64 {
    crate::changes::hash(&value.to_string())
}

/// What berth's last apply left of `obj`: not its status and version stamps, nor the labels and
/// annotations others add (the Deployment controller's revision, say), which an apply would leave alone.
/// Labels and annotations are compared as the view holds them, hashed, for the keys `desired` has.
fn fingerprint<K: Resource<DynamicType = ()>>(desired: &K, obj: &Cached<K>) -> u64 {
    let mut value = obj.value();
    if let Some(o) = value.as_object_mut() {
        o.remove("status");
        if let Some(meta) = o.get_mut("metadata").and_then(serde_json::Value::as_object_mut) {
            for field in ["resourceVersion", "managedFields", "labels", "annotations"] {
                meta.remove(field);
            }
        }
    }
    let wanted = desired.meta();
    crate::changes::hash(&(
        value.to_string(),
        obj.digest(),
        obj.labels_within(wanted.labels.as_ref()),
        obj.annotations_within(wanted.annotations.as_ref()),
    ))
}

/// By UID: an object re-created under the same name starts with a clean slate.
fn key<K: Resource>(obj: &K) -> String {
    obj.uid()
        .unwrap_or_else(|| format!("{}/{}", obj.namespace().unwrap_or_default(), obj.name_any()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    fn context() -> Arc<Context> {
        // Never connects: these tests exercise the bookkeeping only.
        let client =
            kube::Client::try_from(kube::Config::new("http://127.0.0.1:9".parse().unwrap())).unwrap();
        let publisher = Publisher::new(client.clone(), "test".into(), None);
        Context::new(
            client,
            "test",
            publisher,
            Arc::new(Metrics::default()),
            Settings::default(),
        )
    }

    fn config_map(value: &str, rv: Option<&str>) -> ConfigMap {
        let mut cm = ConfigMap::default();
        cm.metadata.labels = Some([("app".to_owned(), "x".to_owned())].into());
        cm.metadata.name = Some("cm".into());
        cm.metadata.namespace = Some("ns-x".into());
        cm.metadata.resource_version = rv.map(Into::into);
        cm.data = Some([("k".to_owned(), value.to_owned())].into());
        cm
    }

    /// The watch cache's view.
    fn cached(value: &str, rv: &str) -> Cached<ConfigMap> {
        Cached::new(config_map(value, Some(rv)))
    }

    #[test]
    fn outcomes_tell_berths_own_writes_from_repairs() {
        let v = |s: &str| Some(s.to_owned());
        // First apply of this process: created, or updated (perhaps by a new version of berth).
        assert_eq!(outcome(None, None, Some("5")), Outcome::Created);
        assert_eq!(outcome(None, Some(v("4")), Some("5")), Outcome::Updated);
        assert_eq!(outcome(None, Some(v("5")), Some("5")), Outcome::Unchanged);
        // berth wants something new.
        assert_eq!(
            outcome(Some((false, Some(version("5")))), Some(v("5")), Some("6")),
            Outcome::Updated
        );
        // The same wish, and the object moved under it: someone else's doing.
        assert_eq!(
            outcome(Some((true, Some(version("5")))), Some(v("6")), Some("7")),
            Outcome::Repaired
        );
        assert_eq!(
            outcome(Some((true, Some(version("5")))), None, Some("9")),
            Outcome::Recreated
        );
        // The cache behind berth's own last write, or a change only to fields berth leaves alone.
        assert_eq!(
            outcome(Some((true, Some(version("5")))), Some(v("4")), Some("5")),
            Outcome::Unchanged
        );
        assert_eq!(
            outcome(Some((true, Some(version("5")))), Some(v("6")), Some("6")),
            Outcome::Unchanged
        );
    }

    #[test]
    fn a_memo_goes_after_two_resyncs_unused() {
        let t0 = Instant::now();
        let min = |m: u64| Duration::from_secs(m * 60);
        assert!(!stale(t0, t0 + min(30)), "unused for exactly two resyncs: kept");
        assert!(stale(t0, t0 + min(30) + Duration::from_secs(1)));
        assert!(!stale(t0 + min(1), t0), "a clock read before the use");
        assert!(!sweep_due(t0, t0 + Duration::from_secs(59)));
        assert!(sweep_due(t0, t0 + min(1)));
    }

    #[test]
    fn memos_of_children_no_longer_applied_are_swept_at_most_once_a_minute() {
        let t0 = Instant::now();
        let at = |secs: u64| t0 + Duration::from_secs(secs);
        let put = |memos: &mut Memos, key: &str, secs: u64| {
            let memo = Memo {
                wanted: 1,
                seen: 2,
                version: None,
                used: at(secs),
            };
            memos.insert(key, memo, at(secs));
        };
        let keys = |memos: &Memos| {
            let mut keys: Vec<&str> = ["live", "dead", "new", "w", "y", "z"]
                .into_iter()
                .filter(|k| memos.entries.contains_key(&slot(k)))
                .collect();
            keys.sort_unstable();
            keys
        };
        let mut memos = Memos::default();
        put(&mut memos, "live", 0);
        put(&mut memos, "dead", 0);
        // Looked up by `unchanged` at minute 20: a use, though nothing is applied.
        assert!(memos.get("live", at(20 * 60)).is_some());
        put(&mut memos, "new", 31 * 60);
        assert_eq!(keys(&memos), ["live", "new"], "dead unused for 31 minutes");
        put(&mut memos, "y", 61 * 60);
        assert_eq!(keys(&memos), ["new", "y"], "live unused since minute 20");
        put(&mut memos, "z", 61 * 60 + 30);
        assert_eq!(
            keys(&memos),
            ["new", "y", "z"],
            "new is stale by now, but the last sweep was 30 s ago"
        );
        put(&mut memos, "w", 62 * 60);
        assert_eq!(keys(&memos), ["w", "y", "z"]);
    }

    #[tokio::test]
    async fn a_plain_create_counts_as_applied() {
        let ctx = context();
        let desired = config_map("v1", None);
        assert_eq!(ctx.entry(&desired), None);
        let created = ctx.created(&desired, config_map("v1", Some("3")));
        assert_eq!(created.outcome, Outcome::Created);
        assert!(
            ctx.unchanged(&desired, &cached("v1", "3")),
            "nothing to apply after it"
        );
        assert!(ctx.entry(&desired).is_some(), "recorded for the parent's status");
        assert!(!ctx.unchanged(&desired, &cached("v2", "4")), "edited since");
    }

    #[tokio::test]
    async fn unchanged_only_when_desired_and_object_are_as_last_applied() {
        let ctx = context();
        let desired = config_map("v1", None);
        assert!(
            !ctx.unchanged(&desired, &cached("v1", "7")),
            "never applied by this process"
        );
        ctx.remember(&desired, &config_map("v1", Some("7")));
        assert!(ctx.unchanged(&desired, &cached("v1", "7")));
        assert!(
            ctx.unchanged(&desired, &cached("v1", "8")),
            "a new version alone, as after a status write"
        );
        let mut annotated = config_map("v1", Some("8"));
        annotated
            .annotations_mut()
            .insert("deployment.kubernetes.io/revision".to_owned(), "1".to_owned());
        assert!(
            ctx.unchanged(&desired, &Cached::new(annotated)),
            "another controller's annotation, which an apply would keep"
        );
        let mut edited = config_map("v1", Some("9"));
        edited.meta_mut().labels = None;
        let edited = Cached::new(edited);
        assert!(!ctx.unchanged(&desired, &edited), "someone removed berth's label");
        assert!(
            !ctx.unchanged(&desired, &cached("other", "9")),
            "someone changed the data"
        );
        assert!(
            !ctx.unchanged(&config_map("v2", None), &cached("v1", "7")),
            "berth wants something else"
        );
    }

    #[tokio::test]
    async fn a_new_process_trusts_a_child_only_as_the_parents_record_shows_it() {
        let before = context();
        let desired = config_map("v1", None);
        before.remember(&desired, &config_map("v1", Some("7")));
        let recorded: HashSet<String> = before.entry(&desired).into_iter().collect();
        assert_eq!(recorded.len(), 1);

        let after = context();
        after.recall(&desired, &cached("v1", "7"), &HashSet::new());
        assert!(
            !after.unchanged(&desired, &cached("v1", "7")),
            "nothing recorded: applied as before"
        );
        after.recall(&desired, &cached("edited", "9"), &recorded);
        assert!(
            !after.unchanged(&desired, &cached("edited", "9")),
            "edited while no berth ran"
        );
        after.recall(&config_map("v2", None), &cached("v1", "7"), &recorded);
        assert!(
            !after.unchanged(&config_map("v2", None), &cached("v1", "7")),
            "berth now wants something else"
        );
        after.recall(&desired, &cached("v1", "8"), &recorded);
        assert!(
            after.unchanged(&desired, &cached("v1", "8")),
            "as berth left it, but for a status write"
        );
        assert_eq!(
            after.entry(&desired),
            before.entry(&desired),
            "and recorded alike"
        );
    }
}
