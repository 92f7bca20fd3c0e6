//! The server's volume: a cache of its claim (which wakes the controller when the claim is bound or goes),
//! and, under `deletionPolicy: Retain`, the bound PersistentVolume's reclaim policy set to `Retain`.
//!
//! Why the PersistentVolume: a Retain Database's claim carries no owner, so deleting the Database keeps
//! it; but deleting the whole namespace deletes the claim, and a dynamically provisioned volume then does
//! what its StorageClass's `reclaimPolicy` says, usually `Delete`: the data would go with the namespace.
//! With `Retain` on the volume it outlives its claim (`Released`, data intact) and can be bound again
//! (README, "The tenant database"). A `Delete` Database's volume is left as it was provisioned.
//!
//! Only the one volume the claim is bound to is touched, only when that volume says it is bound to that
//! very claim (namespace, name and UID), and only `spec.persistentVolumeReclaimPolicy` is written.

use std::collections::HashSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Mutex;

use berth_api::{Database, DeletionPolicy};
use berth_kit::cache::Cache;
use berth_kit::labels::{COMPONENT, INSTANCE};
use berth_kit::slim::Cached;
use berth_kit::{Context, Result};
use futures::Stream;
use k8s_openapi::api::core::v1::{PersistentVolume, PersistentVolumeClaim};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::EventType;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Resource, ResourceExt};

use crate::names;

/// The reclaim policy that keeps a volume's data after its claim is gone.
const RETAIN: &str = "Retain";

/// The claims berth's StatefulSets create (they carry the claim template's labels, so berth's selector
/// finds them), and the stream that fills the cache: pass it to `Controller::watches_stream` with
/// [`database_of`]. A claim wakes the controller when it appears, goes, is bound or starts being deleted.
/// (A claim has no owner berth could be found by: under `Retain` it has none, under `Delete` its owner is
/// the StatefulSet.)
pub(crate) fn claims(
    api: Api<PersistentVolumeClaim>,
) -> (
    Cache<Cached<PersistentVolumeClaim>>,
    impl Stream<Item = Result<Cached<PersistentVolumeClaim>, watcher::Error>> + Send + 'static,
) {
    berth_kit::watch::owned(api, fingerprint)
}

fn fingerprint(cached: &Cached<PersistentVolumeClaim>) -> u64 {
    let claim = cached.object();
    let mut h = DefaultHasher::new();
    (
        claim.metadata.deletion_timestamp.is_some(),
        claim.spec.as_ref().and_then(|s| s.volume_name.as_deref()),
        claim.status.as_ref().and_then(|s| s.phase.as_deref()),
    )
        .hash(&mut h);
    h.finish()
}

/// The Database whose server's claim this is: named by the claim's instance label, in its namespace, and
/// only for the one claim berth reads ([`names::data_claim`]).
pub(crate) fn database_of(claim: &impl Resource) -> Option<ObjectRef<Database>> {
    let labels = claim.labels();
    if labels.get(COMPONENT).map(String::as_str) != Some(names::SERVER_COMPONENT) {
        return None;
    }
    let db = labels.get(INSTANCE)?;
    if claim.name_any() != names::data_claim(db) {
        return None;
    }
    Some(ObjectRef::new(db).within(&claim.namespace()?))
}

/// A claim bound to a volume, and the volume's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Bound<'a> {
    pub namespace: &'a str,
    pub claim: &'a str,
    pub uid: &'a str,
    pub volume: &'a str,
}

/// The volume to keep: the one the server's claim is bound to, for a `Retain` Database only.
pub(crate) fn to_retain(policy: DeletionPolicy, claim: &PersistentVolumeClaim) -> Option<Bound<'_>> {
    if policy != DeletionPolicy::Retain
        || claim.status.as_ref().and_then(|s| s.phase.as_deref()) != Some("Bound")
    {
        return None;
    }
    Some(Bound {
        namespace: claim.metadata.namespace.as_deref()?,
        claim: claim.metadata.name.as_deref()?,
        uid: claim.metadata.uid.as_deref()?,
        volume: claim
            .spec
            .as_ref()?
            .volume_name
            .as_deref()
            .filter(|v| !v.is_empty())?,
    })
}

/// What to do with the volume a claim is bound to.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Reclaim {
    /// Its reclaim policy is `Retain` already.
    Kept,
    /// Set it with this JSON merge patch: the reclaim policy, and the resourceVersion that was read as a
    /// precondition, so the patch fails (409) if the volume changed hands since.
    Retain(serde_json::Value),
    /// Its `claimRef` names another claim (or none): not this tenant's to touch.
    NotOurs,
}

/// The decision for `volume`, read by the name in `bound`.
pub(crate) fn reclaim(bound: &Bound<'_>, volume: &PersistentVolume) -> Reclaim {
    let spec = volume.spec.as_ref();
    let ours = spec.and_then(|s| s.claim_ref.as_ref()).is_some_and(|r| {
        r.namespace.as_deref() == Some(bound.namespace)
            && r.name.as_deref() == Some(bound.claim)
            && r.uid.as_deref() == Some(bound.uid)
    });
    if !ours || volume.metadata.name.as_deref() != Some(bound.volume) {
        return Reclaim::NotOurs;
    }
    if spec.and_then(|s| s.persistent_volume_reclaim_policy.as_deref()) == Some(RETAIN) {
        return Reclaim::Kept;
    }
    let mut patch = serde_json::json!({ "spec": { "persistentVolumeReclaimPolicy": RETAIN } });
    if let Some(version) = &volume.metadata.resource_version {
        patch["metadata"] = serde_json::json!({ "resourceVersion": version });
    }
    Reclaim::Retain(patch)
}

/// Claims (by UID, with their volume) whose volume this process has seen at `Retain`, so a reconcile reads
/// a volume once per process rather than at every wake-up. A volume set back by hand is therefore put
/// right at the next start of berth, not at once: berth does not watch volumes (they carry no berth label,
/// and a cluster-wide watch of every volume is not worth it).
#[derive(Default)]
pub(crate) struct Retained(Mutex<HashSet<String>>);

impl Retained {
    fn key(bound: &Bound<'_>) -> String {
        format!("{}/{}", bound.uid, bound.volume)
    }

    fn knows(&self, bound: &Bound<'_>) -> bool {
        self.0.lock().is_ok_and(|set| set.contains(&Self::key(bound)))
    }

    fn remember(&self, bound: &Bound<'_>) {
        if let Ok(mut set) = self.0.lock() {
            set.insert(Self::key(bound));
        }
    }
}

/// Under `Retain`, gives the volume bound to the server's `claim` the reclaim policy `Retain` (one read
/// of the volume per process, one patch and a Normal event when it changes anything).
///
/// # Errors
/// Whatever the API server answers, but 404 for the volume (nothing to keep).
pub(crate) async fn keep(
    kit: &Context,
    retained: &Retained,
    db: &Database,
    claim: Option<&PersistentVolumeClaim>,
) -> Result<()> {
    let Some(bound) = claim.and_then(|c| to_retain(db.spec.deletion_policy, c)) else {
        return Ok(());
    };
    if retained.knows(&bound) {
        return Ok(());
    }
    let api: Api<PersistentVolume> = kit.cluster_api();
    let Some(volume) = api.get_opt(bound.volume).await? else {
        return Ok(());
    };
    match reclaim(&bound, &volume) {
        Reclaim::Kept => retained.remember(&bound),
        Reclaim::NotOurs => {
            tracing::warn!(
                volume = bound.volume,
                claim = bound.claim,
                "the claim's volume is bound to another claim; its reclaim policy is left alone"
            );
        }
        Reclaim::Retain(patch) => {
            let params = PatchParams {
                field_manager: Some(kit.manager.clone()),
                ..PatchParams::default()
            };
            kit.count_write("patch");
            api.patch(bound.volume, &params, &Patch::Merge(&patch)).await?;
            retained.remember(&bound);
            let note = format!(
                "PersistentVolume {} of claim {} now has reclaim policy Retain (deletionPolicy: Retain): \
                 deleting the namespace keeps the data",
                bound.volume, bound.claim
            );
            kit.event(&db.object_ref(&()), EventType::Normal, "VolumeRetained", note)
                .await;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_kit::labels::labels;
    use k8s_openapi::api::core::v1::{
        ObjectReference, PersistentVolumeClaimSpec, PersistentVolumeClaimStatus, PersistentVolumeSpec,
    };

    /// A bound claim as the StatefulSet controller makes it, named unlike the product's defaults.
    fn claim(phase: &str) -> PersistentVolumeClaim {
        let mut l = labels("acme-corp", names::SERVER_COMPONENT);
        l.insert(INSTANCE.to_owned(), "ledger".to_owned());
        PersistentVolumeClaim {
            metadata: kube::api::ObjectMeta {
                name: Some("data-ledger-postgres-0".into()),
                namespace: Some("tenant-zz".into()),
                uid: Some("c1a1m-uid".into()),
                labels: Some(l),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                volume_name: Some("pv-7f3a".into()),
                ..Default::default()
            }),
            status: Some(PersistentVolumeClaimStatus {
                phase: Some(phase.into()),
                ..Default::default()
            }),
        }
    }

    fn volume(claim_ref: Option<(&str, &str, &str)>, policy: &str) -> PersistentVolume {
        PersistentVolume {
            metadata: kube::api::ObjectMeta {
                name: Some("pv-7f3a".into()),
                resource_version: Some("812".into()),
                ..Default::default()
            },
            spec: Some(PersistentVolumeSpec {
                claim_ref: claim_ref.map(|(namespace, name, uid)| ObjectReference {
                    namespace: Some(namespace.into()),
                    name: Some(name.into()),
                    uid: Some(uid.into()),
                    ..Default::default()
                }),
                persistent_volume_reclaim_policy: Some(policy.into()),
                ..Default::default()
            }),
            status: None,
        }
    }

    const OURS: (&str, &str, &str) = ("tenant-zz", "data-ledger-postgres-0", "c1a1m-uid");

    #[test]
    fn only_a_bound_claim_of_a_retain_database_has_a_volume_to_keep() {
        let bound = claim("Bound");
        assert_eq!(
            to_retain(DeletionPolicy::Retain, &bound),
            Some(Bound {
                namespace: "tenant-zz",
                claim: "data-ledger-postgres-0",
                uid: "c1a1m-uid",
                volume: "pv-7f3a",
            })
        );
        assert_eq!(
            to_retain(DeletionPolicy::Delete, &bound),
            None,
            "left as provisioned"
        );
        assert_eq!(to_retain(DeletionPolicy::Retain, &claim("Pending")), None);
        let mut unnamed = claim("Bound");
        unnamed.spec = None;
        assert_eq!(to_retain(DeletionPolicy::Retain, &unnamed), None);
    }

    #[test]
    fn the_volume_is_patched_only_when_it_is_this_claims_and_would_be_deleted() {
        let c = claim("Bound");
        let bound = to_retain(DeletionPolicy::Retain, &c).unwrap();
        assert_eq!(
            reclaim(&bound, &volume(Some(OURS), "Delete")),
            Reclaim::Retain(serde_json::json!({
                "metadata": {"resourceVersion": "812"},
                "spec": {"persistentVolumeReclaimPolicy": "Retain"},
            }))
        );
        assert_eq!(reclaim(&bound, &volume(Some(OURS), "Retain")), Reclaim::Kept);
        for other in [
            ("tenant-other", OURS.1, OURS.2),
            (OURS.0, "data-other-postgres-0", OURS.2),
            (OURS.0, OURS.1, "an-earlier-claims-uid"),
        ] {
            assert_eq!(
                reclaim(&bound, &volume(Some(other), "Delete")),
                Reclaim::NotOurs,
                "{other:?}"
            );
        }
        assert_eq!(reclaim(&bound, &volume(None, "Delete")), Reclaim::NotOurs);
        let mut renamed = volume(Some(OURS), "Delete");
        renamed.metadata.name = Some("pv-other".into());
        assert_eq!(reclaim(&bound, &renamed), Reclaim::NotOurs);
    }

    #[test]
    fn a_claim_wakes_its_database_only() {
        let c = claim("Bound");
        assert_eq!(
            database_of(&c),
            Some(ObjectRef::new("ledger").within("tenant-zz"))
        );
        let mut pool = c.clone();
        pool.labels_mut()
            .insert(COMPONENT.to_owned(), names::POOL_COMPONENT.to_owned());
        assert_eq!(database_of(&pool), None);
        let mut other = c;
        other.metadata.name = Some("scratch-ledger-postgres-0".into());
        assert_eq!(database_of(&other), None);
    }

    #[test]
    fn a_claim_wakes_the_controller_when_it_is_bound_or_deleted_not_otherwise() {
        let pending = claim("Pending");
        let bound = claim("Bound");
        assert_ne!(
            fingerprint(&Cached::new(pending)),
            fingerprint(&Cached::new(bound.clone()))
        );
        let mut annotated = bound.clone();
        annotated
            .annotations_mut()
            .insert("pv.kubernetes.io/bind-completed".into(), "yes".into());
        assert_eq!(
            fingerprint(&Cached::new(bound.clone())),
            fingerprint(&Cached::new(annotated.clone()))
        );
        let mut deleting = bound.clone();
        deleting.metadata.deletion_timestamp = Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
            k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
        ));
        assert_ne!(
            fingerprint(&Cached::new(bound)),
            fingerprint(&Cached::new(deleting))
        );
    }

    #[test]
    fn a_kept_volume_is_read_once_per_process() {
        let c = claim("Bound");
        let bound = to_retain(DeletionPolicy::Retain, &c).unwrap();
        let retained = Retained::default();
        assert!(!retained.knows(&bound));
        retained.remember(&bound);
        assert!(retained.knows(&bound));
        let rebound = Bound {
            volume: "pv-other",
            ..bound
        };
        assert!(!retained.knows(&rebound), "another volume is read again");
    }
}
