//! Text for people: the tree as aligned columns, ages the way kubectl prints them, colour only on a terminal.

use k8s_openapi::jiff::Timestamp;

use crate::health::Ready;
use crate::tree::Node;

/// ANSI colours, or none at all (not a terminal, or `NO_COLOR` set).
#[derive(Clone, Copy, Debug)]
pub struct Style {
    pub colour: bool,
}

impl Style {
    /// Colour when standard output is a terminal and `NO_COLOR` is unset (<https://no-color.org>).
    #[must_use]
    pub fn detect() -> Self {
        use std::io::IsTerminal as _;
        Self {
            colour: std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
        }
    }

    fn paint(self, code: &str, text: &str) -> String {
        if self.colour {
            format!("\x1b[{code}m{text}\x1b[0m")
        } else {
            text.to_owned()
        }
    }

    pub fn ready(self, ready: Ready, padded: &str) -> String {
        match ready {
            Ready::True => self.paint("32", padded),
            Ready::False => self.paint("31", padded),
            Ready::Unknown => self.paint("33", padded),
            Ready::None => padded.to_owned(),
        }
    }

    pub fn alarm(self, text: &str) -> String {
        self.paint("1;31", text)
    }
}

/// `12s`, `5m`, `3h`, `4d`: how long ago `then` (RFC 3339) was; `<unknown>` when it cannot be read.
#[must_use]
pub fn age(then: Option<&str>, now: Timestamp) -> String {
    let Some(t) = then.and_then(|t| t.parse::<Timestamp>().ok()) else {
        return "<unknown>".to_owned();
    };
    let s = now.duration_since(t).as_secs().max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86_400),
    }
}

struct Row<'a> {
    prefix: String,
    /// What continues the tree's lines below this row, for the cause's details.
    below: String,
    node: &'a Node,
}

fn rows<'a>(node: &'a Node, prefix: &str, below: &str, out: &mut Vec<Row<'a>>) {
    out.push(Row {
        prefix: prefix.to_owned(),
        below: below.to_owned(),
        node,
    });
    let n = node.children.len();
    for (i, c) in node.children.iter().enumerate() {
        let last = i + 1 == n;
        let (p, b) = if last {
            ("└─", "  ")
        } else {
            ("├─", "│ ")
        };
        rows(c, &format!("{below}{p}"), &format!("{below}{b}"), out);
    }
}

/// The tree as columns NAME, READY, REASON, AGE. Under each cause, its full message and latest Warning
/// events, never cut.
#[must_use]
pub fn tree(root: &Node, now: Timestamp, style: Style) -> String {
    let mut list = Vec::new();
    rows(root, "", "", &mut list);
    let name = |r: &Row| format!("{}{}/{}", r.prefix, r.node.kind, r.node.name);
    let width =
        |f: &dyn Fn(&Row) -> usize, header: &str| list.iter().map(f).max().unwrap_or(0).max(header.len());
    let w_name = width(&|r| name(r).chars().count(), "NAME");
    let w_ready = width(&|r| r.node.health.ready.as_str().len(), "READY");
    let w_reason = width(&|r| r.node.health.reason.as_deref().unwrap_or("").len(), "REASON");
    let mut out = format!(
        "{:w_name$}  {:w_ready$}  {:w_reason$}  AGE\n",
        "NAME", "READY", "REASON"
    );
    for r in &list {
        let n = r.node;
        let label = name(r);
        let pad = w_name.saturating_sub(label.chars().count());
        let label = if n.cause { style.alarm(&label) } else { label };
        let ready = style.ready(n.health.ready, &format!("{:w_ready$}", n.health.ready.as_str()));
        out.push_str(&format!(
            "{label}{}  {ready}  {:w_reason$}  {}\n",
            " ".repeat(pad),
            n.health.reason.as_deref().unwrap_or(""),
            age(n.created.as_deref(), now)
        ));
        if !n.cause {
            continue;
        }
        let indent = format!("{}    ", r.below);
        if let Some(m) = &n.health.message {
            out.push_str(&format!("{indent}{} {m}\n", style.alarm("message:")));
        }
        for w in &n.warnings {
            let when = w
                .last
                .as_deref()
                .map(|l| format!(", {} ago", age(Some(l), now)))
                .unwrap_or_default();
            out.push_str(&format!(
                "{indent}{} {} (x{}{when}): {}\n",
                style.alarm("Warning"),
                w.reason,
                w.count,
                w.message
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::health::Health;
    use crate::tree::Warning;

    fn node(kind: &str, name: &str, health: Health, children: Vec<Node>) -> Node {
        Node {
            kind: kind.to_owned(),
            name: name.to_owned(),
            health,
            created: Some("2026-12-01T08:00:00Z".to_owned()),
            cause: false,
            warnings: Vec::new(),
            children,
        }
    }

    #[test]
    fn ages_read_like_kubectl() {
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap_or_default();
        assert_eq!(age(Some("2026-12-01T09:59:30Z"), now), "30s");
        assert_eq!(age(Some("2026-12-01T09:30:00Z"), now), "30m");
        assert_eq!(age(Some("2026-12-01T05:00:00Z"), now), "5h");
        assert_eq!(age(Some("2026-11-20T10:00:00Z"), now), "11d");
        assert_eq!(age(None, now), "<unknown>");
    }

    #[test]
    fn a_cause_gets_its_whole_message_and_warnings_under_it_without_colour_off_a_terminal() {
        let long = format!(
            "pods \"db-pgbouncer-x\" is forbidden: exceeded quota: tenant-quota, {}",
            "x".repeat(300)
        );
        let mut rs = node(
            "ReplicaSet",
            "db-pgbouncer-1",
            Health::failing("FailedCreate", long.clone()),
            vec![],
        );
        rs.cause = true;
        rs.warnings.push(Warning {
            reason: "FailedCreate".to_owned(),
            message: long.clone(),
            count: 7,
            last: Some("2026-12-01T09:59:00Z".to_owned()),
        });
        let deploy = node(
            "Deployment",
            "db-pgbouncer",
            Health::failing("FailedCreate", long.clone()),
            vec![rs],
        );
        let secret = node("Secret", "db-connection", Health::none(None), vec![]);
        let root = node(
            "Customer",
            "acme",
            Health::failing("NotReady", "database"),
            vec![deploy, secret],
        );
        let now: Timestamp = "2026-12-01T10:00:00Z".parse().unwrap_or_default();
        let text = tree(&root, now, Style { colour: false });
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("NAME"), "{text}");
        assert!(lines[1].starts_with("Customer/acme "), "{text}");
        assert!(lines[2].starts_with("├─Deployment/db-pgbouncer "), "{text}");
        assert!(lines[3].starts_with("│ └─ReplicaSet/db-pgbouncer-1 "), "{text}");
        assert_eq!(lines[4], format!("│       message: {long}"));
        assert_eq!(
            lines[5],
            format!("│       Warning FailedCreate (x7, 60s ago): {long}")
        );
        assert!(lines[6].starts_with("└─Secret/db-connection "), "{text}");
        assert!(!text.contains('\x1b'), "no colour off a terminal");
        // Only the cause carries its message: the Deployment's is the same text, once is enough.
        assert_eq!(text.matches("message:").count(), 1, "{text}");
    }
}
