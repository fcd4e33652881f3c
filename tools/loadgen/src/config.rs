//! `loadgen` configuration: flags or environment variables
//! (`loadgen --help` lists them with their defaults).

use std::time::Duration;

use clap::Parser;
use platform::config::parse_duration;

#[derive(Debug, Clone, Parser)]
#[command(
    name = "loadgen",
    version,
    about = "Drives Ferrishop's public REST API with concurrent shoppers and reports latency percentiles per operation."
)]
pub struct Config {
    /// The gateway's REST base URL.
    #[arg(long, env = "GATEWAY_URL", default_value = "http://127.0.0.1:8080")]
    pub gateway_url: String,

    /// Concurrent shoppers; each registers, tops up its wallet, then orders in a loop.
    #[arg(long, env = "LOADGEN_SHOPPERS", default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub shoppers: u32,

    /// How long the shoppers order for (after setting up).
    #[arg(long, env = "LOADGEN_DURATION", default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Pause between two orders of one shopper.
    #[arg(long, env = "LOADGEN_THINK_TIME", default_value = "0ms", value_parser = parse_duration)]
    pub think_time: Duration,

    /// Share of confirmed orders the shopper cancels again (0 to 1).
    #[arg(long, env = "LOADGEN_CANCEL_RATIO", default_value_t = 0.1, value_parser = ratio)]
    pub cancel_ratio: f64,

    /// How long an order may take to reach a final status before it counts as stuck.
    #[arg(long, env = "LOADGEN_SETTLE_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub settle_timeout: Duration,

    /// What each shopper deposits, in minor units of the shop currency.
    #[arg(long, env = "LOADGEN_DEPOSIT", default_value_t = 100_000_000)]
    pub deposit: i64,

    /// Shop currency.
    #[arg(long, env = "LOADGEN_CURRENCY", default_value = "EUR")]
    pub currency: String,

    /// An administrator (one address of the user service's ADMIN_EMAILS),
    /// registered if it does not exist yet, who creates the run's own
    /// products with ample stock; without one, shoppers order what is in
    /// stock.
    #[arg(long, env = "LOADGEN_ADMIN_EMAIL")]
    pub admin_email: Option<String>,

    /// The administrator's password.
    #[arg(
        long,
        env = "LOADGEN_ADMIN_PASSWORD",
        default_value = "ferrishop-loadgen-admin"
    )]
    pub admin_password: String,

    /// Report as a human-readable table or as one JSON document.
    #[arg(long, env = "LOADGEN_REPORT", value_enum, default_value_t = ReportFormat::Text)]
    pub report: ReportFormat,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ReportFormat {
    Text,
    Json,
}

fn ratio(text: &str) -> Result<f64, String> {
    match text.trim().parse::<f64>() {
        Ok(value) if (0.0..=1.0).contains(&value) => Ok(value),
        _ => Err(format!("expected a number from 0 to 1, got {text:?}")),
    }
}
