//! Signatures in the Standard Webhooks format (<https://www.standardwebhooks.com>).
//!
//! berth signs the way the spec's reference libraries verify, so a receiver needs no berth-specific
//! code: `webhook-signature: v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`, keyed with the
//! endpoint's secret, which travels as `whsec_<base64>`. The id and timestamp are inside the signed
//! text so that a captured request cannot be replayed under another id or at another time.

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use ring::hmac;

/// What marks a secret as a Standard Webhooks key.
pub const KEY_PREFIX: &str = "whsec_";
/// What berth generates: 256 bits, the HMAC's own output size.
pub const KEY_LEN: usize = 32;
/// The spec's bounds on a key's length. Shorter keys are guessable; longer ones buy nothing with
/// SHA-256 and usually mean a wrong value was pasted.
pub const MIN_KEY_LEN: usize = 24;
pub const MAX_KEY_LEN: usize = 64;
/// The signature scheme berth writes and the only one it accepts.
const VERSION: &str = "v1";

/// An endpoint's secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Key(Vec<u8>);

/// Key bytes never reach logs: only the length shows.
impl fmt::Debug for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Key({} bytes)", self.0.len())
    }
}

/// The `whsec_` form, which is what is stored in a Secret and shown to the tenant once. Being the
/// secret itself, it is for storage only, never for a log line (use `{:?}` there).
impl fmt::Display for Key {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{KEY_PREFIX}{}", STANDARD.encode(&self.0))
    }
}

impl Key {
    /// A new key of [`KEY_LEN`] bytes from the operating system's CSPRNG.
    ///
    /// # Errors
    /// When the operating system's random generator cannot be read.
    pub fn generate() -> Result<Self, getrandom::Error> {
        let mut bytes = vec![0u8; KEY_LEN];
        getrandom::fill(&mut bytes)?;
        Ok(Self(bytes))
    }

    /// Reads a key from its `whsec_<base64>` form. The prefix may be missing, as the reference
    /// libraries also accept: tenants paste secrets made by other senders, with or without it.
    ///
    /// # Errors
    /// When the text is not base64 or the key is not [`MIN_KEY_LEN`]..=[`MAX_KEY_LEN`] bytes long. The
    /// message never contains the text itself.
    pub fn parse(text: &str) -> Result<Self, String> {
        let encoded = text.trim().strip_prefix(KEY_PREFIX).unwrap_or(text.trim());
        let bytes = STANDARD
            .decode(encoded)
            .map_err(|e| format!("webhook secret is not whsec_ followed by base64: {e}"))?;
        if !(MIN_KEY_LEN..=MAX_KEY_LEN).contains(&bytes.len()) {
            return Err(format!(
                "webhook secret decodes to {} bytes; it must be {MIN_KEY_LEN} to {MAX_KEY_LEN}",
                bytes.len()
            ));
        }
        Ok(Self(bytes))
    }

    fn hmac(&self) -> hmac::Key {
        hmac::Key::new(hmac::HMAC_SHA256, &self.0)
    }
}

impl FromStr for Key {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The text that is signed. The body goes in as bytes: a receiver verifies the body it received, so
/// berth must never re-serialise between signing and sending.
fn signed_content(id: &str, timestamp: i64, body: &[u8]) -> Vec<u8> {
    let mut content = format!("{id}.{timestamp}.").into_bytes();
    content.extend_from_slice(body);
    content
}

/// The `webhook-signature` header value for one message.
#[must_use]
pub fn sign(key: &Key, id: &str, timestamp: i64, body: &[u8]) -> String {
    let tag = hmac::sign(&key.hmac(), &signed_content(id, timestamp, body));
    format!("{VERSION},{}", STANDARD.encode(tag.as_ref()))
}

/// True when any signature in `header` (space-separated, as the spec allows while a key is being
/// rotated) is a valid `v1` signature of this message under `key`.
///
/// The comparison is ring's constant-time one, so the time taken says nothing about how much of a
/// forged signature was right. Signatures of other schemes, and ones that are not base64, are skipped
/// rather than fatal: a newer sender may add schemes next to `v1`. The timestamp's freshness is the
/// caller's to judge.
#[must_use]
pub fn verify(key: &Key, id: &str, timestamp: i64, body: &[u8], header: &str) -> bool {
    let content = signed_content(id, timestamp, body);
    let hmac_key = key.hmac();
    header
        .split(' ')
        .filter_map(|sig| sig.split_once(','))
        .filter(|(version, _)| *version == VERSION)
        .filter_map(|(_, encoded)| STANDARD.decode(encoded).ok())
        .any(|tag| hmac::verify(&hmac_key, &content, &tag).is_ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector published with the Standard Webhooks reference libraries: matching it is what
    /// says a receiver's library will accept berth's signatures.
    const VECTOR_KEY: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const VECTOR_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const VECTOR_TIMESTAMP: i64 = 1_614_265_330;
    const VECTOR_BODY: &[u8] = br#"{"test": 2432232314}"#;
    const VECTOR_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    #[test]
    fn signs_the_published_test_vector() {
        let key = Key::parse(VECTOR_KEY).unwrap();
        assert_eq!(
            sign(&key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY),
            VECTOR_SIGNATURE
        );
        assert!(verify(
            &key,
            VECTOR_ID,
            VECTOR_TIMESTAMP,
            VECTOR_BODY,
            VECTOR_SIGNATURE
        ));
    }

    #[test]
    fn a_signature_verifies_and_any_change_breaks_it() {
        let key = Key::generate().unwrap();
        let other = Key::generate().unwrap();
        let header = sign(&key, "evt_a", 1_700_000_000, b"{\"n\":1}");
        assert!(verify(&key, "evt_a", 1_700_000_000, b"{\"n\":1}", &header));
        assert!(
            !verify(&key, "evt_a", 1_700_000_000, b"{\"n\":2}", &header),
            "body"
        );
        assert!(!verify(&key, "evt_b", 1_700_000_000, b"{\"n\":1}", &header), "id");
        assert!(
            !verify(&key, "evt_a", 1_700_000_001, b"{\"n\":1}", &header),
            "timestamp"
        );
        assert!(
            !verify(&other, "evt_a", 1_700_000_000, b"{\"n\":1}", &header),
            "key"
        );
    }

    #[test]
    fn any_one_of_several_signatures_is_enough() {
        let key = Key::parse(VECTOR_KEY).unwrap();
        let header = format!("v1,bm90IGl0 v2,whatever v1,not-base64! {VECTOR_SIGNATURE}");
        assert!(verify(&key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, &header));
        let without = "v1,bm90IGl0 v1a,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";
        assert!(
            !verify(&key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, without),
            "only v1 counts"
        );
        assert!(!verify(&key, VECTOR_ID, VECTOR_TIMESTAMP, VECTOR_BODY, ""));
    }

    #[test]
    fn keys_round_trip_through_their_text_form() {
        let key = Key::generate().unwrap();
        let text = key.to_string();
        assert!(text.starts_with(KEY_PREFIX), "{text}");
        assert_eq!(Key::parse(&text).unwrap(), key);
        assert_eq!(text.parse::<Key>().unwrap(), key);
        assert_eq!(
            Key::parse(&text[KEY_PREFIX.len()..]).unwrap(),
            key,
            "prefix is optional"
        );
        assert_ne!(Key::generate().unwrap(), key);
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let short = format!("{KEY_PREFIX}{}", STANDARD.encode([7u8; 16]));
        let err = Key::parse(&short).unwrap_err();
        assert!(err.contains("16 bytes") && !err.contains(&short), "{err}");
        let err = Key::parse("whsec_not*base64").unwrap_err();
        assert!(err.contains("base64") && !err.contains("not*base64"), "{err}");
    }

    #[test]
    fn debug_hides_the_key() {
        let key = Key::parse(VECTOR_KEY).unwrap();
        let shown = format!("{key:?}");
        assert_eq!(shown, "Key(24 bytes)");
    }
}
