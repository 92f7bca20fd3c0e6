//! The client of the per-namespace Secret watches (`berth_kit::namespaced`). kube's own client speaks
//! HTTP/1.1, where a watch holds a TLS connection for as long as it runs: a thousand tenants meant a
//! thousand connections, each with its buffers in berth and in the API server. This client offers HTTP/2
//! (and falls back to HTTP/1.1 where the server declines it), so the watches of one client share one
//! connection; `berth_kit::connections` bounds how many.
//!
//! Only watches use it, and watches only read: it has none of the controllers' client's write fence,
//! retries or in-flight bound, but the same credentials, headers and request metrics.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use berth_kit::metrics::{Metrics, VersionLabel};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use kube::client::ConfigExt;
use tower::ServiceBuilder;

/// How often an idle connection is pinged, and how long an answer may take before the connection (and
/// every watch on it, which then starts again) is given up: one dead connection must not silence a hundred
/// watches until TCP notices.
const KEEP_ALIVE: Duration = Duration::from_secs(30);
const KEEP_ALIVE_TIMEOUT: Duration = Duration::from_secs(10);

/// A client with its own connection pool (so its own HTTP/2 connection).
pub fn build(config: &kube::Config, metrics: &Arc<Metrics>) -> anyhow::Result<kube::Client> {
    let tls = config
        .rustls_client_config()
        .context("TLS settings of the watch client")?;
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_connect_timeout(config.connect_timeout);
    let builder = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http();
    let builder = match &config.tls_server_name {
        Some(name) => builder.with_server_name_resolver(hyper_rustls::FixedServerNameResolver::new(
            name.clone().try_into().context("tls-server-name")?,
        )),
        None => builder,
    };
    let answers = metrics.clone();
    let https = builder.enable_all_versions().wrap_connector(http);
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .http2_keep_alive_interval(KEEP_ALIVE)
        .http2_keep_alive_timeout(KEEP_ALIVE_TIMEOUT)
        .http2_keep_alive_while_idle(true)
        .build(https);
    let service = ServiceBuilder::new()
        .layer(crate::requests::layer(metrics.clone()))
        .map_response(move |res: http::Response<_>| {
            let version = VersionLabel {
                version: format!("{:?}", res.version()),
            };
            answers.watch_responses.get_or_create(&version).inc();
            res
        })
        .service(client);
    let service = crate::stack::kube_layers(config, service).context("the watch client")?;
    Ok(kube::Client::new(service, config.default_namespace.clone()))
}
