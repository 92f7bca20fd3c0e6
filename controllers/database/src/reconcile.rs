//! One reconcile of a Database, top to bottom: validate (pure) → load (the only reads) → credentials
//! (read back, generated only if absent) → build (pure) → apply (in a fixed order) → status (once, and
//! only when it changed).

use std::sync::Arc;

use berth_api::Database;
use berth_kit::conditions::READY;
use berth_kit::labels::{BERTH, MANAGED_BY, customer_of};
use berth_kit::metrics::ControllerLabel;
use berth_kit::watch::current;
use berth_kit::{Context, Error, FIELD_MANAGER, Result, owner_ref};
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{OwnerReference, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Resource, ResourceExt};

use crate::build::{self, Children, Inputs};
use crate::credentials::Credentials;
use crate::names;
use crate::status::{self, Observed};
use crate::validate::validate;

/// What a reconcile gets: kit's context and the caches filled by the watches that wake the controller.
pub(crate) struct Ctx {
    pub(crate) kit: Arc<Context>,
    pub(crate) databases: Store<Database>,
    pub(crate) caches: Caches,
    pub(crate) synced: berth_kit::watch::Synced,
}

/// What the controller's label-selected watches hold of its children.
pub(crate) struct Caches {
    pub(crate) secrets: Store<Secret>,
    pub(crate) config_maps: Store<ConfigMap>,
    pub(crate) servers: Store<StatefulSet>,
    pub(crate) pools: Store<Deployment>,
    pub(crate) services: Store<Service>,
    pub(crate) budgets: Store<PodDisruptionBudget>,
}

pub(crate) async fn reconcile(db: Arc<Database>, ctx: Arc<Ctx>) -> Result<Action> {
    berth_kit::trace::reconcile(&ctx.kit, db.as_ref(), reconcile_traced(&db, &ctx)).await
}

async fn reconcile_traced(db: &Arc<Database>, ctx: &Arc<Ctx>) -> Result<Action> {
    let kit = &ctx.kit;
    let managed = i64::try_from(ctx.databases.len()).unwrap_or(i64::MAX);
    kit.metrics
        .managed
        .get_or_create(&ControllerLabel {
            controller: kit.controller,
        })
        .set(managed);
    match converge(db, ctx).await {
        Ok(action) => {
            kit.succeeded(db.as_ref());
            Ok(action)
        }
        // Waiting for a person: say why where they look (status, events), then let the error policy
        // count it and retry rarely.
        Err(e) if e.is_permanent() => {
            report(kit, db, &e).await?;
            Err(e)
        }
        Err(e) => Err(e),
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

    // Validate: pure, before anything is read or written.
    validate(db).map_err(Error::InvalidSpec)?;

    // Load: the only reads.
    let loaded = Loaded::load(ctx, &namespace, &name).await?;

    // Credentials: read back from their Secret; new ones only when there is none.
    let credentials = credentials_for(loaded.credentials.as_ref(), &name)?;

    // Build: pure.
    let owner = owner_ref(db).ok_or_else(|| Error::InvalidSpec("the Database has no uid yet".into()))?;
    let customer = customer_of(db.labels(), &namespace);
    let children = build::children(&Inputs {
        db,
        namespace: &namespace,
        name: &name,
        customer: &customer,
        owner: &owner,
        credentials: &credentials,
        settings: &kit.settings,
        existing_claims: loaded.server_claims(),
    });

    // Apply.
    let (server, pool) = apply(
        kit,
        &ctx.caches,
        db,
        &namespace,
        children,
        loaded.credentials.as_ref(),
    )
    .await?;

    // Status: from the workloads as the apply answered them (this spec, latest status); their own
    // status changes wake the controller again through the `owns` watches.
    let observed = Observed::from(Some(&server), Some(&pool));
    let status = status::status(db, &namespace, &observed, &now());
    kit.apply_status(&kit.api::<Database>(&namespace), db, db.status.as_ref(), &status)
        .await?;
    Ok(Action::await_change())
}

/// Everything a reconcile reads from the cluster.
struct Loaded {
    credentials: Option<Secret>,
    server: Option<Arc<StatefulSet>>,
}

impl Loaded {
    /// The credentials Secret comes from the cache when it is there (a cache can lag, but never shows a
    /// Secret that does not exist), and from the API server when it is not: whether it exists decides
    /// whether passwords are generated, and a lagging cache must not answer "no". The workloads come from
    /// the caches the controller's watches fill.
    async fn load(ctx: &Ctx, namespace: &str, name: &str) -> Result<Self> {
        ctx.synced.wait().await?;
        let key = ObjectRef::new(&names::credentials(name)).within(namespace);
        let credentials = match ctx.caches.secrets.get(&key) {
            Some(cached) => Some((*cached).clone()),
            None => {
                ctx.kit
                    .api::<Secret>(namespace)
                    .get_opt(&names::credentials(name))
                    .await?
            }
        };
        Ok(Self {
            credentials,
            server: ctx
                .caches
                .servers
                .get(&ObjectRef::new(&names::server(name)).within(namespace)),
        })
    }

    fn server_claims(&self) -> Option<&[k8s_openapi::api::core::v1::PersistentVolumeClaim]> {
        self.server
            .as_ref()?
            .spec
            .as_ref()?
            .volume_claim_templates
            .as_deref()
    }
}

/// The credentials of Database `name`: those in its Secret when there is one (every later reconcile,
/// and every reconcile after an operator restart, since nothing is kept in memory), fresh ones only
/// when there is none.
fn credentials_for(existing: Option<&Secret>, name: &str) -> Result<Credentials> {
    match existing {
        Some(secret) => existing_credentials(secret),
        None => Credentials::generate(names::SUPERUSER, &names::sql_database(name), names::APP_USER).map_err(
            |e| {
                internal(&format!(
                    "reading the OS random generator for new credentials: {e}"
                ))
            },
        ),
    }
}

/// Credentials from an existing Secret, which must be berth's and complete: berth never overwrites a
/// password that a volume may already hold.
fn existing_credentials(secret: &Secret) -> Result<Credentials> {
    let name = secret.name_any();
    if secret.labels().get(MANAGED_BY).map(String::as_str) != Some(BERTH) {
        return Err(Error::Conflict(format!(
            "Secret {name} exists and is not managed by berth; rename or remove it"
        )));
    }
    Credentials::from_secret(secret).map_err(|problem| {
        Error::Conflict(format!(
            "credentials Secret {name}: {problem}; berth never regenerates credentials, restore the key"
        ))
    })
}

/// A local failure that is neither the API server's nor the user's, retried with back-off.
///
/// kit's `Error` has no variant for it yet (reported to the lead); until it has, such failures travel
/// as `Serialization`, which is transient and never reported as a problem with the spec.
fn internal(message: &str) -> Error {
    Error::Serialization(<serde_json::Error as serde::de::Error>::custom(message))
}

/// Applies every child, in an order that lets each find what it needs.
/// A child is written only when it differs from what berth last applied or was touched since
/// (`Context::apply_unless_unchanged`).
async fn apply(
    kit: &Context,
    caches: &Caches,
    db: &Database,
    namespace: &str,
    children: Children,
    existing_credentials: Option<&Secret>,
) -> Result<(StatefulSet, Deployment)> {
    let Children {
        credentials,
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

    // 1. Secrets and ConfigMaps, so the pods find what they mount and reference.
    ensure_credentials(kit, db, &secrets, existing_credentials, &credentials).await?;
    let c = caches;
    kit.apply_unless_unchanged(&config_maps, &server_init, current(&c.config_maps, &server_init))
        .await?;
    kit.apply_unless_unchanged(&config_maps, &pool_config, current(&c.config_maps, &pool_config))
        .await?;
    kit.apply_unless_unchanged(&secrets, &pool_auth, current(&c.secrets, &pool_auth))
        .await?;
    kit.apply_unless_unchanged(&secrets, &connection, current(&c.secrets, &connection))
        .await?;

    // 2. Workloads: the server, then the pool in front of it.
    let server = kit
        .apply_unless_unchanged(
            &kit.api::<StatefulSet>(namespace),
            &server,
            current(&c.servers, &server),
        )
        .await?;
    let pool = kit
        .apply_unless_unchanged(&kit.api::<Deployment>(namespace), &pool, current(&c.pools, &pool))
        .await?;

    // 3. Services and the disruption budget, in front of the pods.
    kit.apply_unless_unchanged(&services, &server_service, current(&c.services, &server_service))
        .await?;
    kit.apply_unless_unchanged(&services, &pool_service, current(&c.services, &pool_service))
        .await?;
    kit.apply_unless_unchanged(
        &kit.api::<PodDisruptionBudget>(namespace),
        &pool_budget,
        current(&c.budgets, &pool_budget),
    )
    .await?;
    Ok((server, pool))
}

/// The credentials Secret is created once and never overwritten.
///
/// Absent: it is *created* (POST), not applied, so if it appeared since it was read (say, a second
/// operator instance) the create fails with 409 and the next reconcile reads that one back instead of
/// replacing its passwords. The create carries no ownerReference; a server-side apply of the same
/// values then adds it (under `Delete`), so the reference is owned by berth's apply and a later switch
/// to `Retain` removes it again.
///
/// Present: `desired` was built from the very values it holds, so it is applied only when labels or the
/// owner reference differ (a changed deletionPolicy), never otherwise.
async fn ensure_credentials(
    kit: &Context,
    db: &Database,
    api: &Api<Secret>,
    existing: Option<&Secret>,
    desired: &Secret,
) -> Result<()> {
    let current = match existing {
        Some(current) => current.clone(),
        None => {
            let mut fresh = desired.clone();
            fresh.metadata.owner_references = None;
            let params = PostParams {
                field_manager: Some(FIELD_MANAGER.to_owned()),
                ..PostParams::default()
            };
            kit.count_write("create");
            let created = api.create(&params, &fresh).await?;
            let note = format!("generated credentials in Secret {}", desired.name_any());
            kit.event(
                &db.object_ref(&()),
                EventType::Normal,
                "CredentialsGenerated",
                note,
            )
            .await;
            created
        }
    };
    if needs_apply(&current, desired) {
        kit.apply(api, desired).await?;
    }
    Ok(())
}

/// True when `current` lacks a label of `desired` or its controller reference differs.
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
    labels_missing || controller(current) != controller(desired)
}

/// Puts a permanent error where a person looks: a Warning event and the status, each only when the
/// status changes (the error policy retries rarely; repeating the same news would be noise).
async fn report(kit: &Context, db: &Database, error: &Error) -> Result<()> {
    let Some(namespace) = db.namespace() else {
        return Ok(());
    };
    let status = status::blocked(db, error.category(), &error.to_string(), &now());
    let unchanged = db.status.as_ref().is_some_and(|s| {
        berth_api::find_condition(&s.conditions, READY)
            == berth_api::find_condition(&status.conditions, READY)
    });
    if unchanged {
        return Ok(());
    }
    kit.event(
        &db.object_ref(&()),
        EventType::Warning,
        error.category(),
        error.to_string(),
    )
    .await;
    kit.apply_status(&kit.api::<Database>(&namespace), db, db.status.as_ref(), &status)
        .await
}

/// The present, to the second (the precision the API server keeps).
fn now() -> Time {
    let now = Timestamp::now();
    Time(Timestamp::from_second(now.as_second()).unwrap_or(now))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::build::tests::{build, database};
    use berth_kit::labels::labels;

    #[test]
    fn a_second_reconcile_or_a_restart_reads_the_same_passwords_back() {
        let db = database("storage: 1Gi\n");
        // First reconcile: no Secret yet, so credentials are generated and the Secret is built from them.
        let first = credentials_for(None, "ledger").unwrap();
        let mut stored = build(&db).credentials;
        stored.data = Some(first.to_data());
        // Second reconcile, or the first one of a restarted operator: only the Secret in the cluster is
        // known, and it gives back the same passwords...
        for _ in 0..2 {
            let again = credentials_for(Some(&stored), "ledger").unwrap();
            assert_eq!(again, first);
            assert_eq!(again.app_password, first.app_password);
            assert_eq!(again.superuser_password, first.superuser_password);
        }
        // ...and the Secret is not written again.
        assert!(!needs_apply(&stored, &stored));
        // Whereas a Database without a Secret would get other passwords.
        assert_ne!(
            credentials_for(None, "ledger").unwrap().app_password,
            first.app_password
        );
    }

    #[test]
    fn an_existing_secret_is_not_applied_again_when_it_already_matches() {
        for policy in ["Retain", "Delete"] {
            let desired = build(&database(&format!("storage: 1Gi\ndeletionPolicy: {policy}\n"))).credentials;
            assert!(!needs_apply(&desired, &desired), "{policy}");
        }
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

    #[test]
    fn foreign_or_incomplete_secrets_are_refused_not_overwritten() {
        let mut foreign = build(&database("storage: 1Gi\n")).credentials;
        foreign.metadata.labels = None;
        assert!(matches!(existing_credentials(&foreign), Err(Error::Conflict(_))));

        let mut incomplete = build(&database("storage: 1Gi\n")).credentials;
        incomplete.metadata.labels = Some(labels("acme-corp", "database"));
        incomplete
            .data
            .as_mut()
            .unwrap()
            .remove(crate::credentials::APP_PASSWORD_KEY);
        let err = existing_credentials(&incomplete).unwrap_err();
        assert!(
            err.is_permanent() && err.to_string().contains("APP_PASSWORD"),
            "{err}"
        );
    }

    #[test]
    fn now_has_whole_seconds() {
        assert_eq!(now().0.subsec_nanosecond(), 0);
    }
}
