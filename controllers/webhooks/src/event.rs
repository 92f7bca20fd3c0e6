//! What berth tells a tenant about: a closed list of event types, and the CloudEvents 1.0 body that
//! carries one.
//!
//! The list is closed (an enum, not strings) so that a tenant's subscription can be validated against
//! it and a new kind of event is a deliberate change here. An event's id is derived from the fact it
//! reports, not drawn at random: a controller that restarts and reports the same fact again produces
//! the same id, which is what receivers deduplicate on.

use ring::digest;
use serde_json::{Value, json};

/// Prefix of every CloudEvents `type` berth sends.
pub const TYPE_PREFIX: &str = "dev.berth.";
/// Prefix of every event id, so an id is recognisable in a receiver's logs.
pub const ID_PREFIX: &str = "evt_";
/// How many hex characters of the digest an id keeps: 128 bits, ample against collisions.
const ID_HEX_LEN: usize = 32;

/// Every kind of event berth sends; the API defines the list, so subscriptions are checked against it.
pub use berth_api::WebhookEvent as EventType;

/// One fact, ready to be sent to every endpoint subscribed to its type.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Same fact, same id: see [`Event::id_for`]. Also the `webhook-id` header.
    pub id: String,
    pub kind: EventType,
    /// The tenant the event belongs to, as a path (`/customers/acme`).
    pub source: String,
    /// The object within the tenant it is about (`jobs/nightly-123`).
    pub subject: String,
    /// When the fact happened (not when it is sent), in unix seconds.
    pub time: i64,
    pub data: Value,
}

impl Event {
    /// The id of the event of type `kind` about the object with UID `source_uid`, told apart from
    /// other events of that type about it by `discriminator` (a run's name, a condition's transition
    /// time). The fields are joined by NUL, which none of them can contain, so that no two different
    /// field lists hash the same text.
    #[must_use]
    pub fn id_for(kind: EventType, source_uid: &str, discriminator: &str) -> String {
        let text = [kind.as_str(), source_uid, discriminator].join("\0");
        let digest = digest::digest(&digest::SHA256, text.as_bytes());
        let hex: String = digest.as_ref().iter().map(|b| format!("{b:02x}")).collect();
        format!("{ID_PREFIX}{}", &hex[..ID_HEX_LEN])
    }

    /// The body of the request: a CloudEvents 1.0 event in structured JSON mode.
    #[must_use]
    pub fn cloudevent_json(&self) -> Vec<u8> {
        json!({
            "specversion": "1.0",
            "id": self.id,
            "source": self.source,
            "type": format!("{TYPE_PREFIX}{}", self.kind.as_str()),
            "subject": self.subject,
            "time": rfc3339(self.time),
            "datacontenttype": "application/json",
            "data": self.data,
        })
        .to_string()
        .into_bytes()
    }
}

/// Unix seconds as an RFC 3339 UTC timestamp, computed here rather than with a date library because
/// the proleptic Gregorian calendar in UTC is all it takes. Days since the epoch become a civil date by
/// counting in 400-year eras that start on 1 March, so the leap day falls at the end of a year.
#[must_use]
pub fn rfc3339(unix: i64) -> String {
    let days = unix.div_euclid(86_400);
    let secs = unix.rem_euclid(86_400);
    let (hour, minute, second) = (secs / 3600, secs % 3600 / 60, secs % 60);

    let z = days + 719_468; // days from 0000-03-01 to 1970-01-01
    let era = z.div_euclid(146_097);
    let day_of_era = z.rem_euclid(146_097);
    let year_of_era = (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153; // 0 = March
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);

    format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}Z")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Event {
        Event {
            id: Event::id_for(EventType::WorkflowRunFailed, "uid-of-tern", "nightly-123"),
            kind: EventType::WorkflowRunFailed,
            source: "/customers/tern".into(),
            subject: "jobs/nightly-123".into(),
            time: 1_700_000_000,
            data: json!({"exitCode": 3, "reason": "BackoffLimitExceeded"}),
        }
    }

    #[test]
    fn type_names_round_trip_and_are_exact() {
        for t in EventType::ALL {
            assert_eq!(t.as_str().parse::<EventType>().unwrap(), t);
            assert_eq!(t.to_string(), t.as_str());
        }
        let err = "databaseready".parse::<EventType>().unwrap_err();
        assert!(
            err.contains("\"databaseready\"") && err.contains("DatabaseReady"),
            "{err}"
        );
        let names: std::collections::BTreeSet<&str> = EventType::ALL.iter().map(|t| t.as_str()).collect();
        assert_eq!(names.len(), EventType::ALL.len(), "names are distinct");
    }

    #[test]
    fn ids_are_stable_and_depend_on_every_field() {
        let id = Event::id_for(EventType::DatabaseReady, "uid-1", "2024-05-01T10:00:00Z");
        assert_eq!(
            id,
            Event::id_for(EventType::DatabaseReady, "uid-1", "2024-05-01T10:00:00Z")
        );
        assert!(id.starts_with(ID_PREFIX), "{id}");
        let hex = &id[ID_PREFIX.len()..];
        assert_eq!(hex.len(), 32);
        assert!(
            hex.chars()
                .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()),
            "{id}"
        );
        let others = [
            Event::id_for(EventType::DatabaseNotReady, "uid-1", "2024-05-01T10:00:00Z"),
            Event::id_for(EventType::DatabaseReady, "uid-2", "2024-05-01T10:00:00Z"),
            Event::id_for(EventType::DatabaseReady, "uid-1", "2024-05-01T10:00:01Z"),
        ];
        assert!(others.iter().all(|o| *o != id), "{others:?}");
        // The separator keeps field boundaries: moving a character across one changes the id.
        assert_ne!(
            Event::id_for(EventType::DatabaseReady, "ab", "c"),
            Event::id_for(EventType::DatabaseReady, "a", "bc")
        );
    }

    #[test]
    fn ids_are_the_sha256_of_the_joined_fields() {
        // Computed independently: `printf 'CustomerReady\0u\0d' | sha256sum`, first 32 digits.
        assert_eq!(
            Event::id_for(EventType::CustomerReady, "u", "d"),
            "evt_3c63c82782889542c4ba58dc482ff73f"
        );
    }

    #[test]
    fn the_body_is_a_structured_cloudevent() {
        let event = sample();
        let body: Value = serde_json::from_slice(&event.cloudevent_json()).unwrap();
        assert_eq!(
            body,
            json!({
                "specversion": "1.0",
                "id": event.id,
                "source": "/customers/tern",
                "type": "dev.berth.WorkflowRunFailed",
                "subject": "jobs/nightly-123",
                "time": "2023-11-14T22:13:20Z",
                "datacontenttype": "application/json",
                "data": {"exitCode": 3, "reason": "BackoffLimitExceeded"},
            })
        );
    }

    #[test]
    fn timestamps_format_as_rfc3339_utc() {
        let cases = [
            (0, "1970-01-01T00:00:00Z"),
            (86_399, "1970-01-01T23:59:59Z"),
            (-1, "1969-12-31T23:59:59Z"),
            (951_782_400, "2000-02-29T00:00:00Z"),
            (951_868_800, "2000-03-01T00:00:00Z"),
            (1_709_164_800, "2024-02-29T00:00:00Z"),
            (1_700_000_000, "2023-11-14T22:13:20Z"),
            (4_102_444_799, "2099-12-31T23:59:59Z"),
            (253_402_300_799, "9999-12-31T23:59:59Z"),
        ];
        for (unix, want) in cases {
            assert_eq!(rfc3339(unix), want, "{unix}");
        }
    }
}
