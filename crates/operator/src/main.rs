//! `berth`: the Customer, Database and Scheduler controllers in one process.

mod args;
mod http;
mod leader;
mod run;

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let args = args::Args::parse();
    let telemetry = match berth_telemetry::Telemetry::init(args.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("berth: cannot set up logging: {e}");
            return ExitCode::FAILURE;
        }
    };
    let outcome = run::run(args).await;
    if let Err(e) = &outcome {
        tracing::error!("{e:#}");
    }
    telemetry.shutdown();
    if outcome.is_ok() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
