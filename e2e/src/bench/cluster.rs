//! The cluster made ready for a run: berth's CRDs and Lease namespace, no leftovers, and room for N
//! tenants' pods and Services.

use std::time::Duration;

use anyhow::bail;
use berth_api::Customer;
use k8s_openapi::api::core::v1::{Namespace, Node, Pod, Service};
use k8s_openapi::api::networking::v1::{ServiceCIDR, ServiceCIDRSpec};
use kube::api::{Api, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::{BERTH, Config, FLOOR, PODS_PER_TENANT, cleanup, log};
use crate::operator::LEASE_NAMESPACE;

/// CRDs, the Lease namespace, enough fake node capacity, no leftovers of an earlier run.
pub async fn prepare(client: &Client, cfg: &Config) -> anyhow::Result<()> {
    crate::install_crds(client).await?;
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(LEASE_NAMESPACE.to_owned()),
            ..ObjectMeta::default()
        },
        ..Namespace::default()
    };
    Api::<Namespace>::all(client.clone())
        .patch(
            LEASE_NAMESPACE,
            &PatchParams::apply("berth-bench"),
            &Patch::Apply(&ns),
        )
        .await?;

    let leftover_customers = Api::<Customer>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .any(|c| c.name_any().starts_with(BERTH.prefix));
    if leftover_customers {
        log("removing Customers left by an earlier run");
        cleanup::delete_customers(client, cfg).await?;
    }
    for tenants in [&FLOOR, &BERTH] {
        cleanup::delete_namespaces(client, tenants, cfg).await?;
    }

    // Capacity: every tenant runs PODS_PER_TENANT pods.
    let nodes = Api::<Node>::all(client.clone())
        .list(&ListParams::default())
        .await?;
    let pod_slots: usize = nodes
        .items
        .iter()
        .filter(|n| {
            n.spec
                .as_ref()
                .and_then(|s| s.taints.as_ref())
                .is_none_or(Vec::is_empty)
        })
        .filter_map(|n| {
            n.status
                .as_ref()?
                .allocatable
                .as_ref()?
                .get("pods")?
                .0
                .parse::<usize>()
                .ok()
        })
        .sum();
    let pods = Api::<Pod>::all(client.clone())
        .list_metadata(&ListParams::default())
        .await?
        .items
        .len();
    let needed = cfg.n * PODS_PER_TENANT;
    if pod_slots.saturating_sub(pods) < needed {
        bail!(
            "the cluster has room for {} more pods ({} nodes, {pods} pods running) but N={} needs {needed}: \
             bring it up with more fake nodes, e.g. BERTH_NODES={} e2e/cluster.sh up",
            pod_slots.saturating_sub(pods),
            nodes.items.len(),
            cfg.n,
            (needed + pods).div_ceil(110) + 1,
        );
    }
    ensure_service_ips(client, cfg).await
}

/// Every tenant's pool Service takes a ClusterIP. The local control plane's range is a /24 (about 250
/// Services): when it is too small for N, the bench adds a ServiceCIDR (networking.k8s.io/v1, no API
/// server restart needed) on the local cluster, and refuses to touch a foreign one.
async fn ensure_service_ips(client: &Client, cfg: &Config) -> anyhow::Result<()> {
    const EXTRA: &str = "berth-bench";
    let cidrs = Api::<ServiceCIDR>::all(client.clone());
    let size: u64 = cidrs
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .flat_map(|c| c.spec.as_ref().and_then(|s| s.cidrs.clone()).unwrap_or_default())
        .filter(|c| c.contains('.'))
        .filter_map(|c| c.split_once('/').and_then(|(_, p)| p.parse::<u32>().ok()))
        .map(|prefix| (1u64 << (32 - prefix.min(32))).saturating_sub(2))
        .sum();
    let used = Api::<Service>::all(client.clone())
        .list(&ListParams::default())
        .await?
        .items
        .iter()
        .filter(|s| {
            s.spec
                .as_ref()
                .and_then(|s| s.cluster_ip.as_deref())
                .is_some_and(|ip| ip != "None")
        })
        .count() as u64;
    let needed = cfg.n as u64 + 10;
    if size.saturating_sub(used) >= needed {
        return Ok(());
    }
    if cfg.cluster_dir.is_none() {
        bail!(
            "the cluster has {} free Service IPs, N={} needs {needed}: widen --service-cluster-ip-range or add a ServiceCIDR",
            size.saturating_sub(used),
            cfg.n
        );
    }
    log(&format!(
        "Service IP range has {} free addresses, N={} needs {needed}: adding ServiceCIDR {EXTRA} 10.96.0.0/16",
        size.saturating_sub(used),
        cfg.n
    ));
    let extra = ServiceCIDR {
        metadata: ObjectMeta {
            name: Some(EXTRA.to_owned()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceCIDRSpec {
            cidrs: Some(vec!["10.96.0.0/16".to_owned()]),
        }),
        ..ServiceCIDR::default()
    };
    cidrs
        .patch(EXTRA, &PatchParams::apply("berth-bench"), &Patch::Apply(&extra))
        .await?;
    // Usable once the API server marks it Ready.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let ready = cidrs
            .get(EXTRA)
            .await?
            .status
            .and_then(|s| s.conditions)
            .is_some_and(|c| c.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
        if ready {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("ServiceCIDR {EXTRA} did not become Ready");
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}
