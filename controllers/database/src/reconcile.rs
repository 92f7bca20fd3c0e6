//! One reconcile of a Database, top to bottom: validate (pure) → load (the reads) → credentials
//! (read back; generated only while nothing can hold data, see `origin`) → build (pure) → apply (in a
//! fixed order, then the volume kept under `Retain`) → status (once, and only when it changed).

use std::sync::Arc;
use std::time::Duration;

use berth_api::Database;
use berth_kit::cache::Cache;
use berth_kit::conditions::{READY, now};
use berth_kit::labels::customer_of;
use berth_kit::namespaced::PerNamespace;
use berth_kit::runtime::Reconciler;
use berth_kit::slim::Cached;
use berth_kit::watch::{Synced, current};
use berth_kit::{Context, Error, Ledger, Result, owner_ref};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::Api;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};

use crate::build::{self, Children, Inputs};
use crate::credentials::Credentials;
use crate::names;
use crate::origin::{self, Origin, Seen};
use crate::readback;
use crate::refused;
use crate::status::{self, Observed};
use crate::tls;
use crate::validate::validate;
use crate::volume::{self, Retained};

/// How often a Database whose credentials are missing is looked at again. The watches wake it when its
/// Secret, StatefulSet or claim changes, but not for objects without berth's label: a Secret restored
/// without it (refused as foreign, so the status says so) or a claim created by hand and deleted again.
const RECHECK: Duration = Duration::from_secs(30);

/// What a reconcile gets: kit's context and the caches filled by the watches that wake the controller.
pub(crate) struct Ctx {
    pub(crate) kit: Arc<Context>,
    pub(crate) caches: Caches,
    /// Wakes the controller when a Secret of a Database changes (see `berth_kit::namespaced`).
    pub(crate) secret_watches: PerNamespace<Secret>,
    pub(crate) synced: Synced,
    /// Volumes this process has seen at reclaim policy `Retain` (see `volume::Retained`).
    pub(crate) retained: Retained,
}

/// What the controller's label-selected watches hold of its children.
pub(crate) struct Caches {
    pub(crate) config_maps: Cache<Cached<ConfigMap>>,
    pub(crate) servers: Cache<Cached<StatefulSet>>,
    pub(crate) pools: Cache<Cached<Deployment>>,
    pub(crate) services: Cache<Cached<Service>>,
    pub(crate) budgets: Cache<Cached<PodDisruptionBudget>>,
    /// The servers' volume claims (see `volume::claims`).
    pub(crate) claims: Cache<Cached<PersistentVolumeClaim>>,
}

impl Reconciler for Ctx {
    type K = Database;

    fn kit(&self) -> &Context {
        &self.kit
    }

    fn synced(&self) -> Option<&Synced> {
        Some(&self.synced)
    }

    fn api(&self, db: &Database) -> Api<Database> {
        self.kit.api(&db.namespace().unwrap_or_default())
    }

    async fn reconcile(&self, db: Arc<Database>) -> Result<Action> {
        converge(&db, self).await
    }
}

async fn converge(db: &Database, ctx: &Ctx) -> Result<Action> {
    let kit = ctx.kit.as_ref();
    let namespace = db
        .namespace()
        .ok_or_else(|| Error::InvalidSpec("a Database must have a namespace".into()))?;
    let name = db.name_any();
    if db.metadata.deletion_timestamp.is_some() {
        // The garbage collector removes the children; applying them now would bring them back.
        return Ok(Action::await_change());
    }

    // Before any read: what the watch's first list shows is then read here, not a second wake-up.
    ctx.secret_watches.watch(&namespace).await;

    // Validate: pure, before anything is read or written.
    validate(db).map_err(Error::InvalidSpec)?;

    // Load: every read but the volume's (see `volume::keep`).
    let loaded = Loaded::load(ctx, &namespace, &name).await?;

    // Credentials: read back from their Secret; new ones only while nothing can hold data yet; with data
    // and no Secret, nothing is generated or applied and the status says how to recover.
    // What is read back is checked like any input (see `readback`): a value that fails leaves every child,
    // the pool's configuration included, as it was.
    let wanted_rotation = db.spec.password_rotation;
    let mut rotated = None;
    let credentials = match origin::origin(loaded.seen()) {
        Origin::Use(secret) => {
            let credentials = origin::existing(secret)?;
            if let Err(invalid) = readback::check(&credentials) {
                let message = readback::message(&name, &invalid);
                return held(ctx, db, &namespace, &loaded, status::CREDENTIALS_INVALID, message).await;
            }
            // A rotation asked for: a new app password, stored in the credentials Secret by this
            // reconcile's apply, from where the pool's userlist and the connection Secret follow.
            if credentials.rotation == wanted_rotation {
                credentials
            } else {
                rotated = Some(credentials.rotation);
                origin::rotate(credentials, wanted_rotation)?
            }
        }
        Origin::Generate => Credentials {
            rotation: wanted_rotation,
            ..origin::generate(&name)?
        },
        Origin::Missing => {
            let message = origin::missing_message(&name);
            return held(ctx, db, &namespace, &loaded, status::CREDENTIALS_MISSING, message).await;
        }
    };

    // Certificates: read back, renewed when due, issued when missing or unreadable (see `tls`).
    let subjects = tls::Subjects::in_cluster(&name, &namespace);
    let (tls, issued) = tls::current(
        loaded.tls.as_ref(),
        &name,
        &subjects,
        &credentials.app_user,
        time::OffsetDateTime::now_utc(),
    )
    .map_err(Error::Internal)?;

    // Build: pure.
    let owner = owner_ref(db).ok_or_else(|| Error::InvalidSpec("the Database has no uid yet".into()))?;
    let customer = customer_of(db.labels(), &namespace);
    let existing_claims = loaded.server_claims();
    let children = build::children(&Inputs {
        db,
        namespace: &namespace,
        name: &name,
        customer: &customer,
        owner: &owner,
        credentials: &credentials,
        tls: &tls,
        settings: &kit.settings,
        existing_claims: existing_claims.as_deref(),
    });

    // Apply.
    let (server, pool, applied) = apply(kit, &ctx.caches, db, &namespace, children, &loaded).await?;
    if let Some(from) = rotated {
        let note = format!(
            "rotated the app password (passwordRotation {from} → {wanted_rotation}): stored in Secret {}, \
             reloaded by the pool, published in Secret {}",
            names::credentials(&name),
            names::connection(&name)
        );
        kit.event(&db.object_ref(&()), EventType::Normal, "PasswordRotated", note)
            .await;
    }
    if let Some(note) = issued {
        let reference = db.object_ref(&());
        kit.event(&reference, EventType::Normal, "CertificatesIssued", note)
            .await;
    }
    // The volume: under `Retain`, its PersistentVolume keeps the data even when the namespace is deleted.
    // (One read of a cluster-scoped volume per process, which no cache holds; see `volume`.)
    volume::keep(kit, &ctx.retained, db, loaded.claim().as_ref()).await?;

    // Status: from the workloads as the apply answered them (this spec, latest status); their own
    // status changes wake the controller again through the `owns` watches.
    let mut observed = Observed::from(Some(&server), Some(&pool));
    observed.server_refused = refused::server_refusal(kit, &namespace, &server).await;
    let mut status = status::status(db, &namespace, &observed, &now());
    status.password_rotation = Some(credentials.rotation);
    status.applied = applied;
    // Progress on the way to Ready (the pool's pods one by one) is paced (see `berth_kit::pace`).
    let api = kit.api::<Database>(&namespace);
    match kit.paced_status(&api, db, db.status.as_ref(), &status).await? {
        Some(wait) => Ok(Action::requeue(wait)),
        None => Ok(Action::requeue(berth_kit::runtime::RESYNC)),
    }
}

/// Everything a reconcile reads from the cluster.
struct Loaded {
    credentials: Option<Secret>,
    /// Whole: the certificates are read from it (a cache's view holds only a digest of the values).
    tls: Option<Secret>,
    server: Option<Arc<Cached<StatefulSet>>>,
    pool: Option<Arc<Cached<Deployment>>>,
    claim: Option<Arc<Cached<PersistentVolumeClaim>>>,
}

impl Loaded {
    /// The credentials Secret comes from the cache when it is there (a cache can lag, but never shows a
    /// Secret that does not exist), and from the API server when it is not: whether it exists decides
    /// whether passwords are generated, and a lagging cache must not answer "no". The workloads and the
    /// server's volume claim come from the caches the controller's watches fill; the claim, too, is asked
    /// of the API server when neither the Secret nor the server is there, since it then decides between
    /// fresh passwords and none, and a claim created by hand (to pre-bind a retained volume) may lack the
    /// label berth's watch selects on.
    async fn load(ctx: &Ctx, namespace: &str, name: &str) -> Result<Self> {
        ctx.synced.wait().await?;
        let c = &ctx.caches;
        let credentials = ctx
            .kit
            .api::<Secret>(namespace)
            .get_opt(&names::credentials(name))
            .await?;
        let tls = ctx
            .kit
            .api::<Secret>(namespace)
            .get_opt(&names::tls(name))
            .await?;
        let server = c
            .servers
            .get(&ObjectRef::new(&names::server(name)).within(namespace));
        let pool = c.pools.get(&ObjectRef::new(&names::pool(name)).within(namespace));
        let claim_name = names::data_claim(name);
        let mut claim = c.claims.get(&ObjectRef::new(&claim_name).within(namespace));
        if credentials.is_none() && server.is_none() && claim.is_none() {
            claim = ctx
                .kit
                .api::<PersistentVolumeClaim>(namespace)
                .get_opt(&claim_name)
                .await?
                .map(|c| Arc::new(Cached::new(c)));
        }
        Ok(Self {
            credentials,
            tls,
            server,
            pool,
            claim,
        })
    }

    /// What decides where the passwords come from (see `origin::origin`).
    fn seen(&self) -> Seen<'_> {
        Seen {
            secret: self.credentials.as_ref(),
            server: self.server.is_some(),
            claim: self.claim.is_some(),
        }
    }

    fn server_claims(&self) -> Option<Vec<PersistentVolumeClaim>> {
        self.server.as_ref()?.object().spec?.volume_claim_templates
    }

    fn claim(&self) -> Option<PersistentVolumeClaim> {
        self.claim.as_ref().map(|c| c.object())
    }
}

/// Nothing is applied for this Database because of its credentials: the Secret is gone while the server's
/// volume may hold data ([`status::CREDENTIALS_MISSING`], see `origin`: nothing is generated), or a value in it
/// cannot be used as it is ([`status::CREDENTIALS_INVALID`], see `readback`). The workloads and the pool's
/// configuration are left as they are (a running server and pool keep serving with what they started with),
/// the volume is kept under `Retain` all the same, and `Ready` says how to recover, with a Warning event when
/// that news is new. Looked at again every [`RECHECK`]; once the Secret is back and valid (or the
/// StatefulSet and the claim are gone), the Database converges as usual.
async fn held(
    ctx: &Ctx,
    db: &Database,
    namespace: &str,
    loaded: &Loaded,
    reason: &'static str,
    message: String,
) -> Result<Action> {
    let kit = ctx.kit.as_ref();
    let (server, pool) = (loaded.server.as_ref(), loaded.pool.as_ref());
    let observed = Observed::from(
        server.map(|s| s.object()).as_ref(),
        pool.map(|p| p.object()).as_ref(),
    );
    let mut status = status::held(db, namespace, &observed, reason, &message, &now());
    status.password_rotation = db.status.as_ref().and_then(|s| s.password_rotation);
    if ready_changed(db, &status) {
        kit.event(&db.object_ref(&()), EventType::Warning, reason, message)
            .await;
    }
    kit.apply_status(&kit.api::<Database>(namespace), db, db.status.as_ref(), &status)
        .await?;
    // After the status, so a failure here cannot hide the news.
    volume::keep(kit, &ctx.retained, db, loaded.claim().as_ref()).await?;
    Ok(Action::requeue(RECHECK))
}

/// Applies every child, in an order that lets each find what it needs, and returns the workloads and
/// the record of what was applied for the status (see [`Ledger`]).
/// A child is written only when it differs from what berth last applied or was touched since
/// (`Context::ensure`).
async fn apply(
    kit: &Context,
    caches: &Caches,
    db: &Database,
    namespace: &str,
    children: Children,
    loaded: &Loaded,
) -> Result<(StatefulSet, Deployment, Option<String>)> {
    let Children {
        credentials,
        tls,
        server_init,
        pool_config,
        pool_auth,
        connection,
        server,
        pool,
        server_service,
        pool_service,
        pool_budget,
    } = children;
    let secrets = kit.api::<Secret>(namespace);
    let config_maps = kit.api::<ConfigMap>(namespace);
    let services = kit.api::<Service>(namespace);

    // 1. Secrets and ConfigMaps, so the pods find what they mount and reference. The credentials come
    // first: the other Secrets carry their values, and are not written when the create of fresh ones fails.
    // The rest depend on nothing but them, so they are ensured at once.
    ensure_credentials(kit, db, &secrets, loaded.credentials.as_ref(), &credentials).await?;
    let c = caches;
    let r = Ledger::new(db.status.as_ref().and_then(|s| s.applied.as_deref()));
    let r = &r;
    let read_then_ensure = |desired: Secret| {
        let secrets = secrets.clone();
        async move {
            let cached = read(&secrets, &desired).await?;
            r.ensure(kit, &secrets, &desired, cached).await
        }
    };
    let cached = loaded.tls.clone().map(|s| Arc::new(Cached::new(s)));
    futures::try_join!(
        r.ensure(kit, &secrets, &tls, cached),
        r.ensure(
            kit,
            &config_maps,
            &server_init,
            current(&c.config_maps, &server_init)
        ),
        r.ensure(
            kit,
            &config_maps,
            &pool_config,
            current(&c.config_maps, &pool_config)
        ),
        read_then_ensure(pool_auth),
        read_then_ensure(connection),
    )?;

    // 2. Workloads: the server, then the pool in front of it.
    let cached = current(&c.servers, &server);
    let server = r.ensure(kit, &kit.api(namespace), &server, cached).await?;
    let cached = current(&c.pools, &pool);
    let pool = r.ensure(kit, &kit.api(namespace), &pool, cached).await?;

    // 3. Services and the disruption budget, in front of the pods, at once.
    let budgets = kit.api::<PodDisruptionBudget>(namespace);
    futures::try_join!(
        r.ensure(
            kit,
            &services,
            &server_service,
            current(&c.services, &server_service)
        ),
        r.ensure(kit, &services, &pool_service, current(&c.services, &pool_service)),
        r.ensure(kit, &budgets, &pool_budget, current(&c.budgets, &pool_budget)),
    )?;
    r.tell(kit, &db.object_ref(&())).await;
    let applied = r.record();
    Ok((server, pool, applied))
}

/// A Secret as it is now, read by name where other kinds come from a cache (berth caches no Secret), and
/// viewed as a cache would hold it: its values only as a digest.
async fn read(api: &Api<Secret>, desired: &Secret) -> Result<Option<Arc<Cached<Secret>>>> {
    Ok(api
        .get_opt(&desired.name_any())
        .await?
        .map(|s| Arc::new(Cached::new(s))))
}

/// The credentials Secret is created once and never overwritten, but for the app password when a rotation
/// asks for a new one.
///
/// Absent: it is *created*, not applied (see [`berth_kit::apply::create`]), so if it appeared since it was
/// read (say, a second operator instance) the create fails with 409 and the next reconcile reads that one
/// back instead of replacing its passwords. The create is itself an apply of the whole Secret, owner
/// reference included, so the reference is owned by berth's apply and a later switch to `Retain` removes it.
///
/// Present: `desired` was built from the very values it holds, so it is applied only when labels or the
/// owner reference differ (a changed deletionPolicy), or the app password was rotated, never otherwise.
async fn ensure_credentials(
    kit: &Context,
    db: &Database,
    api: &Api<Secret>,
    existing: Option<&Secret>,
    desired: &Secret,
) -> Result<()> {
    let Some(current) = existing else {
        kit.create(api, desired).await?;
        let note = format!("generated credentials in Secret {}", desired.name_any());
        kit.event(
            &db.object_ref(&()),
            EventType::Normal,
            "CredentialsGenerated",
            note,
        )
        .await;
        return Ok(());
    };
    if needs_apply(current, desired) {
        kit.apply(api, desired).await?;
    }
    Ok(())
}

/// True when `current` lacks a label, an annotation or a value of `desired` (a rotated password), or its
/// controller reference differs. Keys and annotations someone else added do not count.
fn needs_apply(current: &Secret, desired: &Secret) -> bool {
    let controller = |s: &Secret| -> Vec<OwnerReference> {
        s.owner_references()
            .iter()
            .filter(|r| r.controller == Some(true))
            .cloned()
            .collect()
    };
    let labels_missing = desired
        .labels()
        .iter()
        .any(|(k, v)| current.labels().get(k) != Some(v));
    let annotations_missing = desired
        .annotations()
        .iter()
        .any(|(k, v)| current.annotations().get(k) != Some(v));
    let (now, wanted) = (
        current.data.clone().unwrap_or_default(),
        desired.data.clone().unwrap_or_default(),
    );
    let values_differ = wanted.iter().any(|(k, v)| now.get(k) != Some(v));
    labels_missing || annotations_missing || values_differ || controller(current) != controller(desired)
}

/// True when `status` would change the Database's `Ready` condition: news worth an event.
fn ready_changed(db: &Database, status: &berth_api::DatabaseStatus) -> bool {
    db.status.as_ref().is_none_or(|s| {
        berth_api::find_condition(&s.conditions, READY)
            != berth_api::find_condition(&status.conditions, READY)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{build, database};

    #[test]
    fn an_existing_secret_is_not_applied_again_when_it_already_matches() {
        for policy in ["Retain", "Delete"] {
            let desired = build(&database(&format!("storage: 1Gi\ndeletionPolicy: {policy}\n"))).credentials;
            assert!(!needs_apply(&desired, &desired), "{policy}");
        }
    }

    #[test]
    fn a_rotated_password_is_applied_and_foreign_keys_are_left_alone() {
        let mut current = build(&database("storage: 1Gi\n")).credentials;
        let mut rotated = crate::build::tests::credentials();
        rotated.app_password = "B".repeat(32);
        rotated.rotation = 1;
        let desired = crate::build::tests::build_creds(&database("storage: 1Gi\n"), &rotated).credentials;
        assert!(needs_apply(&current, &desired));
        current
            .data
            .as_mut()
            .unwrap()
            .insert("EXTRA".into(), k8s_openapi::ByteString(b"x".to_vec()));
        current.metadata.annotations = Some([("note".to_owned(), "x".to_owned())].into());
        let same = build(&database("storage: 1Gi\n")).credentials;
        assert!(!needs_apply(&current, &same));
    }

    #[test]
    fn a_changed_deletion_policy_moves_the_owner_reference() {
        let retained = build(&database("storage: 1Gi\ndeletionPolicy: Retain\n")).credentials;
        let deleted = build(&database("storage: 1Gi\ndeletionPolicy: Delete\n")).credentials;
        assert!(
            needs_apply(&retained, &deleted),
            "Retain → Delete adds the reference"
        );
        assert!(needs_apply(&deleted, &retained), "Delete → Retain removes it");
        assert_eq!(retained.data, deleted.data, "with the same values");
    }
}
