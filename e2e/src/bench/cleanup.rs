//! Removing what a run leaves behind: before a run (an earlier one may have been cut short), between
//! the phases, and at the end.

use std::time::{Duration, Instant};

use anyhow::bail;
use berth_api::Customer;
use futures::StreamExt;
use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};

use super::{BERTH, Config, Tenants, log};

/// Deletes every bench Customer (removing the finalizer if no operator runs to do it) and waits until
/// they and their namespaces are gone.
pub async fn delete_customers(client: &Client, cfg: &Config) -> anyhow::Result<()> {
    let api: Api<Customer> = Api::all(client.clone());
    let mine: Vec<String> = api
        .list_metadata(&ListParams::default())
        .await?
        .items
        .iter()
        .map(ResourceExt::name_any)
        .filter(|n| n.starts_with(BERTH.prefix))
        .collect();
    futures::stream::iter(&mine)
        .for_each_concurrent(cfg.concurrency, |name| {
            let api = api.clone();
            async move {
                let _ = api.delete(name, &DeleteParams::background()).await;
            }
        })
        .await;
    // berth removes its finalizer within seconds; a leftover from a run without berth needs help.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let left = api
            .list_metadata(&ListParams::default())
            .await?
            .items
            .into_iter()
            .filter(|c| c.name_any().starts_with(BERTH.prefix))
            .collect::<Vec<_>>();
        if left.is_empty() {
            break;
        }
        if tokio::time::Instant::now() > deadline {
            log(&format!("removing the finalizer of {} Customers", left.len()));
            let strip = serde_json::json!({"metadata": {"finalizers": null}});
            for c in &left {
                let _ = api
                    .patch(&c.name_any(), &PatchParams::default(), &Patch::Merge(&strip))
                    .await;
            }
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    delete_namespaces(client, &BERTH, cfg).await
}

/// Deletes the namespaces of `tenants` and waits until they are gone.
pub async fn delete_namespaces(client: &Client, tenants: &Tenants, cfg: &Config) -> anyhow::Result<()> {
    let (prefix, timeout) = (tenants.prefix, cfg.timeout);
    let api: Api<Namespace> = Api::all(client.clone());
    let list = |api: Api<Namespace>| async move {
        anyhow::Ok(
            api.list_metadata(&ListParams::default())
                .await?
                .items
                .into_iter()
                .filter(|n| n.name_any().starts_with(prefix))
                .collect::<Vec<_>>(),
        )
    };
    let present = list(api.clone()).await?;
    if present.is_empty() {
        return Ok(());
    }
    let t = Instant::now();
    futures::stream::iter(present.iter().filter(|n| n.metadata.deletion_timestamp.is_none()))
        .for_each_concurrent(cfg.concurrency, |ns| {
            let api = api.clone();
            async move {
                let _ = api.delete(&ns.name_any(), &DeleteParams::background()).await;
            }
        })
        .await;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let left = list(api.clone()).await?.len();
        if left == 0 {
            log(&format!(
                "{} namespaces {prefix}* gone in {:.0}s",
                present.len(),
                t.elapsed().as_secs_f64()
            ));
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{left} namespaces {prefix}* still there after {timeout:?}");
        }
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}
