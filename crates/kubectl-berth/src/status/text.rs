//! `status` as text: aligned tables, times as ages.

use k8s_openapi::jiff::Timestamp;

use super::{Overview, Status};
use crate::render::age;

/// Left-aligned columns, two spaces apart.
#[must_use]
pub fn table(rows: &[Vec<String>]) -> String {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..cols)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for r in rows {
        let line: Vec<String> = r
            .iter()
            .enumerate()
            .map(|(i, c)| {
                if i + 1 == r.len() {
                    c.clone()
                } else {
                    format!("{c:w$}", w = widths[i])
                }
            })
            .collect();
        out.push_str(line.join("  ").trim_end());
        out.push('\n');
    }
    out
}

#[must_use]
pub fn render_overview(lines: &[Overview], now: Timestamp) -> String {
    let mut rows = vec![
        [
            "CUSTOMER",
            "NAMESPACE",
            "READY",
            "POOL",
            "WORKERS",
            "QUEUED",
            "WEBHOOKS",
            "AGE",
            "STATUS",
        ]
        .map(str::to_owned)
        .to_vec(),
    ];
    for o in lines {
        rows.push(vec![
            o.customer.clone(),
            o.namespace.clone(),
            o.ready.clone(),
            o.pool.clone(),
            o.workers.clone(),
            o.queued.clone(),
            o.webhooks.clone(),
            age(o.created.as_deref(), now),
            o.summary.clone().unwrap_or_default(),
        ]);
    }
    table(&rows)
}

fn when(t: Option<&str>, now: Timestamp) -> String {
    t.map_or_else(|| "-".to_owned(), |t| format!("{} ago", age(Some(t), now)))
}

#[must_use]
pub fn render(s: &Status, now: Timestamp) -> String {
    let mut out = format!(
        "Customer:   {}\nNamespace:  {}\nReady:      {}{}\n",
        s.customer,
        s.namespace,
        s.ready,
        s.summary
            .as_deref()
            .map(|m| format!(" ({m})"))
            .unwrap_or_default()
    );
    if s.suspended {
        out.push_str("Suspended:  yes (database scaled to zero, no new workflow runs)\n");
    }
    if !s.quota.is_empty() {
        out.push_str("\nQuota:\n");
        let mut rows = vec![vec![
            "  RESOURCE".to_owned(),
            "USED".to_owned(),
            "HARD".to_owned(),
        ]];
        rows.extend(
            s.quota
                .iter()
                .map(|q| vec![format!("  {}", q.resource), q.used.clone(), q.hard.clone()]),
        );
        out.push_str(&table(&rows));
    }
    for d in &s.databases {
        out.push_str(&format!("\nDatabase {} (Ready: {}):\n", d.name, d.ready));
        if let Some(why) = &d.why {
            out.push_str(&format!("  {why}\n"));
        }
        let rows = vec![
            vec![
                "  image".to_owned(),
                d.image.clone().unwrap_or_else(|| "-".to_owned()),
            ],
            vec![
                "  storage".to_owned(),
                format!(
                    "{} requested, {} bound{}",
                    d.storage_requested,
                    d.storage_bound.as_deref().unwrap_or("nothing"),
                    d.claim
                        .as_deref()
                        .map(|c| format!(" (claim {c})"))
                        .unwrap_or_default()
                ),
            ],
            vec![
                "  pool".to_owned(),
                format!("{}/{} pgbouncer pods ready", d.pool_ready, d.pool_replicas),
            ],
            vec![
                "  endpoint".to_owned(),
                d.endpoint.clone().unwrap_or_else(|| "-".to_owned()),
            ],
            vec![
                "  connection".to_owned(),
                d.connection_secret
                    .as_deref()
                    .map_or_else(|| "-".to_owned(), |n| format!("Secret {n}")),
            ],
        ];
        out.push_str(&table(&rows));
    }
    for sc in &s.schedulers {
        out.push_str(&format!(
            "\nScheduler {} (Ready: {}): {}/{} workers busy, {} queued{}\n",
            sc.name,
            sc.ready,
            sc.running,
            sc.workers,
            sc.queued,
            if sc.suspended { ", suspended" } else { "" }
        ));
        if !sc.workflows.is_empty() {
            let mut rows = vec![
                [
                    "  WORKFLOW",
                    "SCHEDULE",
                    "LAST SUCCESS",
                    "LAST FAILURE",
                    "LAST RUN",
                    "MISSED",
                ]
                .map(str::to_owned)
                .to_vec(),
            ];
            for w in &sc.workflows {
                rows.push(vec![
                    format!("  {}", w.name),
                    w.schedule.clone(),
                    when(w.last_success.as_deref(), now),
                    when(w.last_failure.as_deref(), now),
                    w.last_run.clone().unwrap_or_else(|| "-".to_owned()),
                    w.missed.to_string(),
                ]);
            }
            out.push_str(&table(&rows));
        }
    }
    for h in &s.webhooks {
        out.push_str(&format!("\nWebhooks {} (Ready: {}):\n", h.name, h.ready));
        let mut rows = vec![
            [
                "  ENDPOINT",
                "STATE",
                "PENDING",
                "FAILURES",
                "LAST SUCCESS",
                "URL",
                "LAST FAILURE",
            ]
            .map(str::to_owned)
            .to_vec(),
        ];
        for e in &h.endpoints {
            rows.push(vec![
                format!("  {}", e.name),
                e.state.clone(),
                e.pending.to_string(),
                e.consecutive_failures.to_string(),
                when(e.last_success.as_deref(), now),
                e.url.clone(),
                e.last_failure_reason.clone().unwrap_or_default(),
            ]);
        }
        out.push_str(&table(&rows));
    }
    out
}
