//! Counts every request the shared client sends, by Kubernetes verb and resource, so the cost of the
//! operator (the benchmark's requests per tenant, "each kind is watched once") is read from `/metrics`;
//! and every answer that was a 429, so throttling by API Priority and Fairness shows before it slows
//! tenants down.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use ::http::{Method, Request, Response, StatusCode};
use berth_kit::metrics::{Metrics, RequestLabels};
use tower::{Layer, Service};

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

/// Counts 429 answers in `berth_api_throttled_total`. Installed below the retry layer, so each 429 the API
/// server sends is counted, the ones a retry then gets past included: those cost the operator time too,
/// and are the early sign. (The request layer above the retries counts each request once, so the two can
/// be compared only as rates, not as a share of one another.)
#[derive(Clone)]
pub struct ThrottledLayer(pub Arc<Metrics>);

impl<S> Layer<S> for ThrottledLayer {
    type Service = Throttled<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Throttled {
            inner,
            metrics: self.0.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Throttled<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

impl<S, B, RB> Service<Request<B>> for Throttled<S>
where
    S: Service<Request<B>, Response = Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<S::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        // Classified up front: the request is gone once the inner service has it.
        let labels = classify(req.method(), req.uri().path(), req.uri().query());
        let metrics = self.metrics.clone();
        let call = self.inner.call(req);
        Box::pin(async move {
            let response = call.await?;
            if response.status() == StatusCode::TOO_MANY_REQUESTS {
                metrics.api_throttled.get_or_create(&labels).inc();
            }
            Ok(response)
        })
    }
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

    /// Answers each request with the next status of `statuses`.
    fn api_server(
        statuses: Vec<u16>,
    ) -> impl Service<Request<()>, Response = Response<()>, Error = std::convert::Infallible, Future: Send + 'static>
    {
        let statuses = Arc::new(std::sync::Mutex::new(statuses.into_iter()));
        tower::service_fn(move |_req: Request<()>| {
            let status = statuses.lock().unwrap().next().unwrap_or(200);
            async move {
                let mut res = Response::new(());
                *res.status_mut() = StatusCode::from_u16(status).unwrap();
                Ok(res)
            }
        })
    }

    #[tokio::test]
    async fn every_429_answer_is_counted_by_verb_and_resource() {
        use tower::ServiceExt as _;
        let metrics = Arc::new(Metrics::default());
        let mut svc = ThrottledLayer(metrics.clone()).layer(api_server(vec![429, 200, 429, 503, 429]));
        let send = |method: Method, path: &str| Request::builder().method(method).uri(path).body(()).unwrap();
        for req in [
            send(Method::PATCH, "/apis/apps/v1/namespaces/t/deployments/pool"),
            send(Method::PATCH, "/apis/apps/v1/namespaces/t/deployments/pool"),
            send(Method::GET, "/api/v1/namespaces/t/secrets/db-credentials"),
            send(Method::GET, "/api/v1/namespaces/t/secrets/db-credentials"),
            send(Method::PATCH, "/apis/apps/v1/namespaces/t/deployments/pool"),
        ] {
            svc.ready().await.unwrap().call(req).await.unwrap();
        }
        let count = |verb, resource: &str| {
            metrics
                .api_throttled
                .get_or_create(&RequestLabels {
                    verb,
                    resource: resource.to_owned(),
                    scope: "namespace",
                })
                .get()
        };
        assert_eq!(count("patch", "deployments"), 2, "two of three patches met a 429");
        assert_eq!(count("get", "secrets"), 1, "a 503 is not throttling");
    }

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
