//! Leader election on a `coordination.k8s.io/v1` Lease, so two replicas never reconcile at once.
//!
//! Expiry is judged by the local clock from the moment this process last saw the Lease change, never
//! by comparing the holder's timestamps with our clock, so clock skew between nodes cannot split the
//! brain. Acquisition and renewal are optimistic writes guarded by `resourceVersion`.

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

#[derive(Clone, Debug)]
pub struct LeaseConfig {
    pub name: String,
    pub namespace: String,
    pub identity: String,
    /// How long a silent holder keeps the Lease; a standby takes over after this.
    pub duration: Duration,
}

pub struct Elector {
    api: Api<Lease>,
    config: LeaseConfig,
    /// resourceVersion of the Lease as last seen, and when we saw it change.
    observed: Option<(String, Instant)>,
}

impl Elector {
    #[must_use]
    pub fn new(client: kube::Client, config: LeaseConfig) -> Self {
        Self {
            api: Api::namespaced(client, &config.namespace),
            config,
            observed: None,
        }
    }

    #[must_use]
    pub fn config(&self) -> &LeaseConfig {
        &self.config
    }

    /// One round: take the Lease if it is free or expired, renew it if it is ours.
    /// `Ok(true)` means we hold it now.
    ///
    /// # Errors
    /// API errors other than a lost race (409), which is simply `Ok(false)`.
    pub async fn try_acquire_or_renew(&mut self) -> Result<bool, kube::Error> {
        let now = MicroTime(Timestamp::now());
        let Some(lease) = self.api.get_opt(&self.config.name).await? else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.config.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(self.spec(None, false, &now)),
            };
            return ok_unless_conflict(self.api.create(&PostParams::default(), &lease).await.map(|_| ()));
        };
        let rv = lease.metadata.resource_version.clone().unwrap_or_default();
        if self.observed.as_ref().is_none_or(|(seen, _)| *seen != rv) {
            self.observed = Some((rv, Instant::now()));
        }
        let spec = lease.spec.clone().unwrap_or_default();
        let holder = spec.holder_identity.as_deref().unwrap_or_default();
        let mine = holder == self.config.identity;
        let held_for =
            Duration::from_secs(u64::try_from(spec.lease_duration_seconds.unwrap_or(0)).unwrap_or(0));
        let expired = holder.is_empty()
            || self
                .observed
                .as_ref()
                .is_some_and(|(_, at)| at.elapsed() > held_for);
        if !mine && !expired {
            return Ok(false);
        }
        let mut next = lease;
        next.spec = Some(self.spec(Some(&spec), mine, &now));
        ok_unless_conflict(
            self.api
                .replace(&self.config.name, &PostParams::default(), &next)
                .await
                .map(|_| ()),
        )
    }

    /// Gives the Lease up so a standby takes over at once instead of after the lease duration.
    ///
    /// # Errors
    /// API errors other than a lost race.
    pub async fn release(&mut self) -> Result<(), kube::Error> {
        let Some(mut lease) = self.api.get_opt(&self.config.name).await? else {
            return Ok(());
        };
        let Some(spec) = lease.spec.as_mut() else {
            return Ok(());
        };
        if spec.holder_identity.as_deref() != Some(self.config.identity.as_str()) {
            return Ok(());
        }
        spec.holder_identity = None;
        spec.lease_duration_seconds = Some(1);
        ok_unless_conflict(
            self.api
                .replace(&self.config.name, &PostParams::default(), &lease)
                .await
                .map(|_| ()),
        )
        .map(drop)
    }

    /// The Lease spec naming us: a renewal keeps the acquire time, a takeover counts a transition.
    fn spec(&self, old: Option<&LeaseSpec>, mine: bool, now: &MicroTime) -> LeaseSpec {
        let transitions = old.and_then(|s| s.lease_transitions).unwrap_or(0);
        let acquired = if mine {
            old.and_then(|s| s.acquire_time.clone())
        } else {
            None
        };
        LeaseSpec {
            holder_identity: Some(self.config.identity.clone()),
            lease_duration_seconds: Some(i32::try_from(self.config.duration.as_secs()).unwrap_or(15)),
            acquire_time: Some(acquired.unwrap_or_else(|| now.clone())),
            renew_time: Some(now.clone()),
            lease_transitions: Some(if mine || old.is_none() {
                transitions
            } else {
                transitions.saturating_add(1)
            }),
            ..LeaseSpec::default()
        }
    }
}

fn ok_unless_conflict(r: Result<(), kube::Error>) -> Result<bool, kube::Error> {
    match r {
        Ok(()) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(e),
    }
}
