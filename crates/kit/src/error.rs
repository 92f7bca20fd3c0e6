//! One error type for reconciles, with a bounded category used as metric label and Event reason.

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The categories a person has to act on (see [`Error::needs_attention`]). The chart's alert rules split
/// `berth_reconcile_errors_total` by this list; a test holds them to it.
pub const NEEDS_ATTENTION: [&str; 6] = [
    "InvalidSpec",
    "NameConflict",
    "Internal",
    "Forbidden",
    "QuotaExceeded",
    "Rejected",
];

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request; [`Error::category`] says which way.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The spec cannot be acted on; waiting for the user to change it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// An object berth would create exists and belongs to someone else; berth leaves it alone.
    #[error("{0}")]
    Conflict(String),
    /// berth itself failed where neither the API server nor the user is to blame (a bug, or the operating
    /// system refusing randomness).
    #[error("internal error: {0}")]
    Internal(String),
    /// Something berth needs is not there right now (its watches are restarting, say); soon retried.
    #[error("unavailable: {0}")]
    Unavailable(String),
}

impl From<serde_json::Error> for Error {
    fn from(e: serde_json::Error) -> Self {
        Self::Internal(format!("serialising: {e}"))
    }
}

impl Error {
    /// Bounded label for metrics, the reason of Warning events and of a `Ready=False` condition.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(s)) => match s.code {
                403 if s.message.contains("exceeded quota") => "QuotaExceeded",
                403 => "Forbidden",
                400 | 422 => "Rejected",
                404 => "NotFound",
                409 => "ApiConflict",
                _ => "Unavailable",
            },
            Self::Kube(_) | Self::Unavailable(_) => "Unavailable",
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::Conflict(_) => "NameConflict",
            Self::Internal(_) => "Internal",
        }
    }

    /// Permanent errors wait for a change of the object (the watch wakes the controller), retried rarely.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::InvalidSpec(_) | Self::Conflict(_))
    }

    /// Errors a person has to act on (the spec, the cluster's admission rules, RBAC, quota, a bug): they
    /// belong in the object's status, not only in berth's log. The rest passes with a retry.
    #[must_use]
    pub fn needs_attention(&self) -> bool {
        NEEDS_ATTENTION.contains(&self.category())
    }
}

/// True for a 404 from the API server.
#[must_use]
pub fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

/// True for a 409 AlreadyExists / Conflict from the API server.
#[must_use]
pub fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

/// Exponential back-off, capped at 5 minutes: from 1 s for what passes by itself (the API server busy or
/// restarting, a conflicting write); from 10 s for what waits on a person (a refusal by RBAC, quota or
/// admission, a bug), who takes longer than a second and should not find berth hammering the API server;
/// permanent errors, which wait for the object to change, retry every 5 minutes.
#[must_use]
pub fn backoff(error: &Error, failures: u32) -> Duration {
    const CAP: Duration = Duration::from_secs(300);
    if error.is_permanent() {
        return CAP;
    }
    let first = if error.needs_attention() { 10 } else { 1 };
    Duration::from_secs(first << failures.min(9)).min(CAP)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transient_backoff_doubles_up_to_a_cap() {
        let e = Error::Kube(kube::Error::LinesCodecMaxLineLengthExceeded);
        let waits: Vec<u64> = (0..12).map(|n| backoff(&e, n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 64, 128, 256, 300, 300, 300]);
    }

    #[test]
    fn refusals_back_off_from_ten_seconds() {
        let e = api(403, "cannot patch");
        let waits: Vec<u64> = (0..7).map(|n| backoff(&e, n).as_secs()).collect();
        assert_eq!(waits, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn permanent_errors_wait_for_a_change() {
        let e = Error::InvalidSpec("bad".into());
        assert!(e.is_permanent());
        assert_eq!(backoff(&e, 0), Duration::from_secs(300));
        assert_eq!(e.category(), "InvalidSpec");
        assert!(e.needs_attention());
    }

    fn api(code: u16, message: &str) -> Error {
        let status = kube::core::Status::failure(message, "").with_code(code);
        Error::Kube(kube::Error::Api(Box::new(status)))
    }

    #[test]
    fn api_errors_say_who_must_act() {
        let quota = api(
            403,
            "namespaces \"t\" is forbidden: exceeded quota: q, requested: pods=1",
        );
        let cases = [
            (quota, "QuotaExceeded", true),
            (api(403, "cannot patch"), "Forbidden", true),
            (api(422, "denied by policy"), "Rejected", true),
            (api(409, "the object has been modified"), "ApiConflict", false),
            (api(503, "etcd leader changed"), "Unavailable", false),
            (api(429, "too many requests"), "Unavailable", false),
            (Error::Internal("no randomness".into()), "Internal", true),
            (
                Error::Unavailable("watches restarting".into()),
                "Unavailable",
                false,
            ),
        ];
        for (e, category, attention) in cases {
            assert_eq!((e.category(), e.needs_attention()), (category, attention), "{e}");
            assert!(!e.is_permanent(), "{e}");
        }
    }
}
