//! Command line and environment. Every flag has an environment variable so the chart can set it.

use std::net::SocketAddr;
use std::time::Duration;

use berth_telemetry::LogFormat;
use clap::{ArgAction, Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Controller {
    Customer,
    Database,
    Scheduler,
    Webhooks,
}

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "Kubernetes multitenancy operator")]
pub struct Args {
    /// Controllers to run in this process.
    #[arg(
        long,
        env = "BERTH_CONTROLLERS",
        value_delimiter = ',',
        default_value = "customer,database,scheduler,webhooks"
    )]
    pub controllers: Vec<Controller>,

    /// Address of /healthz, /readyz and /metrics.
    #[arg(long, env = "BERTH_HTTP_ADDR", default_value = "0.0.0.0:8080")]
    pub http_addr: SocketAddr,

    /// Reconciles one controller runs at once (never two for the same object).
    #[arg(long, env = "BERTH_CONCURRENCY", default_value_t = 8)]
    pub concurrency: u16,

    /// Milliseconds a controller waits for an object's events to settle before reconciling it: a burst
    /// (a new tenant's children appearing one by one) becomes one reconcile instead of one per event.
    #[arg(long, env = "BERTH_DEBOUNCE_MS", default_value_t = 500)]
    pub debounce_ms: u64,

    /// API requests this process has in flight at most, across all controllers; more wait their turn.
    /// Watches count only while they are being opened.
    #[arg(long, env = "BERTH_API_MAX_IN_FLIGHT", default_value_t = 32)]
    pub api_max_in_flight: usize,

    /// Per-namespace Secret watches (one per tenant with a Database) sharing one HTTP/2 connection at most;
    /// 0 runs them on the controllers' HTTP/1.1 client, a connection each. Keep it below the API server's
    /// `--http2-max-streams-per-connection` (Go's default: 250).
    #[arg(long, env = "BERTH_WATCHES_PER_CONNECTION", default_value_t = 100)]
    pub watches_per_connection: usize,

    /// Take part in leader election; without it this process reconciles unconditionally.
    #[arg(long, env = "BERTH_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader Lease; defaults to the namespace of the kubeconfig context or pod.
    #[arg(long, env = "BERTH_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    #[arg(long, env = "BERTH_LEASE_NAME", default_value = "berth-leader")]
    pub lease_name: String,

    /// Seconds a silent leader keeps the Lease before a standby takes over (see [`Args::lease_timings`]).
    #[arg(long, env = "BERTH_LEASE_SECONDS", default_value_t = 90)]
    pub lease_seconds: u64,

    /// Seconds a leader keeps writing without a successful renewal; default five sixths of the Lease.
    #[arg(long, env = "BERTH_LEASE_RENEW_SECONDS")]
    pub lease_renew_seconds: Option<u64>,

    /// Seconds between renewals (and between a standby's looks); default a eighteenth of the Lease, ≥ 1.
    #[arg(long, env = "BERTH_LEASE_RETRY_SECONDS")]
    pub lease_retry_seconds: Option<u64>,

    /// Identity in the Lease; the pod name in a cluster.
    #[arg(long, env = "POD_NAME")]
    pub identity: Option<String>,

    /// Seconds in-flight reconciles get to finish after SIGTERM; keep it below the pod's grace period.
    #[arg(long, env = "BERTH_SHUTDOWN_SECONDS", default_value_t = 20)]
    pub shutdown_seconds: u64,

    /// `text` for people, `json` for log pipelines.
    #[arg(long, env = "BERTH_LOG_FORMAT", default_value = "text")]
    pub log_format: LogFormat,

    /// PostgreSQL image of Databases that do not name one.
    #[arg(long, env = "BERTH_POSTGRES_IMAGE")]
    pub postgres_image: Option<String>,

    /// pgbouncer image of every pool.
    #[arg(long, env = "BERTH_PGBOUNCER_IMAGE")]
    pub pgbouncer_image: Option<String>,

    /// Directory of PostgreSQL's server binaries (initdb, pg_ctl, postgres, psql, pg_isready) in the
    /// PostgreSQL images; empty: they are on the image's PATH.
    #[arg(long, env = "BERTH_POSTGRES_BIN_DIR")]
    pub postgres_bin_dir: Option<String>,

    /// ClusterRole of what berth does inside a tenant namespace, bound there to berth's own identity by the
    /// Customer controller (the chart's `<release>-tenant`); empty: berth holds those rights cluster-wide
    /// and binds nothing.
    #[arg(long, env = "BERTH_TENANT_ROLE", default_value = "berth-tenant")]
    pub tenant_role: String,

    /// Webhook endpoints may be `http://` URLs (development clusters only: bodies travel in clear).
    #[arg(long, env = "BERTH_WEBHOOKS_ALLOW_HTTP", default_value_t = false, action = ArgAction::Set)]
    pub webhooks_allow_http: bool,

    /// Webhook endpoints may resolve to loopback, private, link-local (cloud metadata) or the cluster's
    /// own addresses; off by default, so a tenant cannot aim berth at the inside of the cluster.
    #[arg(long, env = "BERTH_WEBHOOKS_ALLOW_PRIVATE_TARGETS", default_value_t = false, action = ArgAction::Set)]
    pub webhooks_allow_private_targets: bool,

    /// Shut down when standard input closes, as on SIGTERM; lets a supervising process (the e2e
    /// harness) stop berth by simply going away.
    #[arg(long, hide = true)]
    pub stop_on_stdin_eof: bool,
}

/// The leader election's clock, all measured locally on a monotonic clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timings {
    /// A standby takes over this long after it last saw the Lease change.
    pub lease: Duration,
    /// A leader writes nothing once this long has passed since the start of its last successful renewal.
    pub renew: Duration,
    /// Between renewals, and between a standby's looks.
    pub retry: Duration,
    /// The most one Lease call may take.
    pub call: Duration,
}

impl Args {
    /// The leader election's timings. The defaults (90 s Lease, 75 s renew deadline, 5 s retry) let a
    /// leader ride out an API server outage of 70 s (the renew deadline less one retry period) without
    /// stopping, and leave 15 s between the last moment the old leader may write and the first moment a
    /// standby may take over, for a write already on the wire. The cost: after a leader's node is lost
    /// (not a rollout, which hands the Lease over at once), the standby takes over after 90 s.
    ///
    /// # Errors
    /// When the renew deadline is not shorter than the Lease, or the retry period not shorter than the
    /// renew deadline: two leaders could then overlap, or a single slow call would lose the Lease.
    pub fn lease_timings(&self) -> anyhow::Result<Timings> {
        let lease = self.lease_seconds;
        let renew = self.lease_renew_seconds.unwrap_or(lease * 5 / 6);
        let retry = self.lease_retry_seconds.unwrap_or((lease / 18).max(1));
        anyhow::ensure!(
            renew < lease,
            "--lease-renew-seconds ({renew}) must be shorter than --lease-seconds ({lease}), \
             or a standby could take over while the old leader still writes"
        );
        anyhow::ensure!(
            retry < renew,
            "--lease-retry-seconds ({retry}) must be shorter than the renew deadline ({renew}s)"
        );
        let (renew, retry) = (Duration::from_secs(renew), Duration::from_secs(retry));
        Ok(Timings {
            lease: Duration::from_secs(lease),
            renew,
            retry,
            // One call may use most of a retry period, never so much that one hung call eats the deadline.
            call: retry.max(Duration::from_secs(2)).min(renew / 2),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timings(extra: &[&str]) -> anyhow::Result<Timings> {
        let mut argv = vec!["berth"];
        argv.extend_from_slice(extra);
        Args::try_parse_from(argv)?.lease_timings()
    }

    #[test]
    fn default_lease_rides_out_a_minute_of_api_server_outage() {
        let t = timings(&[]).unwrap();
        assert_eq!(
            (t.lease.as_secs(), t.renew.as_secs(), t.retry.as_secs()),
            (90, 75, 5)
        );
        assert!(t.renew - t.retry >= Duration::from_secs(60));
        assert!(t.call < t.renew);
    }

    #[test]
    fn a_short_lease_for_tests_keeps_its_proportions() {
        let t = timings(&["--lease-seconds", "6"]).unwrap();
        assert_eq!(
            (t.lease.as_secs(), t.renew.as_secs(), t.retry.as_secs()),
            (6, 5, 1)
        );
        assert!(t.call <= t.renew / 2);
    }

    #[test]
    fn overlapping_timings_are_refused() {
        let e = timings(&["--lease-seconds", "30", "--lease-renew-seconds", "30"]).unwrap_err();
        assert!(
            e.to_string().contains("must be shorter than --lease-seconds"),
            "{e}"
        );
        let e = timings(&["--lease-seconds", "30", "--lease-retry-seconds", "25"]).unwrap_err();
        assert!(e.to_string().contains("--lease-retry-seconds (25)"), "{e}");
    }
}
