//! A tenant's webhooks end to end: berth runs as a host process (so the receiver, a real HTTP server
//! written here, can listen on loopback; the operator is told to allow such targets), kwok plays the
//! tenant's pods. Every request the receiver gets has its Standard Webhooks signature checked against the
//! key in the tenant's Secret, independently of berth's own signing code.
//!
//! Needs the operator on this host: with `BERTH_E2E_OPERATOR=external` (berth in the cluster) the
//! receiver is out of its reach, and these tests say so and end.
#![allow(clippy::expect_used, clippy::unwrap_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use berth_api::{Customer, Scheduler, Webhook};
use berth_e2e::operator::{self, Operator};
use berth_e2e::{apply_yaml, delete_customers, eventually, prepare, unique, wait_for};
use k8s_openapi::api::core::v1::{Event as KubeEvent, Secret};
use kube::Client;
use kube::api::{Api, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

// ------------------------------------------------------------------------------------------ operator

const ALLOW: [&str; 4] = [
    "--webhooks-allow-http",
    "true",
    "--webhooks-allow-private-targets",
    "true",
];

/// The operator of this test binary; one test kills and replaces it.
fn operator() -> &'static Mutex<Operator> {
    static OP: OnceLock<Mutex<Operator>> = OnceLock::new();
    OP.get_or_init(|| Mutex::new(Operator::start("webhooks", &ALLOW)))
}

async fn setup() -> Option<Client> {
    if operator::external() {
        eprintln!(
            "berth runs in the cluster (BERTH_E2E_OPERATOR=external): its webhooks cannot reach this host"
        );
        return None;
    }
    let client = prepare().await;
    let _ = operator();
    Some(client)
}

// ------------------------------------------------------------------------------------------ receiver

/// One request the receiver got, and what it answered.
#[derive(Clone, Debug)]
struct Got {
    path: String,
    id: String,
    timestamp: i64,
    signature: String,
    body: Vec<u8>,
    answered: u16,
}

impl Got {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or(Value::Null)
    }

    fn kind(&self) -> String {
        self.json()["type"].as_str().unwrap_or_default().to_owned()
    }
}

/// An HTTP/1.1 endpoint on loopback: records every POST, answers `failing` of them with 500 first (or
/// every one while `refusing`), then 204.
struct Receiver {
    addr: SocketAddr,
    got: Arc<Mutex<Vec<Got>>>,
    failing: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start(failing: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("a loopback port");
        Self::serve(listener, Arc::default(), Arc::new(AtomicUsize::new(failing)))
    }

    /// Listens again on the port it had: a receiver back from an outage.
    async fn restart(addr: SocketAddr, got: Arc<Mutex<Vec<Got>>>) -> Self {
        let listener = TcpListener::bind(addr).await.expect("the receiver's port again");
        Self::serve(listener, got, Arc::new(AtomicUsize::new(0)))
    }

    fn serve(listener: TcpListener, got: Arc<Mutex<Vec<Got>>>, failing: Arc<AtomicUsize>) -> Self {
        let addr = listener.local_addr().expect("an address");
        let (g, f) = (got.clone(), failing.clone());
        let task = tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let (g, f) = (g.clone(), f.clone());
                tokio::spawn(async move {
                    let Some(mut got) = read_request(&mut conn).await else {
                        return;
                    };
                    let fail = f
                        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
                        .is_ok();
                    got.answered = if fail { 500 } else { 204 };
                    let status = if fail {
                        "500 Internal Server Error"
                    } else {
                        "204 No Content"
                    };
                    let reply =
                        format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
                    let _ = conn.write_all(reply.as_bytes()).await;
                    g.lock().unwrap().push(got);
                });
            }
        });
        Self {
            addr,
            got,
            failing,
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    fn all(&self) -> Vec<Got> {
        self.got.lock().unwrap().clone()
    }

    /// Accepted requests to `path`.
    fn accepted(&self, path: &str) -> Vec<Got> {
        self.all()
            .into_iter()
            .filter(|g| g.answered == 204 && g.path == format!("/{path}"))
            .collect()
    }

    fn kinds(&self, path: &str) -> BTreeSet<String> {
        self.accepted(path).iter().map(Got::kind).collect()
    }

    /// Stops listening: connections are refused until [`Receiver::restart`].
    fn stop(self) -> (SocketAddr, Arc<Mutex<Vec<Got>>>) {
        self.task.abort();
        (self.addr, self.got)
    }
}

/// Reads one request: the request line, headers and a `content-length` body.
async fn read_request(conn: &mut tokio::net::TcpStream) -> Option<Got> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    let head_end = loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let mut lines = head.lines();
    let path = lines.next()?.split(' ').nth(1)?.to_owned();
    let headers: BTreeMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_lowercase(), v.trim().to_owned()))
        .collect();
    let length: usize = headers.get("content-length")?.parse().ok()?;
    while buf.len() < head_end + length {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Some(Got {
        path,
        id: headers.get("webhook-id")?.clone(),
        timestamp: headers.get("webhook-timestamp")?.parse().ok()?,
        signature: headers.get("webhook-signature")?.clone(),
        body: buf[head_end..head_end + length].to_vec(),
        answered: 0,
    })
}

/// The Standard Webhooks check a receiver does: HMAC-SHA256 over `id.timestamp.body` with the key after
/// `whsec_`, base64, as one of the header's space-separated `v1,` signatures.
fn signed(key: &str, got: &Got) -> bool {
    let secret = STANDARD
        .decode(key.trim_start_matches("whsec_"))
        .expect("a base64 key");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &secret);
    let mut content = format!("{}.{}.", got.id, got.timestamp).into_bytes();
    content.extend_from_slice(&got.body);
    let expected = format!("v1,{}", STANDARD.encode(ring::hmac::sign(&key, &content)));
    got.signature.split(' ').any(|s| s == expected)
}

async fn signing_key(c: &Client, ns: &str) -> String {
    let secret = Api::<Secret>::namespaced(c.clone(), ns)
        .get("webhooks-signing")
        .await
        .expect("the tenant's signing Secret");
    let data = secret.data.expect("data");
    String::from_utf8(data["signingKey"].0.clone()).expect("text")
}

// ------------------------------------------------------------------------------------------ helpers

async fn customer(c: &Client, name: &str, features: &Value) -> Customer {
    let yaml = serde_json::to_string(&json!({
        "apiVersion": "berth.dev/v1alpha1",
        "kind": "Customer",
        "metadata": {"name": name},
        "spec": {"deletionPolicy": "Delete", "features": features},
    }))
    .unwrap();
    apply_yaml(&Api::<Customer>::all(c.clone()), &yaml)
        .await
        .expect("apply the Customer")
}

fn condition(c: &Customer, type_: &str) -> Option<(bool, String)> {
    let conds = c.status.as_ref()?.conditions.as_slice();
    berth_api::find_condition(conds, type_).map(|c| (c.status == "True", c.reason.clone()))
}

async fn events_of_webhook(c: &Client, ns: &str) -> Vec<String> {
    Api::<KubeEvent>::namespaced(c.clone(), ns)
        .list(&ListParams::default().fields("involvedObject.name=webhooks"))
        .await
        .map(|l| l.items.into_iter().filter_map(|e| e.reason).collect())
        .unwrap_or_default()
}

const MINUTE_AND_A_HALF: Duration = Duration::from_secs(150);

// ------------------------------------------------------------------------------------------ tests

#[tokio::test]
async fn signed_events_arrive_once_each_and_a_refused_delivery_comes_again_with_its_id() {
    let Some(c) = setup().await else { return };
    let r = Receiver::start(3).await;
    let name = unique("hooks");
    customer(
        &c,
        &name,
        &json!({
            "database": {"enabled": true, "storage": "1Gi"},
            "scheduler": {"enabled": true, "workers": 1, "workflows": [
                {"name": "tick", "schedule": "* * * * *", "image": "registry.example/berth-e2e/workflow:1", "backoffLimit": 0}
            ]},
            "webhooks": {"enabled": true, "endpoints": [
                {"name": "all", "url": r.url("all")},
                {"name": "failures", "url": r.url("failures"), "events": ["WorkflowRunFailed"]}
            ]}
        }),
    )
    .await;

    // The database becoming Ready, the tenant too, and a run that succeeded (kwok ends it after 1 s).
    eventually(
        MINUTE_AND_A_HALF,
        "DatabaseReady, CustomerReady and a run's success",
        || async {
            let kinds = r.kinds("all");
            [
                "dev.berth.DatabaseReady",
                "dev.berth.CustomerReady",
                "dev.berth.WorkflowRunSucceeded",
            ]
            .iter()
            .all(|k| kinds.contains(*k))
            .then_some(())
        },
    )
    .await;

    // From now on the runs fail (kwok ends their pods with exit code 1; backoffLimit 0).
    Api::<Scheduler>::namespaced(c.clone(), &name)
        .patch(
            "workflows",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {"pod.berth.dev/kwok-fail": "true"}}})),
        )
        .await
        .expect("make the next runs fail");
    eventually(MINUTE_AND_A_HALF, "a failed run at both endpoints", || async {
        let failed = "dev.berth.WorkflowRunFailed";
        (r.kinds("all").contains(failed) && r.kinds("failures").contains(failed)).then_some(())
    })
    .await;

    let key = signing_key(&c, &name).await;
    let all = r.all();
    let unsigned: Vec<&Got> = all.iter().filter(|g| !signed(&key, g)).collect();
    assert!(
        unsigned.is_empty(),
        "every request is signed with the tenant's key: {unsigned:?}"
    );

    // Exactly what each endpoint subscribed to.
    assert_eq!(
        r.kinds("failures"),
        BTreeSet::from(["dev.berth.WorkflowRunFailed".to_owned()])
    );

    // Refused deliveries came again, with the same id, and were then accepted.
    let refused: BTreeSet<String> = all
        .iter()
        .filter(|g| g.answered == 500)
        .map(|g| g.id.clone())
        .collect();
    assert!(
        !refused.is_empty(),
        "the receiver refused the first three requests"
    );
    let accepted: Vec<Got> = r.accepted("all");
    for id in &refused {
        assert!(
            accepted.iter().any(|g| &g.id == id),
            "{id} was refused and never came again: {all:?}"
        );
    }

    // One id per fact, in CloudEvents form. (Another test here SIGKILLs the operator, and a delivery just
    // before that may come once more; at least once allows it, and it carries the same id and body.)
    let mut per_id: BTreeMap<&str, Vec<&Got>> = BTreeMap::new();
    for g in &accepted {
        per_id.entry(g.id.as_str()).or_default().push(g);
    }
    for (id, gots) in &per_id {
        let body = gots[0].json();
        assert!(
            gots.iter().all(|g| g.body == gots[0].body),
            "{id} came with different bodies: {gots:?}"
        );
        assert_eq!(body["specversion"], "1.0");
        assert_eq!(body["id"], *id);
        assert_eq!(body["source"], format!("/customers/{name}"));
    }
    let facts: BTreeSet<String> = accepted
        .iter()
        .map(|g| {
            let b = g.json();
            format!("{} {} {}", b["type"], b["subject"], b["time"])
        })
        .collect();
    assert_eq!(facts.len(), per_id.len(), "one id per fact: {per_id:?}");

    // The failures and the recovery were visible.
    let hooks = Api::<Webhook>::namespaced(c.clone(), &name);
    let hook = hooks.get("webhooks").await.expect("the Webhook");
    let st = hook.status.expect("status");
    let ep = st
        .endpoints
        .iter()
        .find(|e| e.name == "all")
        .expect("endpoint all");
    assert!(
        ep.last_failure_reason
            .as_deref()
            .is_some_and(|r| r.contains("500")),
        "{ep:?}"
    );
    assert_eq!(ep.consecutive_failures, 0, "{ep:?}");
    let reasons = events_of_webhook(&c, &name).await;
    assert!(reasons.iter().any(|r| r == "EndpointFailing"), "{reasons:?}");
    assert!(reasons.iter().any(|r| r == "EndpointRecovered"), "{reasons:?}");
    let customers = Api::<Customer>::all(c.clone());
    wait_for(
        &customers,
        &name,
        Duration::from_secs(30),
        "WebhooksReady",
        |cu| condition(cu, "WebhooksReady").is_some_and(|(ok, _)| ok),
    )
    .await;
    delete_customers(&c, &[name]).await;
}

#[tokio::test]
async fn events_pending_when_the_operator_is_killed_are_delivered_by_the_next_one() {
    let Some(c) = setup().await else { return };
    let r = Receiver::start(usize::MAX).await;
    let name = unique("hooks-kill");
    customer(
        &c,
        &name,
        &json!({"webhooks": {"enabled": true, "endpoints": [{"name": "ops", "url": r.url("ops")}]}}),
    )
    .await;
    let hooks = Api::<Webhook>::namespaced(c.clone(), &name);
    wait_for(
        &hooks,
        "webhooks",
        MINUTE_AND_A_HALF,
        "a pending, failing delivery",
        |h| {
            h.status.as_ref().is_some_and(|s| {
                s.endpoints
                    .iter()
                    .any(|e| e.pending > 0 && e.consecutive_failures > 0)
            })
        },
    )
    .await;
    let refused: BTreeSet<String> = r.all().iter().map(|g| g.id.clone()).collect();

    // SIGKILL: nothing is flushed. The next operator finds what is pending in the cluster.
    {
        let mut op = operator().lock().unwrap();
        op.signal("KILL");
        assert!(op.wait(Duration::from_secs(10)).is_some(), "berth did not die");
        *op = Operator::start("webhooks", &ALLOW);
    }
    r.failing.store(0, Ordering::SeqCst);
    eventually(
        MINUTE_AND_A_HALF,
        "the refused events, delivered after the restart",
        || async {
            let accepted: BTreeSet<String> = r.accepted("ops").iter().map(|g| g.id.clone()).collect();
            refused.is_subset(&accepted).then_some(())
        },
    )
    .await;
    let key = signing_key(&c, &name).await;
    assert!(r.all().iter().all(|g| signed(&key, g)), "every request is signed");
    delete_customers(&c, &[name]).await;
}

#[tokio::test]
async fn an_outage_longer_than_the_retry_window_shows_in_status_and_deliveries_resume() {
    let Some(c) = setup().await else { return };
    let r = Receiver::start(0).await;
    let (addr, got) = r.stop();
    let name = unique("hooks-down");
    let url = format!("http://{addr}/ops");
    customer(
        &c,
        &name,
        &json!({"webhooks": {"enabled": true, "retryForSeconds": 10, "endpoints": [{"name": "ops", "url": url}]}}),
    )
    .await;

    // Connection refused until the event is older than the window: given up, and the tenant shows it.
    let customers = Api::<Customer>::all(c.clone());
    let hooks = Api::<Webhook>::namespaced(c.clone(), &name);
    wait_for(
        &hooks,
        "webhooks",
        MINUTE_AND_A_HALF,
        "an event given up on",
        |h| {
            h.status.as_ref().is_some_and(|s| {
                s.endpoints
                    .iter()
                    .any(|e| e.expired > 0 && e.consecutive_failures > 0)
            })
        },
    )
    .await;
    let down = wait_for(
        &customers,
        &name,
        Duration::from_secs(60),
        "WebhooksReady False",
        |cu| condition(cu, "WebhooksReady").is_some_and(|(ok, _)| !ok),
    )
    .await;
    let (_, reason) = condition(&down, "WebhooksReady").unwrap();
    assert_eq!(reason, "EndpointFailing");

    // Back, and something new happens: it arrives, and the endpoint is well again.
    let r = Receiver::restart(addr, got).await;
    customers
        .patch(
            &name,
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .expect("suspend the tenant");
    eventually(
        MINUTE_AND_A_HALF,
        "CustomerSuspended after the outage",
        || async {
            r.kinds("ops")
                .contains("dev.berth.CustomerSuspended")
                .then_some(())
        },
    )
    .await;
    assert!(
        !r.kinds("ops").contains("dev.berth.CustomerReady"),
        "the event given up on is not sent late"
    );
    wait_for(
        &customers,
        &name,
        MINUTE_AND_A_HALF,
        "WebhooksReady True again",
        |cu| condition(cu, "WebhooksReady").is_some_and(|(ok, _)| ok),
    )
    .await;
    delete_customers(&c, &[name]).await;
}
