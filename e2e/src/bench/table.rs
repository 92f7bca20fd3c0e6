//! The report as a table for people: the phases side by side, then the targets, then what berth's
//! writes, reconciles and watch events are made of.

use std::collections::{BTreeMap, BTreeSet};

use super::CHILDREN_PER_TENANT;
use super::phase::PhaseReport;
use super::report::Report;

pub fn print(r: &Report) {
    let n = r.n as f64;
    let (fl, be) = (&r.floor, &r.berth);
    let (m, v) = (&r.machine, &r.versions);
    println!();
    println!(
        "berth scale benchmark: N = {} tenants, concurrency {} per controller, floor writes by {}",
        r.n, r.concurrency, r.floor_verb
    );
    println!(
        "machine: {} CPUs, {} GiB RAM, load at start {} | kubernetes {} | {} ({})",
        m.nproc,
        num(m.mem_gib, 1),
        m.load_at_start.as_deref().unwrap_or("-"),
        v.kubernetes,
        v.berth,
        v.git,
    );
    println!();
    println!("{:<38} {:>16} {:>16}", "", "floor", "berth");
    let row = |label: &str, a: String, b: String| println!("{label:<38} {a:>16} {b:>16}");
    let both = |label: &str, figure: fn(&PhaseReport) -> Option<f64>, digits: usize| {
        row(
            label,
            num(figure(&fl.phase), digits),
            num(figure(&be.phase), digits),
        );
    };
    let cpu = |component: &str| {
        let of = |p: &PhaseReport| num(p.components_cpu_seconds.get(component).copied(), 1);
        row(&format!("{component} CPU (s)"), of(&fl.phase), of(&be.phase));
    };
    let latency = |p: &PhaseReport| {
        let l = &p.latency_seconds;
        format!("{} / {} / {}", num(l.p50, 1), num(l.p95, 1), num(l.p99, 1))
    };
    let writes = (fl.writes as f64, be.writes);
    both("time until all Ready (s)", |p| p.t_seconds, 1);
    let ready = |p: &PhaseReport| format!("{}/{}", p.ready, r.n);
    row("tenants Ready", ready(&fl.phase), ready(&be.phase));
    both("requests issued in (s)", |p| Some(p.create_seconds), 1);
    both(
        "every child object exists after (s)",
        |p| p.all_objects_exist_seconds,
        1,
    );
    row(
        "create→Ready p50/p95/p99 (s)",
        latency(&fl.phase),
        latency(&be.phase),
    );
    row(
        "API writes (total)",
        num(Some(writes.0), 0),
        num(Some(writes.1), 0),
    );
    row(
        "API writes per tenant",
        num(Some(writes.0 / n), 1),
        num(Some(writes.1 / n), 1),
    );
    for component in ["kube-apiserver", "etcd", "kube-controller-manager"] {
        cpu(component);
    }
    let clients = (num(fl.client_cpu_seconds, 1), num(be.operator.cpu_seconds, 1));
    row("client CPU (s): bench / berth", clients.0, clients.1);
    targets(r);
    println!();
    per_tenant(
        "berth API writes per Customer (controller/verb):",
        &be.writes_by_controller_verb,
        n,
    );
    per_tenant("berth reconciles per Customer:", &be.reconciles_by_controller, n);
    events(&fl.phase.watch_events_by_kind, &be.phase.watch_events_by_kind, n);
}

fn targets(r: &Report) {
    let (be, t) = (&r.berth, &r.targets);
    let steady = &be.steady_state;
    println!();
    println!(
        "T_berth / T_floor            = {:<10} target <= 1.25           {}",
        num(r.ratio, 2),
        verdict(t.ratio_le_1_25.met)
    );
    println!(
        "writes per child object      = {:<10} target <= 2 ({} children/tenant; apply/create/patch/delete only: {})  {}",
        num(Some(be.writes_per_child_object), 2),
        CHILDREN_PER_TENANT,
        num(Some(be.object_writes_per_child_object), 2),
        verdict(t.writes_per_child_object_le_2.met)
    );
    println!(
        "writes in {}s of steady state = {:<10} target 0                 {}  (reconciles: {})",
        steady.seconds,
        num(Some(steady.writes), 0),
        verdict(t.steady_state_writes_eq_0.met),
        serde_json::to_string(&steady.reconciles_by_controller).unwrap_or_default()
    );
    println!(
        "operator peak RSS (VmHWM)    = {:<10} target < 64 MiB at N=1000 {}",
        format!("{} MiB", num(be.operator.peak_rss_mib, 1)),
        verdict(t.operator_rss_lt_64_mib_at_1000.met)
    );
}

fn per_tenant(title: &str, figures: &BTreeMap<String, f64>, n: f64) {
    println!("{title}");
    for (k, v) in figures {
        println!("  {k:<28} {:>8.2}", v / n);
    }
}

fn events(floor: &BTreeMap<String, u64>, berth: &BTreeMap<String, u64>, n: f64) {
    println!("watch events (creates + updates) per tenant until all Ready:");
    println!("  {:<28} {:>8} {:>8}", "kind", "floor", "berth");
    let kinds: BTreeSet<&String> = floor.keys().chain(berth.keys()).collect();
    for k in kinds {
        let per = |m: &BTreeMap<String, u64>| num(m.get(k).map(|v| *v as f64 / n), 2);
        println!("  {k:<28} {:>8} {:>8}", per(floor), per(berth));
    }
}

/// `value` with `digits` decimals, or `-`.
#[must_use]
pub fn num(value: Option<f64>, digits: usize) -> String {
    value.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
}

/// `met` / `MISSED` / `n/a`.
#[must_use]
pub fn verdict(met: Option<bool>) -> &'static str {
    match met {
        Some(true) => "met",
        Some(false) => "MISSED",
        None => "n/a",
    }
}
