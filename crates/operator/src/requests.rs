//! Counts every request the shared client sends, by Kubernetes verb and resource, so the cost of the
//! operator (the benchmark's requests per tenant, "each kind is watched once") is read from `/metrics`.

use std::sync::Arc;

use ::http::{Method, Request};
use berth_kit::metrics::{Metrics, RequestLabels};

/// A tower layer for `kube::client::ClientBuilder::with_layer`.
pub fn layer<B>(
    metrics: Arc<Metrics>,
) -> tower::util::MapRequestLayer<impl Fn(Request<B>) -> Request<B> + Clone> {
    tower::util::MapRequestLayer::new(move |req: Request<B>| {
        let r = classify(req.method(), req.uri().path(), req.uri().query());
        metrics.requests.get_or_create(&r).inc();
        req
    })
}

/// The Kubernetes verb, resource and scope of a request path such as
/// `/apis/berth.dev/v1alpha1/namespaces/t/databases/db/status`.
fn classify(method: &Method, path: &str, query: Option<&str>) -> RequestLabels {
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    // After "/api/v1" or "/apis/<group>/<version>".
    let rest = match segments.first() {
        Some(&"api") => segments.get(2..),
        Some(&"apis") => segments.get(3..),
        _ => None,
    }
    .unwrap_or_default();
    let (rest, scope) = match rest {
        // `namespaces/<ns>/<resource>...`; a bare `namespaces/<name>` is the Namespace itself.
        ["namespaces", _, more @ ..] if !more.is_empty() => (more, "namespace"),
        other => (other, "cluster"),
    };
    let resource = match rest {
        // A subresource is reported the way RBAC names it: `databases/status`.
        [resource, _, sub, ..] => format!("{resource}/{sub}"),
        [resource, ..] => (*resource).to_owned(),
        [] => "other".to_owned(),
    };
    let named = rest.len() > 1;
    let watch = query.is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    let verb = match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    };
    RequestLabels {
        verb,
        resource,
        scope,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn verbs_and_resources_of_the_requests_berth_sends() {
        let cases = [
            (
                Method::GET,
                "/apis/berth.dev/v1alpha1/databases",
                Some("limit=500"),
                ("list", "databases", "cluster"),
            ),
            (
                Method::GET,
                "/apis/berth.dev/v1alpha1/databases",
                Some("watch=true&resourceVersion=5"),
                ("watch", "databases", "cluster"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces/t",
                None,
                ("get", "namespaces", "cluster"),
            ),
            (
                Method::GET,
                "/api/v1/namespaces",
                None,
                ("list", "namespaces", "cluster"),
            ),
            (
                Method::GET,
                "/apis/batch/v1/namespaces/t/jobs",
                Some("labelSelector=a"),
                ("list", "jobs", "namespace"),
            ),
            (
                Method::PATCH,
                "/apis/apps/v1/namespaces/t/deployments/pool",
                Some("fieldManager=berth"),
                ("patch", "deployments", "namespace"),
            ),
            (
                Method::PATCH,
                "/apis/berth.dev/v1alpha1/namespaces/t/databases/db/status",
                None,
                ("patch", "databases/status", "namespace"),
            ),
            (
                Method::POST,
                "/api/v1/namespaces/t/secrets",
                None,
                ("create", "secrets", "namespace"),
            ),
            (
                Method::PUT,
                "/apis/coordination.k8s.io/v1/namespaces/berth-system/leases/berth-leader",
                None,
                ("update", "leases", "namespace"),
            ),
            (
                Method::DELETE,
                "/apis/batch/v1/namespaces/t/jobs/run-1",
                None,
                ("delete", "jobs", "namespace"),
            ),
            (
                Method::PATCH,
                "/apis/berth.dev/v1alpha1/customers/acme",
                None,
                ("patch", "customers", "cluster"),
            ),
            (Method::GET, "/version", None, ("list", "other", "cluster")),
        ];
        for (method, path, query, (verb, resource, scope)) in cases {
            let want = RequestLabels {
                verb,
                resource: resource.to_owned(),
                scope,
            };
            assert_eq!(classify(&method, path, query), want, "{method} {path}");
        }
    }
}
