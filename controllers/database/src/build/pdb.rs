//! The pool's PodDisruptionBudget: voluntary disruptions (node drains) keep one pgbouncer running.

use k8s_openapi::api::policy::v1::{PodDisruptionBudget, PodDisruptionBudgetSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use super::Inputs;
use crate::names;

pub(super) fn pool(inputs: &Inputs<'_>) -> PodDisruptionBudget {
    PodDisruptionBudget {
        metadata: inputs.meta(names::pool(inputs.name), names::POOL_COMPONENT),
        spec: Some(PodDisruptionBudgetSpec {
            min_available: Some(IntOrString::Int(1)),
            selector: Some(inputs.label_selector(names::POOL_COMPONENT)),
            // A pod that is not running serves nobody; evicting it must not block a drain.
            unhealthy_pod_eviction_policy: Some("AlwaysAllow".to_owned()),
            ..PodDisruptionBudgetSpec::default()
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
        let c = build(&database("storage: 1Gi\n"));
        let spec = c.pool_budget.spec.unwrap();
        assert_eq!(c.pool_budget.metadata.name.as_deref(), Some("ledger-pgbouncer"));
        assert_eq!(spec.min_available, Some(IntOrString::Int(1)));
        assert_eq!(spec.selector, Some(c.pool.spec.unwrap().selector));
    }
}
