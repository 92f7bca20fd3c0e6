//! The operator's `/metrics`, scraped over plain HTTP and parsed into series.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context as _, bail};

/// One scrape: `(metric name, sorted labels)` → value.
#[derive(Clone, Debug, Default)]
pub struct Scrape(pub BTreeMap<(String, Vec<(String, String)>), f64>);

/// GET `path` on 127.0.0.1:`port`: (status code, body).
pub fn get(port: u16, path: &str) -> anyhow::Result<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))?;
    stream.set_read_timeout(Some(Duration::from_secs(10)))?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let code = response
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .context("no HTTP status line")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    Ok((code, body))
}

pub fn scrape(port: u16) -> anyhow::Result<Scrape> {
    let (code, body) = get(port, "/metrics")?;
    if code != 200 {
        bail!("/metrics answered {code}");
    }
    Ok(parse(&body))
}

/// Parses Prometheus / OpenMetrics text (label values without escaped quotes, as berth's are).
pub fn parse(body: &str) -> Scrape {
    let mut out = BTreeMap::new();
    for line in body.lines().filter(|l| !l.starts_with('#') && !l.is_empty()) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((name, rest)) => (name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let mut labels: Vec<(String, String)> = labels
            .split(',')
            .filter_map(|kv| {
                let (k, v) = kv.split_once('=')?;
                Some((k.trim().to_owned(), v.trim().trim_matches('"').to_owned()))
            })
            .collect();
        labels.sort();
        out.insert((name.to_owned(), labels), value);
    }
    Scrape(out)
}

impl Scrape {
    /// `self - before` for the series of `name`, keyed by the values of `keys` (e.g. controller, verb).
    pub fn delta_by(&self, before: &Self, name: &str, keys: &[&str]) -> BTreeMap<Vec<String>, f64> {
        let mut out: BTreeMap<Vec<String>, f64> = BTreeMap::new();
        for ((metric, labels), value) in &self.0 {
            if metric != name {
                continue;
            }
            let old = before
                .0
                .get(&(metric.clone(), labels.clone()))
                .copied()
                .unwrap_or(0.0);
            let key = keys
                .iter()
                .map(|k| {
                    labels
                        .iter()
                        .find(|(lk, _)| lk == k)
                        .map(|(_, v)| v.clone())
                        .unwrap_or_default()
                })
                .collect();
            *out.entry(key).or_insert(0.0) += value - old;
        }
        out
    }

    /// Sum of `self - before` over every series of `name`.
    pub fn delta_sum(&self, before: &Self, name: &str) -> f64 {
        self.delta_by(before, name, &[]).values().sum()
    }

    /// Sum over every series of `name`.
    pub fn sum(&self, name: &str) -> f64 {
        self.0
            .iter()
            .filter(|((m, _), _)| m == name)
            .map(|(_, v)| v)
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deltas_by_label() {
        let before = parse("berth_api_writes_total{controller=\"customer\",verb=\"apply\"} 2\n");
        let after = parse(
            "# TYPE x counter\nberth_api_writes_total{controller=\"customer\",verb=\"apply\"} 10\nberth_api_writes_total{controller=\"database\",verb=\"status\"} 3\nberth_leader 1\n",
        );
        let d = after.delta_by(&before, "berth_api_writes_total", &["controller", "verb"]);
        assert_eq!(d[&vec!["customer".to_owned(), "apply".to_owned()]], 8.0);
        assert_eq!(d[&vec!["database".to_owned(), "status".to_owned()]], 3.0);
        assert_eq!(after.delta_sum(&before, "berth_api_writes_total"), 11.0);
        assert_eq!(after.sum("berth_leader"), 1.0);
    }
}
