//! Writes `crds/*.yaml` from the Rust types: `cargo run -p berth-api --bin crdgen [DIR]`.

use std::path::PathBuf;
use std::process::ExitCode;

fn main() -> ExitCode {
    let dir = std::env::args()
        .nth(1)
        .map_or_else(|| PathBuf::from("crds"), PathBuf::from);
    for (file, crd) in berth_api::crds() {
        let written = berth_api::crd_yaml(&crd)
            .map_err(|e| e.to_string())
            .and_then(|yaml| std::fs::write(dir.join(file), yaml).map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!("crdgen: {}: {e}", dir.join(file).display());
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
