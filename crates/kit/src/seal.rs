//! A mark only this berth installation can make: an HMAC-SHA256, under a key kept in a Secret of the
//! operator's own namespace, of the identity of an object berth creates. Labels and an ownerReference
//! say whose an object claims to be, and anyone who may create it can write them; the seal says berth
//! made it. The Scheduler counts as runs (holding workers, queueing, history) only the Jobs it sealed, so
//! a Job made to look like a run cannot block, or be pruned as, a tenant's workflows.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use ring::hmac;

/// The annotation that carries the seal.
pub const ANNOTATION: &str = "berth.dev/seal";

#[derive(Clone)]
pub struct Seal {
    key: hmac::Key,
    /// When the key was made. An object without a seal made before then is from a berth that did not seal
    /// yet, and is taken as berth's, so an upgrade neither forgets nor repeats a run.
    since: Time,
}

impl std::fmt::Debug for Seal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Seal")
            .field("since", &self.since)
            .finish_non_exhaustive()
    }
}

/// Name of the Secret, in the operator's namespace, that holds the key under [`KEY`].
pub const SECRET: &str = "berth-seal";
pub const KEY: &str = "key";

impl Seal {
    /// 32 random bytes for a new key.
    ///
    /// # Errors
    /// When the operating system gives no randomness.
    pub fn fresh_key() -> Result<[u8; 32], ring::error::Unspecified> {
        let mut key = [0u8; 32];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut key)?;
        Ok(key)
    }

    #[must_use]
    pub fn new(key: &[u8], since: Time) -> Self {
        Self {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            since,
        }
    }

    /// Seals `meta` as berth's, bound to its namespace and name and to `owner` (the uid of its
    /// controller), so a seal copied onto another object, or kept across a parent's recreation, is void.
    pub fn apply(&self, meta: &mut ObjectMeta, owner: &str) {
        let tag = hex(hmac::sign(&self.key, &message(meta, owner)).as_ref());
        meta.annotations
            .get_or_insert_with(Default::default)
            .insert(ANNOTATION.to_owned(), tag);
    }

    /// Whether berth made `meta` for `owner`: its seal verifies, or it has none and predates sealing.
    #[must_use]
    pub fn made(&self, meta: &ObjectMeta, owner: &str) -> bool {
        match meta.annotations.as_ref().and_then(|a| a.get(ANNOTATION)) {
            Some(tag) => {
                unhex(tag).is_some_and(|t| hmac::verify(&self.key, &message(meta, owner), &t).is_ok())
            }
            None => meta
                .creation_timestamp
                .as_ref()
                .is_some_and(|created| created.0 < self.since.0),
        }
    }
}

fn message(meta: &ObjectMeta, owner: &str) -> Vec<u8> {
    let part = |p: &Option<String>| p.clone().unwrap_or_default();
    format!("{}/{}/{owner}", part(&meta.namespace), part(&meta.name)).into_bytes()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(s: &str) -> Time {
        Time(s.parse().unwrap())
    }

    fn job(name: &str, created: &str) -> ObjectMeta {
        ObjectMeta {
            namespace: Some("t1".to_owned()),
            name: Some(name.to_owned()),
            creation_timestamp: Some(time(created)),
            ..ObjectMeta::default()
        }
    }

    #[test]
    fn only_what_berth_sealed_for_this_owner_and_name_is_berths() {
        let seal = Seal::new(b"0123456789abcdef0123456789abcdef", time("2026-11-30T00:00:00Z"));
        let mut ours = job("nightly-abcde-1", "2026-11-30T12:00:00Z");
        seal.apply(&mut ours, "uid-1");
        assert!(seal.made(&ours, "uid-1"));
        assert!(!seal.made(&ours, "uid-2"), "another owner");
        let mut copied = job("nightly-abcde-2", "2026-11-30T12:00:00Z");
        copied.annotations.clone_from(&ours.annotations);
        assert!(!seal.made(&copied, "uid-1"), "a seal copied onto another name");
        let other_key = Seal::new(b"another key, another installation", time("2026-11-30T00:00:00Z"));
        assert!(!other_key.made(&ours, "uid-1"));
        let mut garbled = ours.clone();
        garbled
            .annotations
            .as_mut()
            .unwrap()
            .insert(ANNOTATION.to_owned(), "zz".to_owned());
        assert!(!seal.made(&garbled, "uid-1"));
    }

    #[test]
    fn an_unsealed_object_counts_only_when_it_predates_sealing() {
        let seal = Seal::new(b"k", time("2026-11-30T00:00:00Z"));
        assert!(
            seal.made(&job("old", "2026-11-29T23:59:59Z"), "uid-1"),
            "made by a berth that did not seal"
        );
        assert!(!seal.made(&job("forged", "2026-11-30T00:00:01Z"), "uid-1"));
        let mut undated = job("x", "2026-11-29T00:00:00Z");
        undated.creation_timestamp = None;
        assert!(!seal.made(&undated, "uid-1"));
    }

    #[test]
    fn the_key_never_shows_in_debug_output() {
        let seal = Seal::new(b"secret-key-bytes", time("2026-11-30T00:00:00Z"));
        assert!(!format!("{seal:?}").contains("secret"));
    }
}
