//! Configuration from the environment (12-factor), parsed with clap.
//!
//! Every setting is a clap argument with an `env` name, so `<binary> --help`
//! lists every variable a binary reads together with its default. A bad or
//! missing value stops the binary before it does anything else, with exit code
//! 2 and a single line that names the variable: operators grep logs for a
//! variable name, not for a clap usage banner.

use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::{Args, Parser};

use crate::faults::FaultPlan;
use crate::telemetry::TelemetryArgs;

/// Exit code for configuration errors, as with clap and sysexits' `EX_USAGE`.
pub const EXIT_CONFIG: i32 = 2;

/// Settings every binary shares, flattened into each service's own `Config`.
#[derive(Debug, Clone, Args)]
pub struct CommonArgs {
    #[command(flatten)]
    pub telemetry: TelemetryArgs,

    /// How long in-flight requests and consumers may take to finish after
    /// SIGTERM before the process exits anyway (e.g. `30s`, `500ms`).
    #[arg(long, env = "SHUTDOWN_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,

    /// Fault points armed at start, e.g.
    /// `payment.charge=error(0.5);inventory.reserve=delay(200)`.
    #[arg(long, env = "FAULTS", default_value = "")]
    pub faults: FaultPlan,
}

/// Parses `T` from the environment and command line.
///
/// `--help` and `--version` print and exit 0; any other error prints one line
/// naming the offending variable and exits with [`EXIT_CONFIG`].
pub fn parse<T: Parser>() -> T {
    parse_from(std::env::args_os()).unwrap_or_else(|error| match error {
        ConfigError::Display(clap_error) => clap_error.exit(),
        ConfigError::Invalid(line) => {
            eprintln!("{line}");
            std::process::exit(EXIT_CONFIG)
        }
    })
}

/// Why configuration could not be parsed.
#[derive(Debug)]
pub enum ConfigError {
    /// Help or version output was requested; not a failure.
    Display(clap::Error),
    /// A value is missing or malformed: one line naming the variable.
    Invalid(String),
}

impl std::fmt::Display for ConfigError {
    /// The help or version text, or the one line naming the variable.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Display(error) => error.fmt(f),
            Self::Invalid(line) => f.write_str(line),
        }
    }
}

impl std::error::Error for ConfigError {}

/// [`parse`] without exiting, for tests.
pub fn parse_from<T, I, A>(args: I) -> Result<T, ConfigError>
where
    T: Parser,
    I: IntoIterator<Item = A>,
    A: Into<std::ffi::OsString> + Clone,
{
    let command = T::command();
    let result = command
        .clone()
        .try_get_matches_from(args)
        .and_then(|mut matches| T::from_arg_matches_mut(&mut matches));
    result.map_err(|error| match error.kind() {
        ErrorKind::DisplayHelp
        | ErrorKind::DisplayVersion
        | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => ConfigError::Display(error),
        _ => ConfigError::Invalid(one_line(&command, &error)),
    })
}

fn one_line(command: &clap::Command, error: &clap::Error) -> String {
    let variable = error
        .get(ContextKind::InvalidArg)
        .and_then(|arg| match arg {
            ContextValue::String(s) => Some(s.clone()),
            ContextValue::Strings(v) => v.first().cloned(),
            _ => None,
        })
        .map(|arg| variable_name(command, &arg).unwrap_or(arg));
    let value = match error.get(ContextKind::InvalidValue) {
        Some(ContextValue::String(v)) => Some(v.clone()),
        _ => None,
    };
    let reason = std::error::Error::source(error)
        .map(ToString::to_string)
        .unwrap_or_else(|| first_line(&error.to_string()));
    match (variable, value) {
        (Some(variable), Some(value)) => {
            format!("configuration error: {variable}: invalid value {value:?}: {reason}")
        }
        (Some(variable), None) => format!("configuration error: {variable}: {reason}"),
        _ => format!("configuration error: {reason}"),
    }
}

/// Maps clap's `--http-addr <HTTP_ADDR>` back to the environment variable.
fn variable_name(command: &clap::Command, rendered: &str) -> Option<String> {
    let long = rendered.trim_start_matches("--").split([' ', '=']).next()?;
    command
        .get_arguments()
        .find(|arg| arg.get_long() == Some(long))
        .and_then(|arg| arg.get_env())
        .map(|env| env.to_string_lossy().into_owned())
}

fn first_line(text: &str) -> String {
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_owned()
}

/// The longest duration a setting accepts: a year. Past it a value is a
/// typo, and `Instant::now() + duration` could overflow and panic.
pub const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// Parses `250ms`, `5s`, `2m` or a bare number of seconds, at most
/// [`MAX_DURATION`].
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("expected a duration like 500ms, 5s or 2m, got {text:?}"))?;
    let seconds = match unit {
        "ms" => number / 1000.0,
        "" | "s" => number,
        "m" => number * 60.0,
        "h" => number * 3600.0,
        other => {
            return Err(format!(
                "unknown duration unit {other:?} (use ms, s, m or h)"
            ));
        }
    };
    let duration = Duration::try_from_secs_f64(seconds)
        .map_err(|e| format!("invalid duration {text:?}: {e}"))?;
    if duration > MAX_DURATION {
        return Err(format!("{text:?} is longer than a year (366 days)"));
    }
    Ok(duration)
}

/// [`parse_duration`] refusing zero: a timeout, interval or lifetime of
/// nothing is a mistake, not a way to turn something off.
pub fn parse_positive_duration(text: &str) -> Result<Duration, String> {
    match parse_duration(text)? {
        Duration::ZERO => Err("must be greater than zero".to_owned()),
        duration => Ok(duration),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[derive(Debug, Parser)]
    struct Sample {
        /// Where HTTP listens.
        #[arg(long, env = "SAMPLE_HTTP_ADDR", default_value = "127.0.0.1:8080")]
        http_addr: SocketAddr,
        #[arg(long, env = "SAMPLE_TIMEOUT", default_value = "5s", value_parser = parse_duration)]
        timeout: Duration,
    }

    #[test]
    fn defaults_apply() {
        let sample: Sample = parse_from(["sample"])
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        assert_eq!(sample.http_addr.port(), 8080);
        assert_eq!(sample.timeout, Duration::from_secs(5));
    }

    #[test]
    fn bad_value_names_the_variable_on_one_line() {
        let Err(ConfigError::Invalid(line)) =
            parse_from::<Sample, _, _>(["sample", "--http-addr", "not-an-address"])
        else {
            panic!("expected an invalid-configuration error");
        };
        assert!(line.contains("SAMPLE_HTTP_ADDR"), "{line}");
        assert!(line.contains("not-an-address"), "{line}");
        assert_eq!(line.lines().count(), 1, "{line}");
        let Err(error) = parse_from::<Sample, _, _>(["sample", "--timeout", "soon"]) else {
            panic!("expected an invalid-configuration error");
        };
        assert_eq!(error.to_string().lines().count(), 1, "{error}");
        assert!(error.to_string().contains("SAMPLE_TIMEOUT"), "{error}");
    }

    #[derive(Debug, Parser)]
    struct WithCommon {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn bad_telemetry_settings_are_configuration_errors() {
        for (flag, value, variable) in [
            ("--log-filter", "info,sqlx=loudly", "RUST_LOG"),
            (
                "--otlp-endpoint",
                "127.0.0.1:4317",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                "--otlp-endpoint",
                "ftp://collector:4317",
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            ("--sampler-arg", "7", "OTEL_TRACES_SAMPLER_ARG"),
            ("--sampler-arg", "NaN", "OTEL_TRACES_SAMPLER_ARG"),
            ("--traces-exporter", "jaeger", "OTEL_TRACES_EXPORTER"),
        ] {
            let Err(ConfigError::Invalid(line)) =
                parse_from::<WithCommon, _, _>(["sample", flag, value])
            else {
                panic!("{flag} {value}: expected an invalid-configuration error");
            };
            assert!(line.contains(variable), "{line}");
        }
        let good = parse_from::<WithCommon, _, _>([
            "sample",
            "--log-filter",
            "info,sqlx=warn",
            "--otlp-endpoint",
            "http://otel-collector:4317",
            "--sampler-arg",
            "0.25",
        ])
        .map_err(|e| format!("{e:?}"))
        .unwrap();
        assert_eq!(good.common.telemetry.sampler_arg, 0.25);
        assert_eq!(
            good.common.telemetry.otlp_endpoint,
            "http://otel-collector:4317"
        );
        let off = parse_from::<WithCommon, _, _>(["sample", "--traces-exporter", "none"])
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        assert_eq!(
            off.common.telemetry.traces_exporter,
            crate::telemetry::TracesExporter::Off
        );
    }

    #[test]
    fn traces_go_to_a_local_collector_by_default() {
        let defaults = parse_from::<WithCommon, _, _>(["sample"])
            .map_err(|e| format!("{e:?}"))
            .unwrap();
        let telemetry = defaults.common.telemetry;
        assert_eq!(telemetry.otlp_endpoint, "http://127.0.0.1:4317");
        assert_eq!(
            telemetry.traces_exporter,
            crate::telemetry::TracesExporter::Otlp
        );
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert!(parse_duration("3 weeks").is_err());
        assert!(parse_duration("-1s").is_err());
        assert_eq!(parse_duration("8784h"), Ok(MAX_DURATION));
        assert!(parse_duration("8784.001h").is_err());
        assert!(parse_duration("1e19").is_err());
        assert!(parse_duration("10000000000000000000s").is_err());
        assert_eq!(parse_positive_duration("15m"), Ok(Duration::from_secs(900)));
        assert!(parse_positive_duration("0s").is_err());
        assert!(parse_positive_duration("0").is_err());
    }
}
