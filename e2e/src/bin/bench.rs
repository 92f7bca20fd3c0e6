//! `make bench` (issue #9): how close berth comes to the API server's own floor at scale.
//!
//! 1. floor: a tight client creates, for N tenants, exactly the objects berth would create (berth's own
//!    builders, ownerReferences stripped) with berth's concurrency, and waits for berth's readiness
//!    (namespace, StatefulSet ready, pool Deployment available);
//! 2. berth: the release operator runs as a process; N Customers are created and the bench waits until
//!    each is Ready, then watches 60 s of steady state;
//!    then restarts the operator (SIGTERM, same arguments) and measures the new process until it has
//!    re-verified every tenant;
//! 3. kro (kubernetes-sigs/kro, built by `e2e/build-kro.sh`): one ResourceGraphDefinition derived from
//!    berth's builders, N instances created and awaited as berth's Customers are (`src/bench/kro.rs`);
//! 4. each phase's tenants are deleted (and gone) before the next starts, on separate names.
//!
//! Prints a table, writes `target/bench/result.json` and `target/bench/ready.png`. Targets are
//! reported, never asserted. Run it through `e2e/bench.sh`, which builds everything and brings up the
//! local control plane when `KUBECONFIG` is unset.
//!
//! Environment: `N` (tenants, default 200), `BENCH_CONCURRENCY` (default 8, berth's default),
//! `BENCH_FLOOR_VERB` (`create`, default, or `apply`), `BENCH_SETTLE_SECONDS` (default 60),
//! `BENCH_TIMEOUT_SECONDS` (per phase), `BENCH_SKIP_FINAL_CLEANUP=1` (leave berth's tenants),
//! `BERTH_BIN` (default `target/release/berth`), `BERTH_CLUSTER_DIR` (for the components' PIDs),
//! `BENCH_RESTART=0` (no restart row), `BENCH_KRO_DIR` (kro's controller and CRDs; no kro phase without it).

use berth_e2e::bench::report::{self, Machine, Report, Versions};
use berth_e2e::bench::sys::Meters;
use berth_e2e::bench::{Config, FLOOR, berth, chart, cleanup, cluster, floor, kro, log, table};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cfg = Config::from_env()?;
    std::fs::create_dir_all(&cfg.out)?;
    let client = cfg.client().await?;
    let meters = Meters::new(cfg.cluster_dir.as_deref());
    let machine = Machine::now();
    let versions = Versions::read(&client, &cfg).await?;
    log(&report::setting(&cfg, &machine, &versions));
    if !meters.has_components() {
        log("no local control plane PIDs (BERTH_CLUSTER_DIR): API server CPU is not measured");
    }
    cluster::prepare(&client, &cfg).await?;

    let phases = if cfg.kro_dir.is_some() { 3 } else { 2 };
    log(&format!("phase 1/{phases}: floor"));
    let floor = floor::run(&client, &cfg, &meters).await?;
    log("floor: deleting its namespaces");
    cleanup::delete_namespaces(&client, &FLOOR, &cfg).await?;

    log(&format!("phase 2/{phases}: berth"));
    // kro's tenants need the nodes berth's pods hold.
    let berth = berth::run(&client, &cfg, &meters, cfg.final_cleanup || phases == 3).await?;

    let kro = match &cfg.kro_dir {
        Some(dir) => {
            log("phase 3/3: kro");
            kro::run(&client, &cfg, &meters, dir)
                .await
                .map(Some)
                .map_err(|e| {
                    log(&format!("kro phase failed: {e:#}"));
                    format!("{e:#}")
                })
        }
        None => {
            log("no BENCH_KRO_DIR: the kro phase is skipped (e2e/bench.sh builds kro and sets it)");
            Ok(None)
        }
    };

    let report = Report::new(&cfg, machine, versions, floor, berth, kro);
    let json = cfg.out.join("result.json");
    report.write(&json)?;
    let png = cfg.out.join("ready.png");
    if let Err(e) = chart::phases(&png, cfg.n, &report.ready_curves) {
        log(&format!("could not draw {}: {e:#}", png.display()));
    }
    table::print(&report);
    println!("\nwrote {} and {}", json.display(), png.display());
    Ok(())
}
