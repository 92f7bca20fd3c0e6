//! Command line and environment. Every flag has an environment variable so the chart can set it.

use std::net::SocketAddr;

use berth_telemetry::LogFormat;
use clap::{ArgAction, Parser, ValueEnum};

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Controller {
    Customer,
    Database,
    Scheduler,
}

#[derive(Debug, Parser)]
#[command(name = "berth", version, about = "Kubernetes multitenancy operator")]
pub struct Args {
    /// Controllers to run in this process.
    #[arg(
        long,
        env = "BERTH_CONTROLLERS",
        value_delimiter = ',',
        default_value = "customer,database,scheduler"
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

    /// Take part in leader election; without it this process reconciles unconditionally.
    #[arg(long, env = "BERTH_LEADER_ELECT", default_value_t = true, action = ArgAction::Set)]
    pub leader_elect: bool,

    /// Namespace of the leader Lease; defaults to the namespace of the kubeconfig context or pod.
    #[arg(long, env = "BERTH_LEASE_NAMESPACE")]
    pub lease_namespace: Option<String>,

    #[arg(long, env = "BERTH_LEASE_NAME", default_value = "berth-leader")]
    pub lease_name: String,

    /// Seconds a silent leader keeps the Lease before a standby takes over.
    #[arg(long, env = "BERTH_LEASE_SECONDS", default_value_t = 15)]
    pub lease_seconds: u64,

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

    /// Shut down when standard input closes, as on SIGTERM; lets a supervising process (the e2e
    /// harness) stop berth by simply going away.
    #[arg(long, hide = true)]
    pub stop_on_stdin_eof: bool,
}
