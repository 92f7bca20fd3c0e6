//! Who berth is, asked of the API server once at start (and the key it seals what it creates with), so the Customer controller can bind the tenant
//! ClusterRole to exactly that identity in each tenant namespace (see `berth_kit::TenantAccess`). Asking
//! beats configuring: the same binary runs in a pod (its ServiceAccount), from the e2e harness (a token of
//! that ServiceAccount) and from a developer's kubeconfig (a user), and a wrong name would lock berth out
//! of every tenant.

use std::time::Duration;

use anyhow::Context as _;
use berth_kit::TenantAccess;
use berth_kit::seal::{self, Seal};
use k8s_openapi::ByteString;
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::rbac::v1::Subject;
use kube::Api;
use kube::api::PostParams;

const SERVICE_ACCOUNT_PREFIX: &str = "system:serviceaccount:";

/// The tenant access for `role` (`None` when `role` is empty). Asks until the API server answers: without
/// it berth cannot work in any tenant, and an API server that is still starting is no reason to exit.
///
/// # Errors
/// When the API server answers without naming a user.
pub async fn resolve(client: &kube::Client, role: &str) -> anyhow::Result<Option<TenantAccess>> {
    if role.is_empty() {
        return Ok(None);
    }
    let api: Api<SelfSubjectReview> = Api::all(client.clone());
    let mut wait = Duration::from_millis(500);
    let review = loop {
        match api
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
        {
            Ok(review) => break review,
            Err(e) => {
                tracing::warn!(error = %e, "asking the API server who berth is (SelfSubjectReview); retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(8));
            }
        }
    };
    let username = review
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .filter(|u| !u.is_empty())
        .context("the SelfSubjectReview names no user")?;
    let subject = subject(&username);
    tracing::info!(user = %username, %role, "tenant namespaces bind this identity");
    Ok(Some(TenantAccess {
        role: role.to_owned(),
        subject,
    }))
}

/// The seal's key (see `berth_kit::seal`), from Secret `berth-seal` in `namespace`, made by the first
/// replica to start. Asks until the API server answers, as `resolve` does; a key that exists and cannot be
/// read is an error to fix by hand (delete the Secret), not to overwrite: Jobs sealed with it would stop
/// counting as runs.
///
/// # Errors
/// When the Secret holds no usable key.
pub async fn seal(client: &kube::Client, namespace: &str) -> anyhow::Result<Seal> {
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut wait = Duration::from_millis(500);
    loop {
        let attempt = async {
            if let Some(secret) = api.get_opt(seal::SECRET).await? {
                return Ok::<_, kube::Error>(Some(secret));
            }
            let key = Seal::fresh_key()
                .map_err(|_| kube::Error::Service("the operating system gave no randomness".into()))?;
            let fresh = Secret {
                metadata: kube::api::ObjectMeta {
                    name: Some(seal::SECRET.to_owned()),
                    ..Default::default()
                },
                data: Some([(seal::KEY.to_owned(), ByteString(key.to_vec()))].into()),
                ..Secret::default()
            };
            match api.create(&PostParams::default(), &fresh).await {
                Ok(created) => Ok(Some(created)),
                // Another replica made it a moment ago: read that one.
                Err(kube::Error::Api(s)) if s.code == 409 => Ok(None),
                Err(e) => Err(e),
            }
        };
        match attempt.await {
            Ok(Some(secret)) => {
                let key = secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get(seal::KEY))
                    .filter(|k| k.0.len() >= 32)
                    .with_context(|| {
                        format!(
                            "Secret {namespace}/{} holds no key of 32 bytes under {:?}",
                            seal::SECRET,
                            seal::KEY
                        )
                    })?;
                let since = secret
                    .metadata
                    .creation_timestamp
                    .context("the seal's Secret has no creation time")?;
                return Ok(Seal::new(&key.0, since));
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "reading the seal's key; retrying");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(8));
            }
        }
    }
}

/// The RBAC subject of an authenticated user name: a ServiceAccount for `system:serviceaccount:NS:NAME`
/// (RBAC matches ServiceAccounts by kind, not by that user name), else a User.
fn subject(username: &str) -> Subject {
    if let Some((namespace, name)) = username
        .strip_prefix(SERVICE_ACCOUNT_PREFIX)
        .and_then(|rest| rest.split_once(':'))
    {
        return Subject {
            kind: "ServiceAccount".to_owned(),
            name: name.to_owned(),
            namespace: Some(namespace.to_owned()),
            api_group: None,
        };
    }
    Subject {
        kind: "User".to_owned(),
        name: username.to_owned(),
        namespace: None,
        api_group: Some("rbac.authorization.k8s.io".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_service_account_is_bound_as_one() {
        let s = subject("system:serviceaccount:berth-system:berth");
        assert_eq!(
            (s.kind.as_str(), s.name.as_str(), s.namespace.as_deref()),
            ("ServiceAccount", "berth", Some("berth-system"))
        );
    }

    #[test]
    fn anyone_else_is_a_user() {
        let s = subject("kubernetes-admin");
        assert_eq!((s.kind.as_str(), s.name.as_str()), ("User", "kubernetes-admin"));
        assert_eq!(s.namespace, None);
        let odd = subject("system:serviceaccount:no-name");
        assert_eq!(odd.kind, "User", "not a well-formed ServiceAccount name");
    }
}
