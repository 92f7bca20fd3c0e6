//! One delivery attempt: a signed POST to one endpoint at one address, reduced to what the caller must
//! do next.
//!
//! The connection goes to the address [`crate::target::resolve`] checked, while TLS verification, SNI
//! and the `Host` header use the URL's host name: the certificate must still be valid for the name the
//! tenant wrote, but no second lookup can move the connection elsewhere. Redirects are not followed
//! (their target was never checked), and every failure short of an answer is a reason to retry, so a
//! caller needs no error handling beyond the three [`Outcome`]s. Each attempt uses a connection of its
//! own: deliveries to one endpoint are rare enough that keeping connections open would buy little.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header::{CONNECTION, CONTENT_TYPE, HOST, USER_AGENT};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::pki_types::pem::PemObject as _;
use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};
use tokio_rustls::rustls::{ClientConfig, RootCertStore, crypto};

use crate::sign::{self, Key};
use crate::target::{Host, ParsedUrl};

/// The content type of a CloudEvent in structured mode.
pub const CONTENT_TYPE_CLOUDEVENTS: &str = "application/cloudevents+json";
/// Identifies berth to receivers, with its version for their bug reports.
pub const USER_AGENT_VALUE: &str = concat!("berth-webhooks/", env!("CARGO_PKG_VERSION"));
/// The Standard Webhooks headers.
pub const ID_HEADER: &str = "webhook-id";
pub const TIMESTAMP_HEADER: &str = "webhook-timestamp";
pub const SIGNATURE_HEADER: &str = "webhook-signature";

/// What the attempt means for the delivery.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The endpoint accepted the event (any 2xx status, kept for status and metrics).
    Delivered(u16),
    /// The endpoint answered 410 Gone: it asks not to be called again, and the caller should disable it.
    Gone,
    /// Anything else; try again later. The reason is for status and logs (it holds no secrets).
    Retry { reason: String },
}

impl Outcome {
    /// The outcome of an answer with this status.
    #[must_use]
    pub fn from_status(status: StatusCode) -> Self {
        if status.is_success() {
            Self::Delivered(status.as_u16())
        } else if status == StatusCode::GONE {
            Self::Gone
        } else if status.is_redirection() {
            Self::Retry {
                reason: format!("endpoint answered {status}; berth does not follow redirects"),
            }
        } else {
            Self::Retry {
                reason: format!("endpoint answered {status}"),
            }
        }
    }
}

/// How to verify the servers berth talks to: the public web's roots, or only an endpoint's own CA.
/// Building one parses certificates, so a caller keeps the public one for all endpoints and builds one
/// per endpoint only when it has a CA bundle.
#[derive(Clone, Debug)]
pub struct Client {
    tls: Arc<ClientConfig>,
}

impl Client {
    /// A client that trusts the Mozilla root program (as shipped in `webpki-roots`), or, when
    /// `ca_bundle` is given, only the certificates in that PEM text: an endpoint with a private CA
    /// should not also accept a publicly issued certificate for its name.
    ///
    /// # Errors
    /// When the bundle is not PEM, holds no certificate, or holds one that cannot be a trust anchor.
    pub fn new(ca_bundle: Option<&str>) -> Result<Self, String> {
        let mut roots = RootCertStore::empty();
        match ca_bundle {
            None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
            Some(pem) => {
                for (n, cert) in CertificateDer::pem_slice_iter(pem.as_bytes()).enumerate() {
                    let cert = cert.map_err(|e| format!("caBundle is not valid PEM: {e}"))?;
                    roots
                        .add(cert)
                        .map_err(|e| format!("caBundle certificate {} is not usable as a CA: {e}", n + 1))?;
                }
                if roots.is_empty() {
                    return Err(
                        "caBundle holds no certificate (expected -----BEGIN CERTIFICATE----- blocks)"
                            .to_owned(),
                    );
                }
            }
        }
        let mut config = ClientConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("cannot configure TLS: {e}"))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Self {
            tls: Arc::new(config),
        })
    }
}

/// A signed event body, ready to be posted (again: a retry sends the same message with a fresh
/// timestamp and signature, through [`Message::new`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Message {
    /// The event's id, which stays the same across retries so receivers can deduplicate.
    pub id: String,
    /// When this attempt was signed, in unix seconds; receivers refuse stale ones.
    pub timestamp: i64,
    pub body: Bytes,
    signature: String,
}

impl Message {
    /// Signs `body` for sending at `timestamp`.
    #[must_use]
    pub fn new(key: &Key, id: &str, timestamp: i64, body: impl Into<Bytes>) -> Self {
        let body = body.into();
        Self {
            signature: sign::sign(key, id, timestamp, &body),
            id: id.to_owned(),
            timestamp,
            body,
        }
    }

    /// The `webhook-signature` header value.
    #[must_use]
    pub fn signature(&self) -> &str {
        &self.signature
    }
}

/// POSTs `message` to `endpoint`, connecting to `addr` (which the caller has checked), and waits at
/// most `timeout` for the connection, the TLS handshake and the response's status together.
pub async fn post(
    client: &Client,
    endpoint: &ParsedUrl,
    addr: SocketAddr,
    message: &Message,
    timeout: Duration,
) -> Outcome {
    match tokio::time::timeout(timeout, attempt(client, endpoint, addr, message)).await {
        Ok(Ok(status)) => Outcome::from_status(status),
        Ok(Err(reason)) => Outcome::Retry { reason },
        Err(_) => Outcome::Retry {
            reason: format!("timeout: {addr} did not answer within {timeout:?}"),
        },
    }
}

async fn attempt(
    client: &Client,
    endpoint: &ParsedUrl,
    addr: SocketAddr,
    message: &Message,
) -> Result<StatusCode, String> {
    let request = request(endpoint, message)?;
    let tcp = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    if !endpoint.tls {
        return send(TokioIo::new(tcp), request).await;
    }
    let name = match &endpoint.host {
        Host::Domain(name) => ServerName::try_from(name.clone())
            .map_err(|e| format!("{name:?} cannot be a TLS server name: {e}"))?,
        Host::Ip(ip) => ServerName::IpAddress((*ip).into()),
    };
    let tls = TlsConnector::from(Arc::clone(&client.tls))
        .connect(name, tcp)
        .await
        .map_err(|e| {
            format!(
                "TLS handshake with {} at {addr} failed: {e}",
                endpoint.authority()
            )
        })?;
    send(TokioIo::new(tls), request).await
}

fn request(endpoint: &ParsedUrl, message: &Message) -> Result<Request<Full<Bytes>>, String> {
    Request::builder()
        .method(Method::POST)
        .uri(endpoint.path_and_query.as_str())
        .header(HOST, endpoint.authority())
        .header(CONTENT_TYPE, CONTENT_TYPE_CLOUDEVENTS)
        .header(USER_AGENT, USER_AGENT_VALUE)
        .header(CONNECTION, "close")
        .header(ID_HEADER, message.id.as_str())
        .header(TIMESTAMP_HEADER, message.timestamp)
        .header(SIGNATURE_HEADER, message.signature.as_str())
        .body(Full::new(message.body.clone()))
        .map_err(|e| format!("cannot build the request: {e}"))
}

/// Sends the request and returns the response's status, ignoring its body.
async fn send<T>(io: TokioIo<T>, request: Request<Full<Bytes>>) -> Result<StatusCode, String>
where
    T: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) = hyper::client::conn::http1::handshake(io)
        .await
        .map_err(|e| format!("HTTP handshake failed: {e}"))?;
    // hyper moves the bytes in a task of its own; the guard ends that task, and so closes the
    // connection, however this attempt ends (answered, failed, or dropped by the timeout).
    let _connection = AbortOnDrop(tokio::spawn(async move {
        let _ = connection.await;
    }));
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request failed: {e}"))?;
    Ok(response.status())
}

struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Instant;

    use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;
    use tokio_rustls::TlsAcceptor;
    use tokio_rustls::rustls::ServerConfig;
    use tokio_rustls::rustls::pki_types::PrivateKeyDer;

    use super::*;
    use crate::target::{Policy, check_url};

    const TIMEOUT: Duration = Duration::from_secs(5);

    /// The reason of a [`Outcome::Retry`]; empty for the other outcomes, so a `contains` check fails.
    fn retry_reason(outcome: &Outcome) -> &str {
        match outcome {
            Outcome::Retry { reason } => reason,
            Outcome::Delivered(_) | Outcome::Gone => "",
        }
    }

    /// What the test server saw.
    #[derive(Debug)]
    struct Received {
        request_line: String,
        headers: BTreeMap<String, String>,
        body: Vec<u8>,
        /// The SNI the client sent (https only).
        sni: Option<String>,
    }

    /// Reads one request (head, then `content-length` bytes of body) and writes `response`.
    async fn answer<S: AsyncRead + AsyncWrite + Unpin>(stream: &mut S, response: &str) -> Received {
        let mut buf = Vec::new();
        let head_end = loop {
            if let Some(at) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break at;
            }
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed before sending a request");
            buf.extend_from_slice(&chunk[..n]);
        };
        let head = String::from_utf8(buf[..head_end].to_vec()).unwrap();
        let mut lines = head.split("\r\n");
        let request_line = lines.next().unwrap().to_owned();
        let headers: BTreeMap<String, String> = lines
            .map(|l| l.split_once(": ").unwrap())
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_owned()))
            .collect();
        let len: usize = headers["content-length"].parse().unwrap();
        let mut body = buf[head_end + 4..].to_vec();
        while body.len() < len {
            let mut chunk = [0u8; 1024];
            let n = stream.read(&mut chunk).await.unwrap();
            assert!(n > 0, "client closed mid-body");
            body.extend_from_slice(&chunk[..n]);
        }
        stream.write_all(response.as_bytes()).await.unwrap();
        stream.shutdown().await.unwrap();
        Received {
            request_line,
            headers,
            body,
            sni: None,
        }
    }

    /// A plain HTTP server on 127.0.0.1 that answers one request with `response`.
    async fn http_server(response: String) -> (SocketAddr, JoinHandle<Received>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (mut stream, _) = listener.accept().await.unwrap();
            answer(&mut stream, &response).await
        });
        (addr, task)
    }

    fn status(code: u16, text: &str) -> String {
        format!("HTTP/1.1 {code} {text}\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok")
    }

    fn open() -> Policy {
        Policy {
            allow_http: true,
            allow_private: true,
            ..Policy::default()
        }
    }

    fn message(key: &Key) -> Message {
        Message::new(
            key,
            "evt_0123",
            1_700_000_000,
            br#"{"specversion":"1.0"}"#.to_vec(),
        )
    }

    async fn post_http(response: &str) -> (Outcome, Received) {
        let (addr, server) = http_server(response.to_owned()).await;
        let endpoint = check_url(&open(), &format!("http://127.0.0.1:{}/in?x=1", addr.port())).unwrap();
        let client = Client::new(None).unwrap();
        let key = Key::generate().unwrap();
        let outcome = post(&client, &endpoint, addr, &message(&key), TIMEOUT).await;
        (outcome, server.await.unwrap())
    }

    #[tokio::test]
    async fn a_2xx_is_delivered_with_verifiable_standard_webhooks_headers() {
        let (addr, server) = http_server(status(204, "No Content")).await;
        let endpoint = check_url(&open(), &format!("http://127.0.0.1:{}/in?x=1", addr.port())).unwrap();
        let key = Key::generate().unwrap();
        let sent = message(&key);
        let outcome = post(&Client::new(None).unwrap(), &endpoint, addr, &sent, TIMEOUT).await;
        assert_eq!(outcome, Outcome::Delivered(204));

        let got = server.await.unwrap();
        assert_eq!(got.request_line, "POST /in?x=1 HTTP/1.1");
        let h = &got.headers;
        assert_eq!(h["host"], format!("127.0.0.1:{}", addr.port()));
        assert_eq!(h["content-type"], "application/cloudevents+json");
        assert!(h["user-agent"].starts_with("berth-webhooks/"), "{h:?}");
        assert_eq!(got.body, sent.body.as_ref());
        let timestamp: i64 = h["webhook-timestamp"].parse().unwrap();
        assert_eq!((h["webhook-id"].as_str(), timestamp), ("evt_0123", 1_700_000_000));
        assert!(sign::verify(
            &key,
            &h["webhook-id"],
            timestamp,
            &got.body,
            &h["webhook-signature"]
        ));
        assert!(!sign::verify(
            &Key::generate().unwrap(),
            "evt_0123",
            timestamp,
            &got.body,
            &h["webhook-signature"]
        ));
    }

    #[tokio::test]
    async fn a_5xx_is_retried_and_410_is_gone() {
        let (outcome, _) = post_http("HTTP/1.1 500 Internal Server Error\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(
            outcome,
            Outcome::Retry {
                reason: "endpoint answered 500 Internal Server Error".into()
            }
        );
        let (outcome, _) = post_http("HTTP/1.1 410 Gone\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(outcome, Outcome::Gone);
        let (outcome, _) = post_http("HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n").await;
        assert_eq!(outcome, Outcome::Delivered(200));
        let (outcome, _) =
            post_http("HTTP/1.1 302 Found\r\nlocation: http://10.0.0.1/\r\ncontent-length: 0\r\n\r\n").await;
        assert!(retry_reason(&outcome).contains("redirects"), "{outcome:?}");
    }

    #[test]
    fn statuses_map_to_outcomes() {
        assert_eq!(Outcome::from_status(StatusCode::OK), Outcome::Delivered(200));
        assert_eq!(
            Outcome::from_status(StatusCode::ACCEPTED),
            Outcome::Delivered(202)
        );
        assert_eq!(Outcome::from_status(StatusCode::GONE), Outcome::Gone);
        for code in [301, 400, 404, 429, 503] {
            let outcome = Outcome::from_status(StatusCode::from_u16(code).unwrap());
            assert!(retry_reason(&outcome).contains(&code.to_string()), "{outcome:?}");
        }
    }

    #[tokio::test]
    async fn a_silent_server_is_a_timeout_within_the_limit() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _silent = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(stream);
        });
        let endpoint = check_url(&open(), &format!("http://127.0.0.1:{}/", addr.port())).unwrap();
        let key = Key::generate().unwrap();
        let started = Instant::now();
        let limit = Duration::from_millis(300);
        let outcome = post(
            &Client::new(None).unwrap(),
            &endpoint,
            addr,
            &message(&key),
            limit,
        )
        .await;
        let took = started.elapsed();
        assert!(retry_reason(&outcome).contains("timeout"), "{outcome:?}");
        assert!(took >= limit && took < limit + Duration::from_secs(2), "{took:?}");
    }

    #[tokio::test]
    async fn a_refused_connection_is_retried() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let endpoint = check_url(&open(), &format!("http://127.0.0.1:{}/", addr.port())).unwrap();
        let key = Key::generate().unwrap();
        let outcome = post(
            &Client::new(None).unwrap(),
            &endpoint,
            addr,
            &message(&key),
            TIMEOUT,
        )
        .await;
        assert!(retry_reason(&outcome).contains("cannot connect"), "{outcome:?}");
    }

    /// A CA and a certificate it signed for `localhost`, as PEM (CA) and rustls server config (leaf).
    fn pki() -> (String, Arc<ServerConfig>) {
        let ca_key = KeyPair::generate().unwrap();
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name.push(DnType::CommonName, "tern test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::DigitalSignature];
        let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
        let issuer = Issuer::new(ca, ca_key);

        let leaf_key = KeyPair::generate().unwrap();
        let leaf = CertificateParams::new(vec!["localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &issuer)
            .unwrap();
        let config = ServerConfig::builder_with_provider(Arc::new(crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                PrivateKeyDer::Pkcs8(leaf_key.serialize_der().into()),
            )
            .unwrap();
        (ca_pem, Arc::new(config))
    }

    /// An https server on 127.0.0.1 that answers one request with 202, or reports the failed handshake.
    async fn https_server(config: Arc<ServerConfig>) -> (SocketAddr, JoinHandle<Result<Received, String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let (tcp, _) = listener.accept().await.unwrap();
            let mut tls = TlsAcceptor::from(config)
                .accept(tcp)
                .await
                .map_err(|e| e.to_string())?;
            let sni = tls.get_ref().1.server_name().map(str::to_owned);
            let mut got = answer(&mut tls, &status(202, "Accepted")).await;
            got.sni = sni;
            Ok(got)
        });
        (addr, task)
    }

    /// `https://localhost:<port>/hook`, checked: the URL both https tests dial.
    fn localhost_hook(addr: SocketAddr) -> ParsedUrl {
        check_url(
            &Policy::default(),
            &format!("https://localhost:{}/hook", addr.port()),
        )
        .unwrap()
    }

    #[tokio::test]
    async fn https_with_the_endpoint_ca_is_delivered_to_the_checked_address_under_the_url_name() {
        let (ca_pem, config) = pki();
        let (addr, server) = https_server(config).await;
        // The URL names `localhost`; the connection goes to the address given, as after `resolve`.
        let endpoint = localhost_hook(addr);
        let client = Client::new(Some(&ca_pem)).unwrap();
        let key = Key::generate().unwrap();
        let outcome = post(&client, &endpoint, addr, &message(&key), TIMEOUT).await;
        assert_eq!(outcome, Outcome::Delivered(202));
        let got = server.await.unwrap().unwrap();
        assert_eq!(got.sni.as_deref(), Some("localhost"));
        assert_eq!(got.headers["host"], format!("localhost:{}", addr.port()));
        assert_eq!(got.request_line, "POST /hook HTTP/1.1");
        let timestamp: i64 = got.headers["webhook-timestamp"].parse().unwrap();
        assert!(sign::verify(
            &key,
            &got.headers["webhook-id"],
            timestamp,
            &got.body,
            &got.headers["webhook-signature"]
        ));
    }

    #[tokio::test]
    async fn https_without_the_ca_is_a_certificate_failure() {
        let (_, config) = pki();
        let (addr, server) = https_server(config).await;
        let endpoint = localhost_hook(addr);
        let key = Key::generate().unwrap();
        let outcome = post(
            &Client::new(None).unwrap(),
            &endpoint,
            addr,
            &message(&key),
            TIMEOUT,
        )
        .await;
        let reason = retry_reason(&outcome);
        assert!(
            reason.contains("TLS") && reason.contains("certificate"),
            "{outcome:?}"
        );
        assert!(server.await.unwrap().is_err(), "the server saw no request");
    }

    #[tokio::test]
    async fn https_for_another_name_is_a_certificate_failure() {
        let (ca_pem, config) = pki();
        let (addr, _server) = https_server(config).await;
        let endpoint = check_url(
            &Policy::default(),
            &format!("https://hooks.example.com:{}/", addr.port()),
        )
        .unwrap();
        let key = Key::generate().unwrap();
        let client = Client::new(Some(&ca_pem)).unwrap();
        let outcome = post(&client, &endpoint, addr, &message(&key), TIMEOUT).await;
        assert!(retry_reason(&outcome).contains("certificate"), "{outcome:?}");
    }

    #[test]
    fn bad_ca_bundles_are_refused() {
        let err = Client::new(Some("")).unwrap_err();
        assert!(err.contains("no certificate"), "{err}");
        let err = Client::new(Some(
            "-----BEGIN CERTIFICATE-----\nnot base64!\n-----END CERTIFICATE-----\n",
        ))
        .unwrap_err();
        assert!(err.contains("caBundle"), "{err}");
        let (ca_pem, _) = pki();
        assert!(Client::new(Some(&ca_pem)).is_ok());
    }

    #[test]
    fn messages_carry_a_signature_of_their_own_content() {
        let key = Key::generate().unwrap();
        let m = message(&key);
        assert!(sign::verify(&key, &m.id, m.timestamp, &m.body, m.signature()));
        let later = Message::new(&key, &m.id, m.timestamp + 30, m.body.clone());
        assert_ne!(later.signature(), m.signature(), "a retry is signed afresh");
    }
}
