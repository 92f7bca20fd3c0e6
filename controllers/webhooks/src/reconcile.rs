//! One reconcile of a Webhook: load the tenant → derive its events (pure) → per endpoint, send what is
//! due (pure plan, real POSTs) → status (what was delivered is recorded there) → requeue at the next retry.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use berth_api::{Customer, Database, EndpointStatus, Scheduler, Webhook, WebhookEndpoint, WebhookStatus};
use berth_kit::conditions::{READY, Verdict, conditions, now};
use berth_kit::labels::managed_selector;
use berth_kit::metrics::DeliveryLabels;
use berth_kit::runtime::Reconciler;
use berth_kit::{Context, Error, Result};
use futures::future::join_all;
use jiff::Timestamp;
use k8s_openapi::api::batch::v1::Job;
use kube::api::{Api, ListParams};
use kube::runtime::controller::Action;
use kube::runtime::events::EventType as Severity;
use kube::{Resource, ResourceExt};

use crate::deliver::{self, Client, Message, Outcome};
use crate::derive::{self, Tenant};
use crate::event::Event;
use crate::plan::{self, Due};
use crate::retry::{self, Backoff};
use crate::{key, target};

/// Deliveries in flight to one endpoint at once.
const IN_FLIGHT: usize = 4;
/// One attempt: connect, TLS, request and answer together.
const TIMEOUT: Duration = Duration::from_secs(10);

/// The Webhook controller's side of the runtime.
pub struct Webhooks {
    pub kit: Arc<Context>,
    /// Trusts the public roots; endpoints with a `caBundle` get their own.
    pub public: Client,
    /// The status this process last wrote, by Webhook UID. The cache a reconcile is handed can lag behind
    /// that write (a Job finishing right after a delivery wakes the Webhook before the watch brings its new
    /// status), and a stale status would send what was just delivered again. A new leader starts empty and
    /// reads what its predecessor wrote.
    pub written: std::sync::Mutex<std::collections::HashMap<String, WebhookStatus>>,
}

impl Reconciler for Webhooks {
    type K = Webhook;

    fn kit(&self) -> &Context {
        &self.kit
    }

    fn api(&self, hook: &Webhook) -> Api<Webhook> {
        self.kit.api(&hook.namespace().unwrap_or_default())
    }

    async fn reconcile(&self, hook: Arc<Webhook>) -> Result<Action> {
        let Some(namespace) = hook.namespace() else {
            return Err(Error::InvalidSpec("a Webhook must have a namespace".to_owned()));
        };
        if hook.meta().deletion_timestamp.is_some() {
            self.remember(&hook, None);
            return Ok(Action::await_change());
        }
        self.converge(&hook, &namespace).await
    }
}

impl Webhooks {
    /// What this process last wrote for `hook`, else what the cache shows.
    fn recorded(&self, hook: &Webhook) -> Option<WebhookStatus> {
        let uid = hook.uid()?;
        let written = self.written.lock().ok()?.get(&uid).cloned();
        written.or_else(|| hook.status.clone())
    }

    fn remember(&self, hook: &Webhook, status: Option<WebhookStatus>) {
        let (Some(uid), Ok(mut written)) = (hook.uid(), self.written.lock()) else {
            return;
        };
        match status {
            Some(s) => written.insert(uid, s),
            None => written.remove(&uid),
        };
    }

    fn policy(&self) -> target::Policy {
        target::Policy {
            allow_http: self.kit.settings.webhooks_allow_http,
            allow_private: self.kit.settings.webhooks_allow_private,
            denied: Vec::new(),
        }
    }

    async fn converge(&self, hook: &Webhook, namespace: &str) -> Result<Action> {
        let ctx = &self.kit;
        // Load.
        let key = key::ensure(ctx, hook, namespace).await?;
        let Some(customer) = customer(ctx, hook).await? else {
            return Ok(Action::await_change());
        };
        let databases = ctx
            .api::<Database>(namespace)
            .list(&ListParams::default())
            .await?
            .items;
        let schedulers = ctx
            .api::<Scheduler>(namespace)
            .list(&ListParams::default())
            .await?
            .items;
        let runs = runs(ctx, namespace, &schedulers).await?;

        // Derive, and add what is held from earlier reconciles.
        let recorded = self.recorded(hook);
        let old = recorded.as_ref();
        let derived = derive::events(&Tenant {
            customer: &customer,
            databases: &databases,
            schedulers: &schedulers,
            runs: &runs,
        });
        let held = old.map(|s| s.held.as_slice()).unwrap_or_default();
        let events = plan::with_held(derived, held, &derive::source(&customer));
        let current: BTreeSet<&str> = events.iter().map(|e| e.id.as_str()).collect();

        // Send, endpoint by endpoint.
        let mut owed: BTreeSet<String> = BTreeSet::new();
        let retry_for = Duration::from_secs(u64::try_from(hook.spec.retry_for_seconds).unwrap_or(0));
        let now_ts = now().0;
        let mut endpoints = Vec::with_capacity(hook.spec.endpoints.len());
        let mut problems = Vec::new();
        let mut wake: Option<Timestamp> = None;
        let mut more = false;
        let start = match (
            old.and_then(|s| s.observed_generation),
            &hook.meta().creation_timestamp,
        ) {
            (None, Some(created)) => created.0,
            _ => now_ts,
        };
        for ep in &hook.spec.endpoints {
            let before = old.and_then(|s| s.endpoints.iter().find(|e| e.name == ep.name));
            let st = plan::baseline(ep, before, start);
            let due = plan::due(ep, &st, &events, now_ts, retry_for);
            let outcomes = match (&key, due.send.is_empty()) {
                (Ok(key), false) => self.send(ep, &due, key, now_ts).await,
                (Err(missing), false) => vec![Outcome::Retry {
                    reason: missing.clone(),
                }],
                (_, true) => Vec::new(),
            };
            count(ctx, &due, &outcomes, now_ts);
            let jitter = retry::jitter().unwrap_or(0.5);
            let st = plan::settle(st, &due, &outcomes, &current, now_ts, &Backoff::default(), jitter);
            owed.extend(
                due.owed
                    .iter()
                    .filter(|e| !st.gone && !st.settled.contains(&e.id))
                    .map(|e| e.id.clone()),
            );
            if let Some(problem) = problem(&st) {
                problems.push(format!("{}: {problem}", ep.name));
            }
            tell(ctx, hook, before, &st).await;
            wake = [wake, st.next_attempt.as_ref().map(|t| t.0), due.wait_until]
                .into_iter()
                .flatten()
                .min();
            more |= st.next_attempt.is_none() && !st.gone && st.pending > 0;
            endpoints.push(st);
        }

        // Status.
        let verdict = match (&key, problems.first()) {
            (Err(missing), _) => Verdict::new(READY, false, "SigningKeyMissing", missing.clone()),
            (Ok(_), Some(_)) => Verdict::new(READY, false, "EndpointFailing", problems.join("; ")),
            (Ok(_), None) => Verdict::new(READY, true, "Delivering", "every endpoint is delivering"),
        };
        let old_conditions = old.map(|s| s.conditions.as_slice()).unwrap_or_default();
        let status = WebhookStatus {
            observed_generation: hook.meta().generation,
            conditions: conditions(old_conditions, &[verdict], hook.meta().generation, &now()),
            signing_secret: Some(key::SECRET.to_owned()),
            ready: i32::try_from(endpoints.iter().filter(|e| problem(e).is_none()).count())
                .unwrap_or(i32::MAX),
            pending: endpoints.iter().map(|e| e.pending).sum(),
            endpoints,
            held: plan::hold(&events, &owed),
        };
        ctx.apply_status(&self.api(hook), hook, old, &status).await?;
        self.remember(hook, Some(status));

        // Requeue: at once while a batch is left over, else at the next retry.
        if more {
            return Ok(Action::requeue(Duration::from_secs(1)));
        }
        Ok(wake.map_or_else(
            || Action::requeue(berth_kit::runtime::RESYNC),
            |at| {
                Action::requeue(
                    at.duration_since(now_ts)
                        .unsigned_abs()
                        .max(Duration::from_secs(1)),
                )
            },
        ))
    }

    /// POSTs `due.send` in order, `IN_FLIGHT` at a time, stopping after a group with a failure (the rest
    /// wait for the retry). A URL or address the policy refuses fails without a request.
    async fn send(
        &self,
        ep: &WebhookEndpoint,
        due: &Due<'_>,
        key: &crate::sign::Key,
        now: Timestamp,
    ) -> Vec<Outcome> {
        let policy = self.policy();
        let url = match target::check_url(&policy, &ep.url) {
            Ok(url) => url,
            Err(reason) => return vec![Outcome::Retry { reason }],
        };
        let own;
        let client = match ep.ca_bundle.as_deref() {
            None => &self.public,
            Some(pem) => match Client::new(Some(pem)) {
                Ok(c) => {
                    own = c;
                    &own
                }
                Err(reason) => return vec![Outcome::Retry { reason }],
            },
        };
        let addr = match tokio::time::timeout(TIMEOUT, target::resolve(&policy, &url)).await {
            Ok(Ok(addr)) => addr,
            Ok(Err(reason)) => return vec![Outcome::Retry { reason }],
            Err(_) => {
                return vec![Outcome::Retry {
                    reason: format!("cannot resolve {} in time", url.authority()),
                }];
            }
        };
        let url = &url;
        let mut outcomes = Vec::with_capacity(due.send.len());
        for group in due.send.chunks(IN_FLIGHT) {
            let posts = group.iter().map(|e: &&Event| {
                let message = Message::new(key, &e.id, now.as_second(), e.cloudevent_json());
                async move { deliver::post(client, url, addr, &message, TIMEOUT).await }
            });
            let answered = join_all(posts).await;
            let failed = answered.iter().any(|o| !matches!(o, Outcome::Delivered(_)));
            outcomes.extend(answered);
            if failed {
                break;
            }
        }
        outcomes
    }
}

/// The Customer that owns the Webhook; `None` while it is being deleted or gone.
async fn customer(ctx: &Context, hook: &Webhook) -> Result<Option<Customer>> {
    let Some(owner) = hook.owner_references().iter().find(|o| o.kind == "Customer") else {
        return Err(Error::InvalidSpec(format!(
            "Webhook {} has no Customer as owner; berth makes Webhooks from a Customer's spec.features.webhooks",
            hook.name_any()
        )));
    };
    let found = ctx.cluster_api::<Customer>().get_opt(&owner.name).await?;
    Ok(found.filter(|c| c.uid().as_deref() == Some(owner.uid.as_str())))
}

/// The tenant's runs: berth's Jobs, each controlled by one of the namespace's Schedulers and sealed by
/// berth for it, so a Job someone made with the right labels reports nothing.
async fn runs(ctx: &Context, namespace: &str, schedulers: &[Scheduler]) -> Result<Vec<Job>> {
    let uids: Vec<String> = schedulers.iter().filter_map(ResourceExt::uid).collect();
    let jobs = ctx
        .api::<Job>(namespace)
        .list(&ListParams::default().labels(&managed_selector()))
        .await?;
    let seal = ctx.settings.seal.as_ref();
    Ok(jobs
        .items
        .into_iter()
        .filter(|j| {
            uids.iter()
                .any(|uid| berth_scheduler::job::is_ours(&j.metadata, uid, seal))
        })
        .collect())
}

/// Why the endpoint is not delivering, if it is not.
fn problem(st: &EndpointStatus) -> Option<String> {
    if st.gone {
        return st.last_failure_reason.clone();
    }
    (st.consecutive_failures > 0).then(|| {
        format!(
            "{} failed attempts, last: {}",
            st.consecutive_failures,
            st.last_failure_reason.as_deref().unwrap_or("unknown")
        )
    })
}

fn count(ctx: &Context, due: &Due<'_>, outcomes: &[Outcome], now: Timestamp) {
    let m = &ctx.metrics;
    for (event, outcome) in due.send.iter().zip(outcomes) {
        let result = match outcome {
            Outcome::Delivered(_) => {
                #[allow(clippy::cast_precision_loss)] // seconds of latency, far below 2^52
                m.webhook_latency
                    .observe(now.as_second().saturating_sub(event.time).max(0) as f64);
                "delivered"
            }
            Outcome::Gone => "gone",
            Outcome::Retry { .. } => "failed",
        };
        m.webhook_deliveries
            .get_or_create(&DeliveryLabels { result })
            .inc();
    }
    for _ in &due.expired {
        m.webhook_deliveries
            .get_or_create(&DeliveryLabels { result: "expired" })
            .inc();
    }
}

/// A Warning when an endpoint starts failing, a Normal event when it delivers again.
async fn tell(ctx: &Context, hook: &Webhook, before: Option<&EndpointStatus>, after: &EndpointStatus) {
    let was_failing = before.is_some_and(|b| b.consecutive_failures > 0 || b.gone);
    let failing = after.consecutive_failures > 0 || after.gone;
    let me = hook.object_ref(&());
    if failing && !was_failing {
        let reason = after.last_failure_reason.as_deref().unwrap_or("unknown");
        let note = format!("endpoint {} is failing: {reason}", after.name);
        ctx.event(&me, Severity::Warning, "EndpointFailing", note).await;
    } else if was_failing && !failing {
        let note = format!("endpoint {} delivers again", after.name);
        ctx.event(&me, Severity::Normal, "EndpointRecovered", note).await;
    }
}
