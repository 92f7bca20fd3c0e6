//! The chart's dashboard and alert rules query only metrics berth exports, and the dashboard shows every one
//! of them. The names come from the encoded registry, as Prometheus scrapes it, so a renamed metric or a
//! suffix the encoder adds (`_total`, `_bucket`) is caught here rather than by an empty panel or an alert
//! that can never fire.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use crate::error::NEEDS_ATTENTION;

fn repo_file(path: &str) -> String {
    let full = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..").join(path);
    std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{}: {e}", full.display()))
}

/// Each family berth registers, with the sample names a query may use for it.
fn exported() -> BTreeMap<String, Vec<String>> {
    crate::metrics::tests::encoded_with_every_family()
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .map(|l| {
            let (family, kind) = l.split_once(' ').unwrap();
            let samples = match kind {
                "counter" => vec![format!("{family}_total")],
                "histogram" => ["bucket", "sum", "count"]
                    .iter()
                    .map(|s| format!("{family}_{s}"))
                    .collect(),
                "info" => vec![format!("{family}_info")],
                _ => vec![family.to_owned()],
            };
            (family.to_owned(), samples)
        })
        .collect()
}

/// Every `berth_...` name in `text` that stands alone (not inside a recording rule's `berth:...` name).
fn names_in(text: &str) -> BTreeSet<String> {
    let ident = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("berth_") {
        let alone = !rest[..i].ends_with(ident);
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
            .unwrap_or(tail.len());
        if alone {
            names.insert(tail[..end].to_owned());
        }
        rest = &tail[end..];
    }
    names
}

fn unknown(used: &BTreeSet<String>, exported: &BTreeMap<String, Vec<String>>) -> Vec<String> {
    let known: BTreeSet<&str> = exported
        .iter()
        .flat_map(|(family, samples)| std::iter::once(family).chain(samples))
        .map(String::as_str)
        .collect();
    used.iter()
        .filter(|n| !known.contains(n.as_str()))
        .cloned()
        .collect()
}

#[test]
fn the_registry_lists_what_berth_exports() {
    let families = exported();
    for family in ["berth_reconciles", "berth_leader", "berth_customer_ready"] {
        assert!(families.contains_key(family), "{family} in {families:?}");
    }
    assert_eq!(families["berth_reconciles"], ["berth_reconciles_total"]);
}

#[test]
fn the_dashboard_is_json_and_shows_every_metric_berth_exports_and_no_other() {
    let text = repo_file("charts/berth/dashboards/berth.json");
    let dashboard: serde_json::Value = serde_json::from_str(&text).expect("the dashboard is valid JSON");
    let panels = dashboard["panels"].as_array().expect("panels");
    assert!(panels.iter().any(|p| p["type"] != "row"), "no panels");
    let exported = exported();
    // Only what the panels query counts, descriptions aside.
    let queries: Vec<&str> = panels
        .iter()
        .flat_map(|p| p["targets"].as_array().into_iter().flatten())
        .filter_map(|t| t["expr"].as_str())
        .collect();
    let used = names_in(&queries.join("\n"));
    assert_eq!(
        unknown(&used, &exported),
        Vec::<String>::new(),
        "queried but not exported"
    );
    let unshown: Vec<&String> = exported
        .iter()
        .filter(|(family, samples)| !used.contains(*family) && !samples.iter().any(|s| used.contains(s)))
        .map(|(family, _)| family)
        .collect();
    assert!(unshown.is_empty(), "exported but on no panel: {unshown:?}");
}

#[test]
fn the_alert_rules_and_their_tests_use_only_exported_metrics() {
    let exported = exported();
    for path in [
        "charts/berth/templates/prometheusrule.yaml",
        "e2e/alerts/alerts.test.yaml",
    ] {
        let used = names_in(&repo_file(path));
        assert!(used.len() > 5, "{path}: {used:?}");
        assert_eq!(unknown(&used, &exported), Vec::<String>::new(), "{path}");
    }
}

#[test]
fn the_rules_split_errors_by_the_categories_that_need_a_person() {
    let rules = repo_file("charts/berth/templates/prometheusrule.yaml");
    let list = NEEDS_ATTENTION.join("|");
    assert!(
        rules.contains(&format!("$attention := \"{list}\"")),
        "the rules' categories differ from kit::error::NEEDS_ATTENTION ({list})"
    );
}

#[test]
fn names_are_found_alone_and_not_inside_recorded_ones() {
    let found = names_in("rate(berth_a_total[5m]) / berth:b:leader + x_berth_c{berth_d=\"1\"}");
    assert_eq!(
        found,
        BTreeSet::from(["berth_a_total".to_owned(), "berth_d".to_owned()])
    );
}
