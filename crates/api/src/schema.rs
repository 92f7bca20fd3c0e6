//! Schema pieces the derives cannot express on their own.

use schemars::{Schema, SchemaGenerator, json_schema};

/// A Kubernetes quantity (`256Gi`, `500m`, `8`) that is larger than zero.
pub(crate) const POSITIVE_QUANTITY_RULE: &str =
    "isQuantity(string(self)) && quantity(string(self)).isGreaterThan(quantity('0'))";

/// Schema of a Kubernetes quantity, without k8s-openapi's page-long description.
pub(crate) fn quantity(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "description": "A Kubernetes quantity such as 256Gi, 500m or 8.",
        "x-kubernetes-int-or-string": true,
    })
}
