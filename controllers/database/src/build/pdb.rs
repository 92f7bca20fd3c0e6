//! The pool's PodDisruptionBudget: voluntary disruptions (node drains) take one pgbouncer at a time, so
//! two or more replicas keep serving through a drain, and a single one never blocks it.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use crate::names;

pub(super) fn pool(inputs: &Inputs<'_>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: inputs.meta(names::pool(inputs.name), names::POOL_COMPONENT),
        spec: Some(PodDisruptionBudgetSpec {
            // Not `minAvailable: 1`: over one replica (the API allows 1 to 16) it allows no eviction at all,
            // and every node drain would hang on it. The Deployment brings the evicted pod back elsewhere.
            max_unavailable: Some(IntOrString::Int(1)),
            min_available: None,
            selector: Some(inputs.label_selector(names::POOL_COMPONENT)),
            // A pod that is not running serves nobody; evicting it must not block a drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
        }),
        ..PodDisruptionBudget::default()
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{build, database};
    use super::*;

    #[test]
    fn one_pool_pod_at_a_time_at_every_replica_count() {
        // The bounds of `pool.replicas`, and the default (2).
        for replicas in [1, 2, 16] {
            let c = build(&database(&format!(
                "storage: 1Gi\npool: {{replicas: {replicas}}}\n"
            )));
            let spec = c.pool_budget.spec.unwrap();
            assert_eq!(
                (spec.min_available, spec.max_unavailable),
                (None, Some(IntOrString::Int(1))),
                "{replicas} replicas"
            );
        }
    }

    #[test]
    fn selects_like_the_deployment() {
        let c = build(&database("storage: 1Gi\n"));
        assert_eq!(c.pool_budget.metadata.name.as_deref(), Some("ledger-pgbouncer"));
        assert_eq!(
            c.pool_budget.spec.unwrap().selector,
            Some(c.pool.spec.unwrap().selector)
        );
    }
}
