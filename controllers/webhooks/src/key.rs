//! The tenant's signing key: made once, in a Secret in the tenant namespace, and never made again.
//!
//! A second key would make every receiver refuse berth's deliveries, so a Secret that disappears is
//! reported, not replaced. Rotation is the platform team's: they replace the Secret's value, and the next
//! delivery is signed with the new key.

use std::collections::BTreeMap;

use berth_api::Webhook;
use berth_kit::labels::{customer_of, labels};
use berth_kit::{Context, Result};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, PostParams};

use crate::sign::Key;

/// The Secret's name in the tenant namespace.
pub const SECRET: &str = "webhooks-signing";
/// Its key holding the `whsec_…` text.
pub const FIELD: &str = "signingKey";
const COMPONENT: &str = "webhooks";

/// The signing key: read, or made when the Webhook never had one. The inner error is for status: a
/// Secret that is missing after it was made, or holds no valid key.
///
/// # Errors
/// API errors, and a random generator that cannot be read.
pub async fn ensure(ctx: &Context, hook: &Webhook, namespace: &str) -> Result<Result<Key, String>> {
    let api: Api<Secret> = ctx.api(namespace);
    if let Some(secret) = api.get_opt(SECRET).await? {
        return Ok(read(&secret));
    }
    if hook.status.as_ref().is_some_and(|s| s.signing_secret.is_some()) {
        return Ok(Err(format!(
            "Secret {SECRET} is gone and berth does not make a second key (receivers would refuse it); \
             create it with the key your receivers have: kubectl -n {namespace} create secret generic \
             {SECRET} --from-literal={FIELD}=whsec_..."
        )));
    }
    let key = Key::generate().map_err(|e| berth_kit::Error::InvalidSpec(format!("no randomness: {e}")))?;
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some(SECRET.to_owned()),
            labels: Some(labels(&customer_of(hook.labels(), namespace), COMPONENT)),
            owner_references: berth_kit::owner_ref(hook).map(|o| vec![o]),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            FIELD.to_owned(),
            ByteString(key.to_string().into_bytes()),
        )])),
        ..Default::default()
    };
    ctx.count_write("create");
    match api.create(&PostParams::default(), &secret).await {
        Ok(_) => {
            tracing::info!(
                namespace,
                secret = SECRET,
                "made the tenant's webhook signing key"
            );
            Ok(Ok(key))
        }
        // Made by an earlier reconcile whose answer was lost: use what is there.
        Err(kube::Error::Api(e)) if e.code == 409 => Ok(read(&api.get(SECRET).await?)),
        Err(e) => Err(e.into()),
    }
}

fn read(secret: &Secret) -> Result<Key, String> {
    let text = secret
        .data
        .as_ref()
        .and_then(|d| d.get(FIELD))
        .ok_or_else(|| format!("Secret {SECRET} has no key {FIELD}"))?;
    let text = std::str::from_utf8(&text.0).map_err(|_| format!("Secret {SECRET}: {FIELD} is not text"))?;
    Key::parse(text.trim()).map_err(|e| format!("Secret {SECRET}: {e}"))
}
