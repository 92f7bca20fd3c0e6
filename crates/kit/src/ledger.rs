//! What one reconcile did to a parent's children: which it put back after someone else changed or deleted
//! them (for one event each), and a record of what berth applied, kept in the parent's status.
//!
//! The record is why a restart is cheap. A process remembers what it applied to each child (see
//! [`Context::ensure`]), but a new process remembers nothing and would apply every child once: ~17 requests
//! per tenant, all of them no-ops. The parent's status already gets written whenever its children change, so
//! it carries, per child, a digest of what berth wanted and what the API server answered. A restarted
//! process that computes the same digest from its cache knows the child is as berth left it, and skips the
//! apply; the digests change only when berth applies something, so they add no writes of their own.

use std::collections::{BTreeSet, HashSet};
use std::fmt::Debug;
use std::sync::{Arc, Mutex};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::api::Api;
use kube::runtime::events::EventType;
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::context::{Applied, Context, Outcome};
use crate::error::Result;
use crate::slim::{Cached, Slim};

/// One reconcile's dealings with a parent's children. Shared, not borrowed mutably, so that children
/// that do not depend on each other are ensured at once (a reconcile's requests are its latency).
#[derive(Debug, Default)]
pub struct Ledger {
    /// The entries the parent's status holds from the last reconcile that wrote it.
    recorded: HashSet<String>,
    /// The entries of this reconcile.
    entries: Mutex<BTreeSet<String>>,
    repairs: Mutex<Vec<(ObjectReference, &'static str)>>,
}

impl Ledger {
    /// `recorded`: the parent's status field written from [`Ledger::record`] (`None`: never written).
    #[must_use]
    pub fn new(recorded: Option<&str>) -> Self {
        Self {
            recorded: recorded
                .unwrap_or_default()
                .split_whitespace()
                .map(str::to_owned)
                .collect(),
            ..Self::default()
        }
    }

    /// [`Context::ensure`], trusting the recorded entries where this process has no memory of the child.
    ///
    /// # Errors
    /// As [`Context::ensure`].
    pub async fn ensure<K>(
        &self,
        kit: &Context,
        api: &Api<K>,
        obj: &K,
        cached: Option<Arc<Cached<K>>>,
    ) -> Result<K>
    where
        K: Resource<DynamicType = ()> + Serialize + DeserializeOwned + Clone + Debug + Slim,
    {
        if let Some(c) = &cached {
            kit.recall(obj, c, &self.recorded);
        }
        let applied = kit.ensure(api, obj, cached).await?;
        Ok(self.keep(kit, obj, applied))
    }

    /// Records what [`Context::ensure`] did to `desired`, where the reconcile had to call it itself.
    pub fn keep<K>(&self, kit: &Context, desired: &K, applied: Applied<K>) -> K
    where
        K: Resource<DynamicType = ()>,
    {
        if let (Some(entry), Ok(mut entries)) = (kit.entry(desired), self.entries.lock()) {
            entries.insert(entry);
        }
        self.note(applied)
    }

    /// Notes what happened to one child; returns the child.
    pub fn note<K: Resource<DynamicType = ()>>(&self, applied: Applied<K>) -> K {
        let how = match applied.outcome {
            Outcome::Repaired => "changed",
            Outcome::Recreated => "deleted",
            Outcome::Unchanged | Outcome::Created | Outcome::Updated => return applied.object,
        };
        if let Ok(mut repairs) = self.repairs.lock() {
            repairs.push((applied.object.object_ref(&()), how));
        }
        applied.object
    }

    /// One `DriftRepaired` event on `parent` per child put back, naming the child as the related object:
    /// events are aggregated by reason and related object, so a repair of another child is news of its own.
    pub async fn tell(&self, kit: &Context, parent: &ObjectReference) {
        let repairs = self
            .repairs
            .lock()
            .map(|mut r| std::mem::take(&mut *r))
            .unwrap_or_default();
        for (child, how) in repairs {
            let kind = child.kind.clone().unwrap_or_default();
            let name = child.name.clone().unwrap_or_default();
            let note = format!("put back {kind}/{name}, which was {how} by hand");
            tracing::info!(%note, "repaired drift");
            kit.publish(parent, Some(child), EventType::Normal, "DriftRepaired", note)
                .await;
        }
    }

    /// What the parent's status records: this reconcile's entries, sorted, so that the same children give
    /// the same text and the status is not rewritten. `None` when nothing was ensured.
    #[must_use]
    pub fn record(&self) -> Option<String> {
        let entries = self.entries.lock().ok()?;
        (!entries.is_empty()).then(|| entries.iter().cloned().collect::<Vec<_>>().join(" "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_record_reads_back_as_the_entries_it_holds() {
        let ledger = Ledger::new(None);
        assert_eq!(ledger.record(), None, "nothing ensured, nothing to record");
        ledger.entries.lock().unwrap().insert("b".to_owned());
        ledger.entries.lock().unwrap().insert("a".to_owned());
        let record = ledger.record().unwrap();
        assert_eq!(record, "a b", "sorted: the same children give the same status");
        let again = Ledger::new(Some(&record));
        assert_eq!(again.recorded, HashSet::from(["a".to_owned(), "b".to_owned()]));
    }
}
