//! `crds/` and the chart's copy must be exactly what the Rust types generate.

#![allow(clippy::unwrap_used)]

use std::path::Path;

fn repo() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."))
}

#[test]
fn crds_dir_matches_rust_types() {
    for (file, crd) in berth_api::crds() {
        let want = berth_api::crd_yaml(&crd).unwrap();
        let path = repo().join("crds").join(file);
        let have = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            have == want,
            "{} drifted from the Rust types: run `cargo run -p berth-api --bin crdgen`",
            path.display()
        );
    }
}
