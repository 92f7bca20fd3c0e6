//! One error type for reconciles, with a bounded category used as metric label and Event reason.

use std::time::Duration;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The API server refused or failed a request.
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    /// The spec cannot be acted on; waiting for the user to change it.
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    /// An object berth would create exists and belongs to someone else; berth leaves it alone.
    #[error("{0}")]
    Conflict(String),
    #[error("serialising {0}")]
    Serialization(#[from] serde_json::Error),
}

impl Error {
    /// Bounded label for metrics and the reason of Warning events.
    #[must_use]
    pub fn category(&self) -> &'static str {
        match self {
            Self::Kube(kube::Error::Api(s)) if s.code == 409 => "ApiConflict",
            Self::Kube(kube::Error::Api(s)) if s.code == 403 => "Forbidden",
            Self::Kube(kube::Error::Api(s)) if s.code == 422 => "Rejected",
            Self::Kube(_) => "ApiError",
            Self::InvalidSpec(_) => "InvalidSpec",
            Self::Conflict(_) => "NameConflict",
            Self::Serialization(_) => "Serialization",
        }
    }

    /// Permanent errors wait for a change of the object (the watch wakes the controller), retried rarely.
    #[must_use]
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::InvalidSpec(_) | Self::Conflict(_))
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

/// Exponential back-off: 1 s, 2 s, 4 s, … capped at 5 minutes; permanent errors retry every 5 minutes.
#[must_use]
pub fn backoff(error: &Error, failures: u32) -> Duration {
    const CAP: Duration = Duration::from_secs(300);
    if error.is_permanent() {
        return CAP;
    }
    Duration::from_secs(1u64 << failures.min(9)).min(CAP)
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
    fn permanent_errors_wait_for_a_change() {
        let e = Error::InvalidSpec("bad".into());
        assert!(e.is_permanent());
        assert_eq!(backoff(&e, 0), Duration::from_secs(300));
        assert_eq!(e.category(), "InvalidSpec");
    }
}
