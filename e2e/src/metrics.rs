//! berth's HTTP port as the tests and the bench read it: a plain GET, and `/metrics` parsed into series
//! that are matched on whole label values.
//!
//! Hand-rolled on purpose: one local port, one request at a time, and the text format's few rules fit
//! in less code than a client and a parser crate would pull in.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// Long enough for a `/metrics` answer from an operator busy with a thousand tenants.
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// GET `path` on `127.0.0.1:port`: (status code, body).
pub fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    // HTTP/1.0: the server closes the connection after the body, so no length or chunking to decode.
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b.to_owned());
    Ok((code, body.unwrap_or_default()))
}

/// A metric name with its labels: one time series.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Series {
    pub name: String,
    pub labels: BTreeMap<String, String>,
}

impl Series {
    /// True when it is `name` and has every pair of `labels`, each value equal as a whole.
    #[must_use]
    pub fn matches(&self, name: &str, labels: &[(&str, &str)]) -> bool {
        self.name == name
            && labels
                .iter()
                .all(|(k, v)| self.labels.get(*k).is_some_and(|have| have == v))
    }
}

/// One reading of `/metrics`: the value of every series.
#[derive(Clone, Debug, Default)]
pub struct Scrape(BTreeMap<Series, f64>);

impl Scrape {
    /// Reads `/metrics` on `127.0.0.1:port`.
    pub fn fetch(port: u16) -> anyhow::Result<Self> {
        let (code, body) = get(port, "/metrics")?;
        if code != 200 {
            bail!("/metrics answered {code}");
        }
        Ok(Self::parse(&body))
    }

    /// Parses the Prometheus text format (OpenMetrics too); lines it cannot read are skipped.
    #[must_use]
    pub fn parse(text: &str) -> Self {
        Self(text.lines().filter_map(sample).collect())
    }

    pub fn iter(&self) -> impl Iterator<Item = (&Series, f64)> {
        self.0.iter().map(|(s, v)| (s, *v))
    }

    /// Sum over the series of `name` that carry every pair of `labels`.
    #[must_use]
    pub fn sum(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.iter()
            .filter(|(s, _)| s.matches(name, labels))
            .map(|(_, v)| v)
            .sum()
    }

    /// `self - before` for the series of `name`, summed by the values of `keys` (e.g. controller,
    /// verb); a series that did not exist before counts from zero.
    #[must_use]
    pub fn delta_by(&self, before: &Self, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
        let mut out = BTreeMap::new();
        for (series, value) in self.iter().filter(|(s, _)| s.name == name) {
            let old = before.0.get(series).copied().unwrap_or(0.0);
            let key = keys
                .iter()
                .map(|k| series.labels.get(*k).cloned().unwrap_or_default())
                .collect();
            *out.entry(key).or_insert(0.0) += value - old;
        }
        out
    }

    /// `self - before` over every series of `name`.
    #[must_use]
    pub fn delta_sum(&self, before: &Self, name: &str) -> f64 {
        self.delta_by(before, name, &[]).values().sum()
    }
}

/// `name{k="v",…} value [timestamp]`; `None` for comments, blank and malformed lines.
fn sample(line: &str) -> Option<(Series, f64)> {
    let line = line.trim();
    if line.starts_with('#') {
        return None;
    }
    let end = line.find(|c: char| c == '{' || c.is_whitespace())?;
    let (name, rest) = line.split_at(end);
    if name.is_empty() {
        return None;
    }
    let (labels, rest) = match rest.strip_prefix('{') {
        Some(inside) => labels(inside)?,
        None => (BTreeMap::new(), rest),
    };
    // What may follow the value (a timestamp, an OpenMetrics exemplar) is not needed.
    let value = rest.split_whitespace().next()?.parse().ok()?;
    let name = name.to_owned();
    Some((Series { name, labels }, value))
}

/// The pairs up to the closing brace, and the text after it.
fn labels(mut text: &str) -> Option<(BTreeMap<String, String>, &str)> {
    let mut labels = BTreeMap::new();
    loop {
        text = text.trim_start();
        if let Some(rest) = text.strip_prefix('}') {
            return Some((labels, rest));
        }
        let (key, rest) = text.split_once('=')?;
        let (value, rest) = quoted(rest.trim_start())?;
        labels.insert(key.trim().to_owned(), value);
        let rest = rest.trim_start();
        text = rest.strip_prefix(',').unwrap_or(rest);
    }
}

/// A double-quoted label value, unescaped, and the text after its closing quote. Quoting is why a
/// value may hold a comma or a brace, so the pairs cannot be split on those.
fn quoted(text: &str) -> Option<(String, &str)> {
    let inside = text.strip_prefix('"')?;
    let mut value = String::new();
    let mut chars = inside.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Some((value, &inside[i + 1..])),
            '\\' => match chars.next()?.1 {
                'n' => value.push('\n'),
                escaped => value.push(escaped),
            },
            c => value.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP berth_api_writes_total Writes to the API server.
# TYPE berth_api_writes_total counter
berth_api_writes_total{controller="customer",verb="apply"} 10
berth_api_writes_total{subcontroller="customer",verb="apply"} 100
berth_api_writes_total{controller="database",verb="status"} 3
berth_leader 1
berth_reconcile_duration_seconds_sum{controller="customer"} 1.5e-3
berth_build_info{version="1.0, beta",note="say \"hi\"\\"} 1 1700000000000
"#;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn label_values_match_whole() {
        let s = Scrape::parse(TEXT);
        let customer = [("controller", "customer")];
        // `subcontroller="customer"` contains `controller="customer"`, but it is another label.
        assert_eq!(s.sum("berth_api_writes_total", &customer), 10.0);
        assert_eq!(s.sum("berth_api_writes_total", &[]), 113.0);
        assert_eq!(
            s.sum(
                "berth_api_writes_total",
                &[("verb", "apply"), ("controller", "database")]
            ),
            0.0
        );
        assert_eq!(s.sum("berth_api_writes", &[]), 0.0, "names match whole too");
    }

    #[test]
    fn a_series_without_labels() {
        let s = Scrape::parse(TEXT);
        assert_eq!(s.sum("berth_leader", &[]), 1.0);
        assert_eq!(s.sum("berth_leader", &[("controller", "customer")]), 0.0);
    }

    #[test]
    fn a_value_with_an_exponent() {
        let s = Scrape::parse(TEXT);
        let v = s.sum(
            "berth_reconcile_duration_seconds_sum",
            &[("controller", "customer")],
        );
        assert!((v - 0.0015).abs() < 1e-12, "{v}");
        let inf = Scrape::parse("x_bucket{le=\"+Inf\"} +Inf\n");
        assert_eq!(inf.sum("x_bucket", &[("le", "+Inf")]), f64::INFINITY);
    }

    #[test]
    fn quoted_commas_and_escapes_stay_in_the_value() {
        let s = Scrape::parse(TEXT);
        let (series, value) = s.iter().find(|(s, _)| s.name == "berth_build_info").unwrap();
        assert_eq!(
            series.labels,
            labels(&[("version", "1.0, beta"), ("note", "say \"hi\"\\")])
        );
        assert_eq!(value, 1.0, "the timestamp is not the value");
    }

    #[test]
    fn help_type_and_broken_lines_are_skipped() {
        let s = Scrape::parse("# HELP a b 1\n# TYPE a gauge\n\na{x=\"1\" 2\n{x=\"1\"} 3\nb{} 4\nc 5 ms\n");
        let names: Vec<&str> = s.iter().map(|(s, _)| s.name.as_str()).collect();
        assert_eq!(names, ["b", "c"]);
    }

    #[test]
    fn deltas_by_label() {
        let before = Scrape::parse("berth_api_writes_total{controller=\"customer\",verb=\"apply\"} 2\n");
        let after = Scrape::parse(TEXT);
        let d = after.delta_by(&before, "berth_api_writes_total", &["controller", "verb"]);
        let key = |c: &str, v: &str| vec![c.to_owned(), v.to_owned()];
        assert_eq!(d[&key("customer", "apply")], 8.0);
        assert_eq!(d[&key("database", "status")], 3.0);
        assert_eq!(after.delta_sum(&before, "berth_api_writes_total"), 111.0);
    }
}
