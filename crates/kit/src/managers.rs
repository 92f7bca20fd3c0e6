//! One field manager per controller, `berth/<controller>`: server-side apply removes the fields a manager
//! stops sending, so two controllers applying one object under one name would silently drop each other's
//! fields.
//!
//! Versions before this applied everything as `berth`. Left alone, that entry would keep owning every
//! field it ever applied, so a field the new manager no longer sends would never be removed. So the first
//! time a controller applies an object (or its status) that still has such an entry, it inherits it: the
//! legacy entry's fields join its own and the legacy entry goes ([`inherited`]); the caller then applies
//! once more, which removes what it no longer sends. This costs nothing where there is nothing to inherit
//! (the apply's answer says so) and reads nothing extra.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};

/// The manager every version before per-controller managers applied under.
pub const LEGACY: &str = "berth";

/// The field manager of `controller`.
#[must_use]
pub fn of(controller: &str) -> String {
    format!("{LEGACY}/{controller}")
}

/// `entries` after `heir` inherits the legacy apply entry of `subresource` (`None`: the object itself),
/// or `None` when there is no such entry.
#[must_use]
pub fn inherited(
    entries: &[ManagedFieldsEntry],
    heir: &str,
    subresource: Option<&str>,
) -> Option<Vec<ManagedFieldsEntry>> {
    let of_subresource = |e: &ManagedFieldsEntry| {
        e.operation.as_deref() == Some("Apply")
            && e.subresource.as_deref().filter(|s| !s.is_empty()) == subresource
    };
    let legacy = entries
        .iter()
        .find(|e| of_subresource(e) && e.manager.as_deref() == Some(LEGACY))?;
    let mut out: Vec<ManagedFieldsEntry> = entries
        .iter()
        .filter(|e| !(of_subresource(e) && e.manager.as_deref() == Some(LEGACY)))
        .cloned()
        .collect();
    match out
        .iter_mut()
        .find(|e| of_subresource(e) && e.manager.as_deref() == Some(heir))
    {
        Some(own) => {
            let mut fields = own.fields_v1.take().map_or(serde_json::Value::Null, |f| f.0);
            if let Some(theirs) = &legacy.fields_v1 {
                union(&mut fields, &theirs.0);
            }
            own.fields_v1 = Some(FieldsV1(fields));
        }
        None => out.push(ManagedFieldsEntry {
            manager: Some(heir.to_owned()),
            ..legacy.clone()
        }),
    }
    Some(out)
}

/// Adds the field set `more` to `into` (both in the API server's `FieldsV1` form: nested objects).
fn union(into: &mut serde_json::Value, more: &serde_json::Value) {
    match (into, more) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                union(a.entry(k.clone()).or_insert(serde_json::Value::Null), v);
            }
        }
        (slot @ serde_json::Value::Null, v) => *slot = v.clone(),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn entry(manager: &str, subresource: Option<&str>, fields: serde_json::Value) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.to_owned()),
            operation: Some("Apply".to_owned()),
            subresource: subresource.map(str::to_owned),
            api_version: Some("v1".to_owned()),
            fields_v1: Some(FieldsV1(fields)),
            ..ManagedFieldsEntry::default()
        }
    }

    fn labels(names: &[&str]) -> serde_json::Value {
        let set: serde_json::Map<String, serde_json::Value> =
            names.iter().map(|n| (format!("f:{n}"), json!({}))).collect();
        json!({"f:metadata": {"f:labels": set}})
    }

    #[test]
    fn the_heir_takes_the_legacy_fields_and_the_legacy_entry_goes() {
        let entries = [
            entry("kubectl", None, labels(&["team"])),
            entry(LEGACY, None, labels(&["a", "retired"])),
            entry("berth/customer", None, labels(&["a", "b"])),
        ];
        let out = inherited(&entries, "berth/customer", None).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0], entries[0], "others' entries stay as they are");
        assert_eq!(
            out[1].fields_v1.as_ref().unwrap().0,
            labels(&["a", "b", "retired"])
        );
    }

    #[test]
    fn without_an_own_entry_the_legacy_one_is_renamed() {
        let entries = [entry(LEGACY, Some("status"), json!({"f:status": {}}))];
        let out = inherited(&entries, "berth/database", Some("status")).unwrap();
        assert_eq!(out[0].manager.as_deref(), Some("berth/database"));
        assert_eq!(out[0].subresource.as_deref(), Some("status"));
    }

    #[test]
    fn only_the_subresource_applied_is_inherited() {
        let entries = [
            entry(LEGACY, Some("status"), json!({"f:status": {}})),
            entry("berth/customer", None, labels(&["a"])),
        ];
        assert_eq!(inherited(&entries, "berth/customer", None), None);
        assert_eq!(inherited(&entries[1..], "berth/customer", None), None);
    }
}
