//! `loadgen`: wiring only. Prepares the catalogue, sets the shoppers up, lets
//! them order until the duration is over (or SIGTERM/SIGINT: `docker stop`,
//! Ctrl-C), prints the report.

use std::process::ExitCode;
use std::sync::Arc;
use std::time::Instant;

use tokio_util::sync::CancellationToken;

mod api;
mod config;
mod report;
mod shopper;

#[tokio::main]
async fn main() -> ExitCode {
    let config = Arc::new(platform::config::parse::<config::Config>());
    let shop = match api::Shop::new(&config.gateway_url) {
        Ok(shop) => shop,
        Err(error) => {
            eprintln!("loadgen: no HTTP client: {error}");
            return ExitCode::FAILURE;
        }
    };
    let catalogue = match shopper::prepare_catalogue(&shop, &config).await {
        Ok(catalogue) => Arc::new(catalogue),
        Err(error) => {
            eprintln!("loadgen: {error}");
            return ExitCode::FAILURE;
        }
    };

    let stop = CancellationToken::new();
    match platform::service::stop_signals() {
        Ok(signal) => {
            let on_signal = stop.clone();
            tokio::spawn(async move {
                signal.await;
                on_signal.cancel();
            });
        }
        Err(error) => eprintln!("loadgen: cannot listen for SIGTERM and SIGINT: {error}"),
    }

    let setting_up: Vec<_> = (0..config.shoppers)
        .map(|index| {
            let shopper =
                shopper::Shopper::new(index, shop.clone(), config.clone(), catalogue.clone());
            tokio::spawn(shopper.set_up())
        })
        .collect();
    let mut ready = Vec::new();
    for shopper in setting_up {
        match shopper.await {
            Ok(Ok(shopper)) => ready.push(shopper),
            Ok(Err(error)) => eprintln!("loadgen: a shopper could not set up: {error}"),
            Err(error) => eprintln!("loadgen: a shopper failed: {error}"),
        }
    }
    if ready.is_empty() {
        eprintln!("loadgen: no shopper could set up");
        return ExitCode::FAILURE;
    }

    let started = Instant::now();
    let timer = stop.clone();
    let duration = config.duration;
    tokio::spawn(async move {
        tokio::time::sleep(duration).await;
        timer.cancel();
    });
    let running: Vec<_> = ready
        .into_iter()
        .map(|shopper| tokio::spawn(shopper.run(stop.clone())))
        .collect();
    let mut report = report::Report::default();
    for shopper in running {
        match shopper.await {
            Ok(recorded) => report.merge(recorded),
            Err(error) => eprintln!("loadgen: a shopper failed: {error}"),
        }
    }
    report.elapsed = started.elapsed();
    report.print(config.report);
    if report.completed_orders() == 0 {
        eprintln!("loadgen: no order reached a final status");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
