//! The process's life: connect, serve probes, win the Lease, run the controllers, and on SIGTERM let
//! in-flight work finish and hand the Lease over at once. A leader that loses its Lease drops every
//! reconcile at once and goes back to standby; it does not exit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use berth_api::{Customer, Database, Scheduler, Webhook};
use berth_kit::changes::{all_but_status, all_but_status_except_readiness, any_change};
use berth_kit::connections::Connections;
use berth_kit::events::Publisher;
use berth_kit::metrics::Metrics;
use berth_kit::seal::Seal;
use berth_kit::shared::Shared;
use berth_kit::{Context, Settings, TenantAccess};
use k8s_openapi::api::batch::v1::Job;
use kube::Api;
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::args::{Args, Controller, Timings};
use crate::fence::{Fence, FenceLayer};
use crate::http::{self, Health};
use crate::leader::{Elector, LeaseConfig};

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration found")?;
    let timings = args.lease_timings()?;
    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    let fence = if args.leader_elect {
        Fence::closed()
    } else {
        Fence::default()
    };
    let clients = clients(config, &args, &identity, &metrics, &fence, timings.call)?;

    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone(), args.stop_on_stdin_eof));
    let server = tokio::spawn(http::serve(
        args.http_addr,
        registry,
        health.clone(),
        shutdown.clone().cancelled_owned(),
    ));

    // With the Lease's client: unfenced, so a standby may ask too. After the probes are served: alive
    // while the API server cannot be reached, never ready.
    let identity_and_seal = async {
        let access = crate::access::resolve(&clients.lease, &args.tenant_role).await?;
        let seal = crate::access::seal(&clients.lease, &lease_namespace).await?;
        anyhow::Ok((access, seal))
    };
    let (access, seal) = tokio::select! {
        found = identity_and_seal => found?,
        () = shutdown.cancelled() => {
            finish(server).await?;
            return Ok(());
        }
    };
    let mut elector = args.leader_elect.then(|| {
        Elector::new(
            clients.lease,
            LeaseConfig {
                name: args.lease_name.clone(),
                namespace: lease_namespace,
                identity: identity.clone(),
                duration: timings.lease,
            },
        )
    });
    let term = Term {
        args: &args,
        client: &clients.main,
        metrics: &metrics,
        health: &health,
        identity: &identity,
        shutdown: &shutdown,
        access: access.as_ref(),
        seal: &seal,
        watch_connections: &clients.watches,
    };
    loop {
        let mut valid_until = None;
        if let Some(elector) = elector.as_mut() {
            tracing::info!(%identity, lease = %elector.config().name, "waiting to become leader");
            let Some(until) = standby(elector, &fence, &health, &shutdown, &timings).await else {
                break;
            };
            valid_until = Some(until);
        }
        let renewer = elector.take().zip(valid_until).map(|(e, until)| {
            let stop = shutdown.child_token();
            let lost = CancellationToken::new();
            let task = tokio::spawn(hold_lease(
                e,
                fence.clone(),
                timings,
                until,
                stop.clone(),
                lost.clone(),
            ));
            Renewer { task, stop, lost }
        });
        let lost = term.lead(renewer.as_ref()).await;
        if let Some(r) = renewer {
            elector = Some(r.task.await.context("lease task panicked")?);
        }
        if !lost {
            break;
        }
        tracing::warn!("lost the leader Lease: stopped every reconcile, back to standby");
    }
    if let Some(elector) = elector.as_mut()
        && fence.is_open()
    {
        fence.close();
        if let Err(e) = tokio::time::timeout(timings.call, elector.release())
            .await
            .map_err(anyhow::Error::from)
            .and_then(|r| r.map_err(anyhow::Error::from))
        {
            tracing::warn!(error = %e, "could not release the Lease; the standby takes over when it expires");
        }
    }
    shutdown.cancel();
    finish(server).await?;
    tracing::info!("stopped");
    Ok(())
}

/// The process's two clients (see `clients`).
struct Clients {
    main: kube::Client,
    lease: kube::Client,
    /// The per-namespace Secret watches' (see `crate::watch_client`).
    watches: Arc<Connections>,
}

/// The controllers' client and the Lease's own. The controllers' client bounds concurrent requests (a
/// restart with thousands of tenants queues here, not at the API server), retries 429/503/504 below that
/// bound honouring `Retry-After`, and checks the write fence on every attempt, retries included, and at
/// the socket of every connection (see [`crate::fence`]). The
/// Lease's client shares none of that: a renewal must never wait behind reconciles or a throttled queue,
/// and every call has a read timeout, so a hung connection cannot outlive the renew deadline.
fn clients(
    config: kube::Config,
    args: &Args,
    identity: &str,
    metrics: &Arc<Metrics>,
    fence: &Fence,
    call_timeout: Duration,
) -> anyhow::Result<Clients> {
    let mut config = config;
    // Names the process in the API server's audit log and in its metrics of clients.
    let agent = format!("berth/{} ({identity})", env!("CARGO_PKG_VERSION"));
    config.headers.push((
        ::http::header::USER_AGENT,
        ::http::HeaderValue::from_str(&agent).context("the identity is not a valid header value")?,
    ));
    // kube's built-in retry sits below every layer added here, where the fence could not see it.
    config.default_retry = false;
    let mut lease_config = config.clone();
    lease_config.read_timeout = Some(call_timeout);
    let watch_config = config.clone();
    let lease = kube::Client::try_from(lease_config).context("building the Lease client")?;
    let retry =
        kube::client::retry::RetryPolicy::new(Duration::from_millis(200), Duration::from_secs(10), 8, true)
            .context("retry policy")?;
    let main = crate::fence::client_builder(&config, fence)?
        .with_layer(&FenceLayer(fence.clone()))
        // Below the retries, so a 429 that a retry gets past is counted as well.
        .with_layer(&crate::requests::ThrottledLayer(metrics.clone()))
        // Makes the stack cloneable, which retrying needs; the concurrency limit above bounds what waits here.
        .with_layer(&tower::buffer::BufferLayer::new(args.api_max_in_flight.max(1)))
        .with_layer(&tower::retry::RetryLayer::new(retry))
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(args.api_max_in_flight))
        .with_layer(&crate::requests::layer(metrics.clone()))
        .build();
    let watches = if args.watches_per_connection == 0 {
        Connections::one(main.clone())
    } else {
        // Built once here so a bad configuration stops the start, not a watch later.
        crate::watch_client::build(&watch_config, metrics)?;
        let (fallback, metrics) = (main.clone(), metrics.clone());
        Connections::batched(args.watches_per_connection, move || {
            crate::watch_client::build(&watch_config, &metrics).unwrap_or_else(|e| {
                tracing::warn!(error = %e, "cannot build a watch client; watching on the controllers' client");
                fallback.clone()
            })
        })
    };
    Ok(Clients { main, lease, watches })
}

/// How a term of leadership ends, seen from outside it.
struct Renewer {
    task: tokio::task::JoinHandle<Elector>,
    /// Ends the term: on SIGTERM (a child of the shutdown token) or when the Lease is lost.
    stop: CancellationToken,
    lost: CancellationToken,
}

/// What one term of leadership needs.
struct Term<'a> {
    args: &'a Args,
    client: &'a kube::Client,
    metrics: &'a Arc<Metrics>,
    health: &'a Arc<Health>,
    identity: &'a str,
    shutdown: &'a CancellationToken,
    access: Option<&'a TenantAccess>,
    seal: &'a Seal,
    watch_connections: &'a Arc<Connections>,
}

impl Term<'_> {
    /// Runs the controllers until SIGTERM (in-flight reconciles get their grace) or until the Lease is
    /// lost (every reconcile is dropped at once: the fence already refuses their writes, and a standby may
    /// be leading). Returns whether the Lease was lost.
    async fn lead(&self, renewer: Option<&Renewer>) -> bool {
        let args = self.args;
        let client = self.client;
        tracing::info!(identity = %self.identity, "leading: starting controllers");
        self.metrics.leader.set(1);
        self.health.ready.store(false, Ordering::Relaxed);
        let stop = renewer.map_or_else(|| self.shutdown.child_token(), |r| r.stop.clone());
        let kit = |name: &'static str| {
            let events = Publisher::new(
                client.clone(),
                format!("berth-{name}"),
                Some(self.identity.to_owned()),
            );
            Context::new(
                client.clone(),
                name,
                events,
                self.metrics.clone(),
                settings(args, self.access, self.seal),
            )
        };
        // Kinds more than one controller reads are watched once for the process (see `berth_kit::shared`).
        let mut databases = Shared::new(Api::<Database>::all(client.clone()));
        let mut schedulers = Shared::new(Api::<Scheduler>::all(client.clone()));
        let mut webhooks = Shared::new(Api::<Webhook>::all(client.clone()));
        let mut customers = Shared::new(Api::<Customer>::all(client.clone()));
        let mut jobs = Shared::with_config(Api::<Job>::all(client.clone()), berth_scheduler::jobs_watch());
        let config = kube::runtime::controller::Config::default()
            .concurrency(args.concurrency)
            .debounce(Duration::from_millis(args.debounce_ms));
        let mut controllers = JoinSet::new();
        let mut synced = Vec::new();
        for c in &args.controllers {
            let done = stop.clone().cancelled_owned();
            let ctx = match c {
                Controller::Customer => kit(berth_customer::NAME),
                Controller::Database => kit(berth_database::NAME),
                Controller::Scheduler => kit(berth_scheduler::NAME),
                Controller::Webhooks => kit(berth_webhooks::NAME),
            };
            synced.push(ctx.clone());
            match c {
                Controller::Customer => {
                    let shared = berth_customer::Shared {
                        customers: customers.subscribe(all_but_status, false),
                        databases: databases.subscribe(all_but_status_except_readiness, true),
                        schedulers: schedulers.subscribe(all_but_status_except_readiness, true),
                        webhooks: webhooks.subscribe(all_but_status_except_readiness, true),
                        readiness: customers.subscribe(all_but_status_except_readiness, true),
                    };
                    controllers.spawn(berth_customer::run(ctx, shared, config.clone(), done))
                }
                Controller::Database => controllers.spawn(berth_database::run(
                    ctx,
                    databases.subscribe(all_but_status, false),
                    self.watch_connections.clone(),
                    config.clone(),
                    done,
                )),
                Controller::Scheduler => controllers.spawn(berth_scheduler::run(
                    ctx,
                    schedulers.subscribe(all_but_status, false),
                    // A run that starts, finishes or goes wakes its Scheduler.
                    jobs.subscribe(any_change, true),
                    config.clone(),
                    done,
                )),
                Controller::Webhooks => {
                    let config = config.clone();
                    // Its events come from the status of what it watches, so any change counts.
                    let watches = berth_webhooks::Watches {
                        webhooks: webhooks.subscribe(all_but_status, false),
                        customers: customers.subscribe(any_change, false),
                        databases: databases.subscribe(any_change, false),
                        schedulers: schedulers.subscribe(any_change, false),
                        jobs: jobs.subscribe(any_change, false),
                    };
                    controllers.spawn(async move {
                        if let Err(e) = berth_webhooks::run(ctx, watches, config, done).await {
                            tracing::error!(error = %e, "the webhooks controller cannot start");
                        }
                    })
                }
            };
        }
        databases.start(stop.clone().cancelled_owned());
        schedulers.start(stop.clone().cancelled_owned());
        webhooks.start(stop.clone().cancelled_owned());
        customers.start(stop.clone().cancelled_owned());
        jobs.start(stop.clone().cancelled_owned());
        let watch_ready = tokio::spawn({
            let health = self.health.clone();
            async move {
                for ctx in synced {
                    ctx.synced().await;
                }
                health.ready.store(true, Ordering::Relaxed);
                tracing::info!("caches synced");
            }
        });

        stop.cancelled().await;
        watch_ready.abort();
        let lost = renewer.is_some_and(|r| r.lost.is_cancelled());
        if lost {
            controllers.abort_all();
        } else {
            let grace = Duration::from_secs(args.shutdown_seconds);
            tracing::info!(?grace, "stopping: letting in-flight reconciles finish");
            if tokio::time::timeout(grace, async { while controllers.join_next().await.is_some() {} })
                .await
                .is_err()
            {
                tracing::warn!(
                    "in-flight reconciles did not finish in time; they will be retried by the next leader"
                );
                controllers.abort_all();
            }
        }
        while controllers.join_next().await.is_some() {}
        self.metrics.leader.set(0);
        // A standby is ready: it serves probes and takes over when needed.
        self.health.ready.store(true, Ordering::Relaxed);
        lost
    }
}

async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> anyhow::Result<()> {
    server.await.context("http server task")?.context("http server")
}

/// Tries for the Lease every retry period until it is ours (`Some`: the fence is open until then) or the
/// process shuts down (`None`).
async fn standby(
    elector: &mut Elector,
    fence: &Fence,
    health: &Health,
    shutdown: &CancellationToken,
    t: &Timings,
) -> Option<Instant> {
    loop {
        let started = Instant::now();
        match tokio::time::timeout(t.call, elector.try_acquire_or_renew()).await {
            Ok(Ok(true)) => {
                let until = started + t.renew;
                fence.open_until(until);
                return Some(until);
            }
            Ok(Ok(false)) => health.ready.store(true, Ordering::Relaxed),
            Ok(Err(e)) => tracing::warn!(error = %e, "cannot read the leader Lease"),
            Err(_) => tracing::warn!(timeout = ?t.call, "reading the leader Lease timed out"),
        }
        tokio::select! {
            () = shutdown.cancelled() => return None,
            () = tokio::time::sleep(t.retry) => {}
        }
    }
}

/// Renews every retry period until `stop`. The Lease is lost when another process holds it, or when no
/// renewal has succeeded by the renew deadline, measured by a timer from the start of the last renewal
/// that did (so a hung call cannot stretch it). Losing it closes the fence first, then stops the term.
async fn hold_lease(
    mut elector: Elector,
    fence: Fence,
    t: Timings,
    mut valid_until: Instant,
    stop: CancellationToken,
    lost: CancellationToken,
) -> Elector {
    loop {
        let deadline = tokio::time::Instant::from_std(valid_until);
        tokio::select! {
            () = stop.cancelled() => return elector,
            () = tokio::time::sleep_until(deadline) => {
                tracing::error!(deadline = ?t.renew, "could not renew the leader Lease in time");
                break;
            }
            () = tokio::time::sleep(t.retry) => {}
        }
        let started = Instant::now();
        let renewed = tokio::select! {
            r = tokio::time::timeout(t.call, elector.try_acquire_or_renew()) => r,
            () = tokio::time::sleep_until(deadline) => continue,
        };
        match renewed {
            Ok(Ok(true)) => {
                valid_until = started + t.renew;
                fence.open_until(valid_until);
            }
            Ok(Ok(false)) => {
                tracing::error!("another process holds the leader Lease");
                break;
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "renewing the leader Lease failed; retrying"),
            Err(_) => tracing::warn!(timeout = ?t.call, "renewing the leader Lease timed out; retrying"),
        }
    }
    fence.close();
    lost.cancel();
    stop.cancel();
    elector
}

async fn signals(shutdown: CancellationToken, stdin_eof: bool) {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
    else {
        tracing::error!("cannot listen for signals");
        return;
    };
    let eof = async {
        if stdin_eof {
            let mut sink = tokio::io::sink();
            let _ = tokio::io::copy(&mut tokio::io::stdin(), &mut sink).await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = int.recv() => tracing::info!("SIGINT"),
        () = eof => tracing::info!("standard input closed"),
    }
    shutdown.cancel();
}

fn settings(args: &Args, access: Option<&TenantAccess>, seal: &Seal) -> Settings {
    let mut s = Settings {
        tenant_access: access.cloned(),
        seal: Some(seal.clone()),
        webhooks_allow_http: args.webhooks_allow_http,
        webhooks_allow_private: args.webhooks_allow_private_targets,
        ..Settings::default()
    };
    if let Some(image) = &args.postgres_image {
        s.postgres_image.clone_from(image);
    }
    if let Some(image) = &args.pgbouncer_image {
        s.pgbouncer_image.clone_from(image);
    }
    if let Some(dir) = &args.postgres_bin_dir {
        s.postgres_bin_dir.clone_from(dir);
    }
    s
}

fn default_identity() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    format!("{}-{}", host.trim(), std::process::id())
}
