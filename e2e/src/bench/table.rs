//! The report as a table for people: the phases (floor, berth, kro) side by side, then the targets, then what berth's
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
    let kr = r.kro.as_ref();
    let kp = kr.map(|k| &k.phase);
    println!();
    println!("{:<38} {:>16} {:>16} {:>16}", "", "floor", "berth", "kro");
    let row = |label: &str, a: String, b: String, c: String| println!("{label:<38} {a:>16} {b:>16} {c:>16}");
    let all = |label: &str, figure: fn(&PhaseReport) -> Option<f64>, digits: usize| {
        row(
            label,
            num(figure(&fl.phase), digits),
            num(figure(&be.phase), digits),
            num(kp.and_then(figure), digits),
        );
    };
    let cpu = |component: &str| {
        let of = |p: &PhaseReport| num(p.components_cpu_seconds.get(component).copied(), 1);
        row(
            &format!("{component} CPU (s)"),
            of(&fl.phase),
            of(&be.phase),
            kp.map_or_else(|| "-".to_owned(), of),
        );
    };
    let latency = |p: &PhaseReport| {
        let l = &p.latency_seconds;
        format!("{} / {} / {}", num(l.p50, 1), num(l.p95, 1), num(l.p99, 1))
    };
    let writes = (fl.writes as f64, be.writes, kr.map(|k| k.writes));
    all("time until all Ready (s)", |p| p.t_seconds, 1);
    let ready = |p: &PhaseReport| format!("{}/{}", p.ready, r.n);
    row(
        "tenants Ready",
        ready(&fl.phase),
        ready(&be.phase),
        kp.map_or_else(|| "-".to_owned(), ready),
    );
    all("requests issued in (s)", |p| Some(p.create_seconds), 1);
    all(
        "every child object exists after (s)",
        |p| p.all_objects_exist_seconds,
        1,
    );
    row(
        "create→Ready p50/p95/p99 (s)",
        latency(&fl.phase),
        latency(&be.phase),
        kp.map_or_else(|| "-".to_owned(), latency),
    );
    row(
        "API writes (total)",
        num(Some(writes.0), 0),
        num(Some(writes.1), 0),
        num(writes.2, 0),
    );
    row(
        "API writes per tenant",
        num(Some(writes.0 / n), 1),
        num(Some(writes.1 / n), 1),
        num(writes.2.map(|w| w / n), 1),
    );
    // The floor writes each of its objects once, so its writes per tenant are its objects per tenant.
    row(
        "objects per tenant",
        num(Some(writes.0 / n), 0),
        "-".to_owned(),
        num(kr.map(|k| k.objects_per_tenant as f64), 0),
    );
    for component in ["kube-apiserver", "etcd", "kube-controller-manager"] {
        cpu(component);
    }
    row(
        "client CPU (s): bench / berth / kro",
        num(fl.client_cpu_seconds, 1),
        num(be.operator.cpu_seconds, 1),
        num(kr.and_then(|k| k.process.cpu_seconds), 1),
    );
    row(
        "peak RSS (MiB): berth / kro",
        "-".to_owned(),
        num(be.operator.peak_rss_mib, 1),
        num(kr.and_then(|k| k.process.peak_rss_mib), 1),
    );
    kro(r);
    restart(r);
    targets(r);
    println!();
    per_tenant(
        "berth API writes per Customer (controller/verb):",
        &be.writes_by_controller_verb,
        n,
    );
    per_tenant("berth reconciles per Customer:", &be.reconciles_by_controller, n);
    events(r, n);
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
        "T_berth / T_kro              = {:<10} target < 1               {}",
        num(r.ratio_berth_kro, 2),
        verdict(t.ratio_berth_kro_lt_1.met)
    );
    println!(
        "writes per child object      = {:<10} target <= 1.5 ({} children/tenant; apply/create/patch/delete only: {})  {}",
        num(Some(be.writes_per_child_object), 2),
        CHILDREN_PER_TENANT,
        num(Some(be.object_writes_per_child_object), 2),
        verdict(t.writes_per_child_object_le_1_5.met)
    );
    println!(
        "writes of a restart          = {:<10} target 0                 {}",
        num(t.restart_writes_eq_0.value, 0),
        verdict(t.restart_writes_eq_0.met)
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

fn kro(r: &Report) {
    println!();
    if let Some(e) = &r.kro_error {
        println!("kro: the phase failed: {e}");
    }
    let Some(k) = &r.kro else {
        if r.kro_error.is_none() {
            println!("kro: not run (no BENCH_KRO_DIR; e2e/bench.sh builds kro and sets it)");
        }
        return;
    };
    let s = &k.settings;
    println!(
        "T_berth / T_kro              = {}   (kro {}: {} concurrent reconciles, client QPS {} burst {}; berth: concurrency {}, \
         no client rate limit, at most 32 requests in flight)",
        num(r.ratio_berth_kro, 2),
        s.version,
        s.concurrency,
        s.client_qps,
        s.client_burst,
        r.concurrency
    );
    println!(
        "kro requests by method until all Ready: {}",
        serde_json::to_string(&k.requests_by_method).unwrap_or_default()
    );
    println!(
        "kro instance fields the bench fills (kro cannot generate them): {}",
        k.spec_fields.join(", ")
    );
    for (what, why) in &k.cannot {
        println!("  kro cannot: {what:<40} {why}");
    }
}

fn restart(r: &Report) {
    println!();
    let Some(x) = &r.berth.restart else {
        println!("restart: not measured");
        return;
    };
    println!(
        "restart: SIGTERM→exit {} s, start→ready {} s, start→every object re-verified {} s",
        num(Some(x.stop_seconds), 1),
        num(Some(x.ready_seconds), 1),
        num(x.reverified_seconds, 1)
    );
    let n = r.n as f64;
    println!(
        "restart: {} requests ({} per tenant), {} writes ({} per tenant); objects {}; reconciles {}",
        num(Some(x.requests), 0),
        num(Some(x.requests / n), 1),
        num(Some(x.writes), 0),
        num(Some(x.writes / n), 2),
        serde_json::to_string(&x.managed_objects_by_controller).unwrap_or_default(),
        serde_json::to_string(&x.reconciles_by_controller).unwrap_or_default()
    );
    per_tenant(
        "restart requests per tenant (verb/resource):",
        &x.requests_by_verb_resource,
        n,
    );
    per_tenant(
        "restart writes per tenant (controller/verb):",
        &x.writes_by_controller_verb,
        n,
    );
}

fn per_tenant(title: &str, figures: &BTreeMap<String, f64>, n: f64) {
    println!("{title}");
    for (k, v) in figures {
        println!("  {k:<28} {:>8.2}", v / n);
    }
}

fn events(r: &Report, n: f64) {
    let none = BTreeMap::new();
    let floor = &r.floor.phase.watch_events_by_kind;
    let berth = &r.berth.phase.watch_events_by_kind;
    let kro = r.kro.as_ref().map_or(&none, |k| &k.phase.watch_events_by_kind);
    println!("watch events (creates + updates) per tenant until all Ready:");
    println!("  {:<28} {:>8} {:>8} {:>8}", "kind", "floor", "berth", "kro");
    let kinds: BTreeSet<&String> = floor.keys().chain(berth.keys()).chain(kro.keys()).collect();
    for k in kinds {
        let per = |m: &BTreeMap<String, u64>| num(m.get(k).map(|v| *v as f64 / n), 2);
        println!("  {k:<28} {:>8} {:>8} {:>8}", per(floor), per(berth), per(kro));
    }
}

/// `value` with `digits` decimals, or `-`.
#[must_use]
pub fn num(value: Option<f64>, digits: usize) -> String {
    // `+ 0.0` turns a difference of equal counters that came out as -0.0 into 0.
    value.map_or_else(|| "-".to_owned(), |v| format!("{:.digits$}", v + 0.0))
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
