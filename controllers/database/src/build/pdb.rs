//! The pool's PodDisruptionBudget: voluntary disruptions (node drains) keep one pgbouncer running when
//! there is more than one, and never wait forever when there is only one.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use crate::names;

pub(super) fn pool(inputs: &Inputs<'_>) -> PodDisruptionBudget {
    // `minAvailable: 1` over a single replica allows no eviction at all, so a drain would hang on it;
    // one replica may go (and the Deployment brings it back elsewhere).
    let (min_available, max_unavailable) = if inputs.db.spec.pool.replicas >= 2 {
        (Some(IntOrString::Int(1)), None)
    } else {
        (None, Some(IntOrString::Int(1)))
    };
    PodDisruptionBudget {
        metadata: inputs.meta(names::pool(inputs.name), names::POOL_COMPONENT),
        spec: Some(PodDisruptionBudgetSpec {
            min_available,
            max_unavailable,
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
    fn keeps_one_pool_pod_and_selects_like_the_deployment() {
        let c = build(&database("storage: 1Gi\npool: {replicas: 2}\n"));
        let spec = c.pool_budget.spec.unwrap();
        assert_eq!(c.pool_budget.metadata.name.as_deref(), Some("ledger-pgbouncer"));
        assert_eq!(
            (spec.min_available, spec.max_unavailable),
            (Some(IntOrString::Int(1)), None)
        );
        assert_eq!(spec.selector, Some(c.pool.spec.unwrap().selector));
    }

    #[test]
    fn a_single_replica_may_be_evicted_so_drains_finish() {
        let spec = build(&database("storage: 1Gi\npool: {replicas: 1}\n"))
            .pool_budget
            .spec
            .unwrap();
        assert_eq!(
            (spec.min_available, spec.max_unavailable),
            (None, Some(IntOrString::Int(1)))
        );
    }
}
