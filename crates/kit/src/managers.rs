//! One field manager per controller, `berth/<controller>`: server-side apply removes the fields a manager
//! stops sending, so two controllers applying one object under one name would silently drop each other's
//! fields.
//!
//! Versions before this applied everything as `berth`. Left alone, that entry keeps owning every field it
//! ever applied, so a field the new manager no longer sends would never be removed. [`hand_over`] renames
//! each such entry to the controller that now applies those fields (the same fields, the same ownership),
//! once, when a controller starts.

use std::fmt::Debug;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::error::Result;

/// The manager every version before per-controller managers applied under.
pub const LEGACY: &str = "berth";

/// The field manager of `controller`.
#[must_use]
pub fn of(controller: &str) -> String {
    format!("{LEGACY}/{controller}")
}

/// `entries` with each legacy apply entry handed to `heir(subresource)`, or `None` when there is none to
/// hand over. Where the heir has applied since, it owns what it sends and the legacy entry is dropped.
#[must_use]
pub fn handed_over(
    entries: &[ManagedFieldsEntry],
    heir: impl Fn(Option<&str>) -> Option<String>,
) -> Option<Vec<ManagedFieldsEntry>> {
    let legacy = |e: &ManagedFieldsEntry| {
        e.manager.as_deref() == Some(LEGACY) && e.operation.as_deref() == Some("Apply")
    };
    let subresource = |e: &ManagedFieldsEntry| e.subresource.clone().filter(|s| !s.is_empty());
    let mut changed = false;
    let mut out = Vec::with_capacity(entries.len());
    for e in entries {
        let Some(to) = legacy(e).then(|| heir(subresource(e).as_deref())).flatten() else {
            out.push(e.clone());
            continue;
        };
        changed = true;
        let applied_since = entries.iter().any(|o| {
            o.manager.as_deref() == Some(to.as_str())
                && o.operation.as_deref() == Some("Apply")
                && subresource(o) == subresource(e)
        });
        if !applied_since {
            out.push(ManagedFieldsEntry {
                manager: Some(to),
                ..e.clone()
            });
        }
    }
    changed.then_some(out)
}

/// Hands the legacy entries of every `K` matching `selector` to `heir` (see [`handed_over`]). The patch
/// carries the resourceVersion it was computed from, so an object changed meanwhile is left for the next
/// start rather than overwritten. Never fails a controller's start: what could not be handed over is
/// logged and left for the next.
pub async fn hand_over<K>(api: &Api<K>, selector: &str, heir: impl Fn(Option<&str>) -> Option<String>)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    match handed_over_all(api, selector, heir).await {
        Ok(0) => {}
        Ok(n) => tracing::info!(kind = %K::kind(&()), objects = n, "field manager handed over"),
        Err(e) => tracing::warn!(kind = %K::kind(&()), error = %e, "field managers not handed over"),
    }
}

async fn handed_over_all<K>(
    api: &Api<K>,
    selector: &str,
    heir: impl Fn(Option<&str>) -> Option<String>,
) -> Result<usize>
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Debug,
{
    let mut handed = 0;
    let mut params = ListParams::default().labels(selector).limit(500);
    loop {
        let page = api.list_metadata(&params).await?;
        for o in &page.items {
            let Some(entries) = handed_over(o.managed_fields(), &heir) else {
                continue;
            };
            let patch = serde_json::json!({
                "metadata": {"managedFields": entries, "resourceVersion": o.resource_version()}
            });
            match api
                .patch(&o.name_any(), &PatchParams::default(), &Patch::Merge(&patch))
                .await
            {
                Ok(_) => handed += 1,
                Err(e) => tracing::warn!(error = %e, name = %o.name_any(), "field manager not handed over"),
            }
        }
        match page.metadata.continue_.filter(|c| !c.is_empty()) {
            Some(next) => params = params.continue_token(&next),
            None => return Ok(handed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(manager: &str, operation: &str, subresource: Option<&str>) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some(operation.to_owned()),
            subresource: subresource.map(str::to_owned),
            api_version: Some("v1".to_owned()),
            ..ManagedFieldsEntry::default()
        }
    }

    fn managers(entries: &[ManagedFieldsEntry]) -> Vec<(&str, Option<&str>)> {
        entries
            .iter()
            .map(|e| (e.manager.as_deref().unwrap(), e.subresource.as_deref()))
            .collect()
    }

    /// The Database's spec is the Customer controller's, its status the Database controller's.
    fn heir(subresource: Option<&str>) -> Option<String> {
        Some(of(if subresource == Some("status") {
            "database"
        } else {
            "customer"
        }))
    }

    #[test]
    fn legacy_apply_entries_are_renamed_per_subresource() {
        let entries = [
            entry("kubectl", "Update", None),
            entry(LEGACY, "Apply", None),
            entry(LEGACY, "Apply", Some("status")),
        ];
        let out = handed_over(&entries, heir).unwrap();
        assert_eq!(
            managers(&out),
            [
                ("kubectl", None),
                ("berth/customer", None),
                ("berth/database", Some("status"))
            ]
        );
    }

    #[test]
    fn nothing_to_do_without_a_legacy_apply() {
        let entries = [
            entry("berth/customer", "Apply", None),
            entry(LEGACY, "Update", None),
        ];
        assert_eq!(handed_over(&entries, heir), None);
        assert_eq!(handed_over(&entries[..0], heir), None);
    }

    #[test]
    fn an_heir_that_applied_since_keeps_its_own_entry() {
        let entries = [
            entry(LEGACY, "Apply", None),
            entry("berth/customer", "Apply", None),
        ];
        let out = handed_over(&entries, heir).unwrap();
        assert_eq!(managers(&out), [("berth/customer", None)]);
    }

    #[test]
    fn an_entry_without_an_heir_stays() {
        let entries = [entry(LEGACY, "Apply", None)];
        assert_eq!(handed_over(&entries, |_| None), None);
    }
}
