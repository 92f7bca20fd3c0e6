//! kube's request layers (base URI, credentials, extra headers) over an HTTP client, for the clients
//! berth assembles itself: kube's builder takes neither a connector (the write fence's) nor HTTP/2 (the
//! Secret watches').

use anyhow::Context as _;
use http::{Request, Response};
use kube::client::{Body, ConfigExt as _};
use tower::util::BoxService;
use tower::{BoxError, Service, ServiceBuilder};

/// `http` behind the layers kube's own builder puts in front of its client, in the same order.
///
/// # Errors
/// When the credentials or headers of `config` cannot be used.
pub fn kube_layers<S, B>(
    config: &kube::Config,
    http: S,
) -> anyhow::Result<BoxService<Request<Body>, Response<B>, BoxError>>
where
    S: Service<Request<Body>, Response = Response<B>> + Clone + Send + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
{
    let service = ServiceBuilder::new()
        .layer(config.base_uri_layer())
        .option_layer(config.auth_layer().context("credentials of the client")?)
        .layer(config.extra_headers_layer().context("headers of the client")?)
        .map_err(Into::<BoxError>::into)
        .service(http);
    Ok(BoxService::new(service))
}
