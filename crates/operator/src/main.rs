//! `berth`: the Customer, Database and Scheduler controllers in one process.

mod access;
mod args;
mod fence;
mod http;
mod leader;
mod requests;
mod run;
mod stack;
mod watch_client;

use clap::Parser;

#[tokio::main]
async fn main() {
    let args = args::Args::parse();
    let telemetry = match berth_telemetry::Telemetry::init(args.log_format) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("berth: cannot set up logging: {e}");
            std::process::exit(2);
        }
    };
    let outcome = run::run(args).await;
    if let Err(e) = &outcome {
        tracing::error!("{e:#}");
    }
    telemetry.shutdown();
    // Exit here rather than by returning: the runtime would wait on the thread blocked reading stdin
    // (--stop-on-stdin-eof) before the process could end.
    std::process::exit(i32::from(outcome.is_err()))
}
