//! The process's life: connect, serve probes, win the Lease, run the controllers, and on SIGTERM let
//! in-flight work finish and hand the Lease over at once.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use berth_api::{Database, Scheduler};
use berth_kit::changes::{all_but_status, all_but_status_except_readiness};
use berth_kit::metrics::Metrics;
use berth_kit::shared::Shared;
use berth_kit::{Context, Settings};
use kube::Api;
use kube::runtime::events::{Recorder, Reporter};
use prometheus_client::registry::Registry;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::args::{Args, Controller};
use crate::http::{self, Health};
use crate::leader::{Elector, LeaseConfig};

pub async fn run(args: Args) -> anyhow::Result<()> {
    let config = kube::Config::infer()
        .await
        .context("no Kubernetes configuration found")?;
    let lease_namespace = args
        .lease_namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let mut registry = Registry::default();
    let metrics = Metrics::default().register(&mut registry);
    // One client for every controller, with a client-side bound on concurrent API requests so a burst of
    // reconciles (a restart with thousands of tenants) queues here instead of at the API server.
    let client = kube::client::ClientBuilder::try_from(config)
        .context("building the Kubernetes client")?
        .with_layer(&tower::limit::ConcurrencyLimitLayer::new(args.api_max_in_flight))
        .with_layer(&crate::requests::layer(metrics.clone()))
        .build();

    let health = Arc::new(Health::default());
    let shutdown = CancellationToken::new();
    tokio::spawn(signals(shutdown.clone(), args.stop_on_stdin_eof));
    let server = tokio::spawn(http::serve(
        args.http_addr,
        registry,
        health.clone(),
        shutdown.clone().cancelled_owned(),
    ));

    let identity = args.identity.clone().unwrap_or_else(default_identity);
    let mut elector = args.leader_elect.then(|| {
        Elector::new(
            client.clone(),
            LeaseConfig {
                name: args.lease_name.clone(),
                namespace: lease_namespace,
                identity: identity.clone(),
                duration: Duration::from_secs(args.lease_seconds),
                retry: Duration::from_secs((args.lease_seconds / 5).max(1)),
            },
        )
    });

    if let Some(elector) = elector.as_mut() {
        let retry = elector.config().retry;
        tracing::info!(%identity, lease = %elector.config().name, "waiting to become leader");
        loop {
            match elector.try_acquire_or_renew().await {
                Ok(true) => break,
                Ok(false) => health.ready.store(true, Ordering::Relaxed),
                Err(e) => tracing::warn!(error = %e, "cannot read the leader Lease"),
            }
            tokio::select! {
                () = shutdown.cancelled() => return finish(server).await,
                () = tokio::time::sleep(retry) => {}
            }
        }
    }
    tracing::info!(%identity, "leading: starting controllers");
    metrics.leader.set(1);
    health.ready.store(false, Ordering::Relaxed);

    // `stop` ends the controllers: on SIGTERM, or when the Lease is lost.
    let stop = shutdown.child_token();
    let lost = CancellationToken::new();
    let renewer = elector.map(|e| tokio::spawn(hold_lease(e, stop.clone(), lost.clone())));

    let kit = |name: &'static str| {
        let reporter = Reporter {
            controller: format!("berth-{name}"),
            instance: Some(identity.clone()),
        };
        Context::new(
            client.clone(),
            name,
            Recorder::new(client.clone(), reporter),
            metrics.clone(),
            settings(&args),
        )
    };
    // Kinds more than one controller reads are watched once for the process (see `berth_kit::shared`).
    let mut databases = Shared::new(Api::<Database>::all(client.clone()));
    let mut schedulers = Shared::new(Api::<Scheduler>::all(client.clone()));
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
        };
        synced.push(ctx.clone());
        match c {
            Controller::Customer => {
                let shared = berth_customer::Shared {
                    databases: databases.subscribe(all_but_status_except_readiness, true),
                    schedulers: schedulers.subscribe(all_but_status_except_readiness, true),
                };
                controllers.spawn(berth_customer::run(ctx, shared, config.clone(), done))
            }
            Controller::Database => controllers.spawn(berth_database::run(
                ctx,
                databases.subscribe(all_but_status, false),
                config.clone(),
                done,
            )),
            Controller::Scheduler => controllers.spawn(berth_scheduler::run(
                ctx,
                schedulers.subscribe(all_but_status, false),
                config.clone(),
                done,
            )),
        };
    }
    databases.start(stop.clone().cancelled_owned());
    schedulers.start(stop.clone().cancelled_owned());
    let watch_ready = tokio::spawn({
        let health = health.clone();
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
    metrics.leader.set(0);
    if let Some(renewer) = renewer {
        let mut elector = renewer.await.context("lease task panicked")?;
        if !lost.is_cancelled()
            && let Err(e) = elector.release().await
        {
            tracing::warn!(error = %e, "could not release the Lease; the standby takes over when it expires");
        }
    }
    shutdown.cancel();
    finish(server).await?;
    if lost.is_cancelled() {
        bail!("lost the leader Lease; exiting so that only the new leader reconciles");
    }
    tracing::info!("stopped");
    Ok(())
}

async fn finish(server: tokio::task::JoinHandle<std::io::Result<()>>) -> anyhow::Result<()> {
    server.await.context("http server task")?.context("http server")
}

/// Renews until `stop`; if renewal fails for a whole lease duration (or someone else holds it), marks
/// the Lease lost and stops the controllers.
async fn hold_lease(mut elector: Elector, stop: CancellationToken, lost: CancellationToken) -> Elector {
    let retry = elector.config().retry;
    let deadline = elector.config().duration.saturating_sub(retry);
    let mut last_renewed = Instant::now();
    loop {
        tokio::select! {
            () = stop.cancelled() => return elector,
            () = tokio::time::sleep(retry) => {}
        }
        match elector.try_acquire_or_renew().await {
            Ok(true) => last_renewed = Instant::now(),
            Ok(false) => {
                tracing::error!("another process holds the leader Lease");
                break;
            }
            Err(e) if last_renewed.elapsed() > deadline => {
                tracing::error!(error = %e, "could not renew the leader Lease in time");
                break;
            }
            Err(e) => tracing::warn!(error = %e, "renewing the leader Lease failed; retrying"),
        }
    }
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

fn settings(args: &Args) -> Settings {
    let mut s = Settings::default();
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
