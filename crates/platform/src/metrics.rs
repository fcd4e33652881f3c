//! Prometheus metrics.
//!
//! The `metrics` facade is what code records into; the Prometheus exporter is
//! installed once per process and rendered at `/metrics` on the HTTP port.
//! Latency histograms get explicit buckets (in seconds) sized for what this
//! platform measures: sub-millisecond in-process work up to multi-second
//! sagas.
//!
//! Besides what the services record, every `/metrics` carries, sampled at
//! each scrape:
//!
//! - the process, with the names Prometheus' client libraries use
//!   ([`PROCESS_RESIDENT_MEMORY`], [`PROCESS_CPU_SECONDS`],
//!   [`PROCESS_OPEN_FDS`], ...), read from `/proc/self` (Linux only; none
//!   elsewhere). `process_cpu_seconds_total` is exposed as a gauge holding
//!   the total (the facade's counters take whole numbers): `rate()` works on
//!   it all the same;
//! - the Tokio runtime: workers, alive tasks, global queue depth;
//!
//! and every 5 s, once the database is migrated, the connection pool's size
//! ([`DB_CONNECTIONS`] by state `idle`/`used`, [`DB_CONNECTIONS_MAX`]), named
//! after OpenTelemetry's `db.client.connection.*` metrics.
//!
//! A scraper that asks for OpenMetrics (Prometheus does) gets it, with
//! exemplars on the latency histograms' buckets (`metrics/exemplars.rs`): the
//! trace of an observation in the bucket, for Grafana to jump to.

mod exemplars;
mod http_server;
pub(crate) mod kept;
mod openmetrics;

pub use http_server::{HTTP_SERVER_DURATION, TrackHttp, TrackHttpLayer};

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::HeaderMap;
use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

use self::exemplars::{ExemplarRecorder, Exemplars};

/// Buckets for every latency histogram (every `*_seconds` histogram).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// What the name of every latency histogram ends with.
const LATENCY_SUFFIX: &str = "_seconds";

/// Whether the histogram `name` measures a latency: it has
/// [`LATENCY_BUCKETS`] and exemplars.
fn is_latency(name: &str) -> bool {
    name.ends_with(LATENCY_SUFFIX)
}

/// The installed exporter, and the exemplars of its latency histograms.
struct Installed {
    handle: PrometheusHandle,
    exemplars: Arc<Exemplars>,
}

static INSTALLED: OnceLock<Installed> = OnceLock::new();

/// Why the metrics recorder could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error(transparent)]
    Build(#[from] BuildError),
    #[error("another metrics recorder is installed in this process")]
    AnotherRecorder,
}

/// Installs the global Prometheus recorder (once; later calls return the same
/// handle) and spawns its upkeep task.
pub fn install() -> Result<PrometheusHandle, InstallError> {
    if let Some(installed) = INSTALLED.get() {
        return Ok(installed.handle.clone());
    }
    let recorder = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix(LATENCY_SUFFIX.into()), LATENCY_BUCKETS)?
        .build_recorder();
    let handle = recorder.handle();
    let recorder = ExemplarRecorder::new(recorder);
    let exemplars = recorder.exemplars();
    metrics::set_global_recorder(recorder).map_err(|_| InstallError::AnotherRecorder)?;
    let upkeep = handle.clone();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_secs(5));
        loop {
            tick.tick().await;
            upkeep.run_upkeep();
        }
    });
    Ok(INSTALLED
        .get_or_init(|| Installed { handle, exemplars })
        .handle
        .clone())
}

/// `GET /metrics`: the Prometheus text exposition, or OpenMetrics with
/// exemplars when the `Accept` header names it.
pub async fn render(headers: HeaderMap) -> Response {
    match INSTALLED.get() {
        Some(installed) => {
            record_process();
            record_runtime();
            let exposition = installed.handle.render();
            if wants_openmetrics(&headers) {
                (
                    [(http::header::CONTENT_TYPE, openmetrics::CONTENT_TYPE)],
                    openmetrics_with_exemplars(&exposition, &installed.exemplars),
                )
                    .into_response()
            } else {
                (
                    [(http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
                    exposition,
                )
                    .into_response()
            }
        }
        None => (
            http::StatusCode::SERVICE_UNAVAILABLE,
            "metrics recorder not installed",
        )
            .into_response(),
    }
}

/// Whether the scraper accepts OpenMetrics. Prometheus lists it first, with
/// the 0.0.4 text format as a fallback; nobody asks for it with `q=0`.
fn wants_openmetrics(headers: &HeaderMap) -> bool {
    headers
        .get_all(http::header::ACCEPT)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .any(|accept| accept.contains("application/openmetrics-text"))
}

/// `exposition` as OpenMetrics, with the exemplars of `exemplars`.
fn openmetrics_with_exemplars(exposition: &str, exemplars: &Exemplars) -> String {
    let series: std::collections::HashMap<(String, openmetrics::Labels), _> = exemplars
        .series()
        .into_iter()
        .map(|(key, buckets)| {
            let mut labels: openmetrics::Labels = key
                .labels()
                .map(|label| (label.key().to_owned(), label.value().to_owned()))
                .collect();
            labels.sort();
            ((key.name().to_owned(), labels), buckets)
        })
        .collect();
    openmetrics::render(exposition, |family, labels, le| {
        let buckets = series.get(&(family.to_owned(), labels.clone()))?;
        buckets.get(buckets.index_of_le(le)?)
    })
}

// ----------------------------------------------------------- process, runtime

/// Gauge: resident set size, bytes.
pub const PROCESS_RESIDENT_MEMORY: &str = "process_resident_memory_bytes";
/// Gauge: virtual memory size, bytes.
pub const PROCESS_VIRTUAL_MEMORY: &str = "process_virtual_memory_bytes";
/// Gauge holding a total: user and system CPU time spent, seconds.
pub const PROCESS_CPU_SECONDS: &str = "process_cpu_seconds_total";
/// Gauge: open file descriptors.
pub const PROCESS_OPEN_FDS: &str = "process_open_fds";
/// Gauge: the soft limit of open file descriptors.
pub const PROCESS_MAX_FDS: &str = "process_max_fds";
/// Gauge: start of the process, seconds since the Unix epoch.
pub const PROCESS_START_TIME: &str = "process_start_time_seconds";
/// Gauge: operating-system threads.
pub const PROCESS_THREADS: &str = "process_threads";
/// Gauge: the Tokio runtime's worker threads.
pub const RUNTIME_WORKERS: &str = "tokio_runtime_workers";
/// Gauge: tasks alive in the Tokio runtime.
pub const RUNTIME_ALIVE_TASKS: &str = "tokio_runtime_alive_tasks";
/// Gauge: tasks waiting in the runtime's global queue.
pub const RUNTIME_GLOBAL_QUEUE_DEPTH: &str = "tokio_runtime_global_queue_depth";
/// Gauge: connections of a pool, labels `db_client_connection_pool_name`
/// (the database) and `db_client_connection_state` (`idle` | `used`).
pub const DB_CONNECTIONS: &str = "db_client_connection_count";
/// Gauge: the most connections a pool opens, label
/// `db_client_connection_pool_name`.
pub const DB_CONNECTIONS_MAX: &str = "db_client_connection_max";

/// How often a pool's gauges are refreshed.
const POOL_INTERVAL: Duration = Duration::from_secs(5);

fn record_process() {
    let Some(sample) = process::sample() else {
        return;
    };
    metrics::gauge!(PROCESS_RESIDENT_MEMORY).set(sample.resident_bytes);
    metrics::gauge!(PROCESS_VIRTUAL_MEMORY).set(sample.virtual_bytes);
    metrics::gauge!(PROCESS_CPU_SECONDS).set(sample.cpu_seconds);
    metrics::gauge!(PROCESS_THREADS).set(sample.threads);
    metrics::gauge!(PROCESS_START_TIME).set(sample.start_time_seconds);
    metrics::gauge!(PROCESS_OPEN_FDS).set(sample.open_fds);
    if let Some(max) = sample.max_fds {
        metrics::gauge!(PROCESS_MAX_FDS).set(max);
    }
}

fn record_runtime() {
    let Ok(runtime) = tokio::runtime::Handle::try_current() else {
        return;
    };
    let runtime = runtime.metrics();
    metrics::gauge!(RUNTIME_WORKERS).set(runtime.num_workers() as f64);
    metrics::gauge!(RUNTIME_ALIVE_TASKS).set(runtime.num_alive_tasks() as f64);
    metrics::gauge!(RUNTIME_GLOBAL_QUEUE_DEPTH).set(runtime.global_queue_depth() as f64);
}

/// Records the size of `pool` (database `name`) every few seconds until
/// `cancel` fires.
pub async fn watch_pool(
    name: String,
    pool: sqlx::PgPool,
    max_connections: u32,
    cancel: tokio_util::sync::CancellationToken,
) {
    let mut tick = tokio::time::interval(POOL_INTERVAL);
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            _ = tick.tick() => {}
        }
        let size = pool.size();
        let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX).min(size);
        metrics::gauge!(
            DB_CONNECTIONS,
            "db_client_connection_pool_name" => name.clone(),
            "db_client_connection_state" => "idle",
        )
        .set(f64::from(idle));
        metrics::gauge!(
            DB_CONNECTIONS,
            "db_client_connection_pool_name" => name.clone(),
            "db_client_connection_state" => "used",
        )
        .set(f64::from(size - idle));
        metrics::gauge!(DB_CONNECTIONS_MAX, "db_client_connection_pool_name" => name.clone())
            .set(f64::from(max_connections));
    }
}

/// The process as `/proc/self` describes it.
mod process {
    /// One reading.
    #[derive(Debug, Clone, PartialEq)]
    pub struct Sample {
        pub resident_bytes: f64,
        pub virtual_bytes: f64,
        pub cpu_seconds: f64,
        pub threads: f64,
        pub start_time_seconds: f64,
        pub open_fds: f64,
        pub max_fds: Option<f64>,
    }

    /// `/proc` counts CPU time in USER_HZ ticks, 100 per second on every
    /// architecture Linux exports to user space (it is not the kernel's HZ).
    const USER_HZ: f64 = 100.0;

    #[cfg(target_os = "linux")]
    pub fn sample() -> Option<Sample> {
        let read = |path: &str| std::fs::read_to_string(path).ok();
        let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as f64;
        parse(
            &read("/proc/self/status")?,
            &read("/proc/self/stat")?,
            &read("/proc/stat")?,
            read("/proc/self/limits").as_deref(),
            open_fds,
        )
    }

    #[cfg(not(target_os = "linux"))]
    pub fn sample() -> Option<Sample> {
        None
    }

    /// Reads a sample out of `/proc/self/status`, `/proc/self/stat`,
    /// `/proc/stat` (boot time) and `/proc/self/limits`.
    pub fn parse(
        status: &str,
        stat: &str,
        system_stat: &str,
        limits: Option<&str>,
        open_fds: f64,
    ) -> Option<Sample> {
        let kilobytes = |key: &str| -> Option<f64> {
            let line = status.lines().find(|line| line.starts_with(key))?;
            let value: f64 = line[key.len()..].split_whitespace().next()?.parse().ok()?;
            Some(value * 1024.0)
        };
        let threads: f64 = status
            .lines()
            .find_map(|line| line.strip_prefix("Threads:"))?
            .trim()
            .parse()
            .ok()?;
        // The command name (field 2) may hold spaces and parentheses: the
        // fields that follow start after its last `)`, with field 3 (state).
        let fields: Vec<&str> = stat[stat.rfind(')')? + 1..].split_whitespace().collect();
        let field = |number: usize| -> Option<f64> { fields.get(number - 3)?.parse().ok() };
        let cpu_seconds = (field(14)? + field(15)?) / USER_HZ;
        let boot_time: f64 = system_stat
            .lines()
            .find_map(|line| line.strip_prefix("btime "))?
            .trim()
            .parse()
            .ok()?;
        let start_time_seconds = boot_time + field(22)? / USER_HZ;
        let max_fds = limits.and_then(|limits| {
            let line = limits
                .lines()
                .find(|line| line.starts_with("Max open files"))?;
            line["Max open files".len()..]
                .split_whitespace()
                .next()?
                .parse()
                .ok()
        });
        Some(Sample {
            resident_bytes: kilobytes("VmRSS:")?,
            virtual_bytes: kilobytes("VmSize:")?,
            cpu_seconds,
            threads,
            start_time_seconds,
            open_fds,
            max_fds,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::process;

    const STATUS: &str = "Name:\torder\nState:\tS (sleeping)\nVmSize:\t  2048 kB\nVmRSS:\t    1024 kB\nThreads:\t7\n";
    const STAT: &str = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 7 0 12345 2097152 256 18446744073709551615";
    const SYSTEM_STAT: &str = "cpu  1 2 3\nbtime 1700000000\nprocesses 10\n";
    const LIMITS: &str = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";

    #[test]
    fn proc_files_parse() {
        let sample = process::parse(STATUS, STAT, SYSTEM_STAT, Some(LIMITS), 12.0).unwrap();
        assert_eq!(sample.resident_bytes, 1024.0 * 1024.0);
        assert_eq!(sample.virtual_bytes, 2048.0 * 1024.0);
        assert_eq!(sample.threads, 7.0);
        // utime 250 + stime 50 ticks.
        assert_eq!(sample.cpu_seconds, 3.0);
        assert_eq!(sample.start_time_seconds, 1_700_000_000.0 + 123.45);
        assert_eq!(sample.open_fds, 12.0);
        assert_eq!(sample.max_fds, Some(1024.0));
        assert_eq!(
            process::parse(STATUS, STAT, SYSTEM_STAT, None, 1.0).and_then(|s| s.max_fds),
            None
        );
        assert!(process::parse("", STAT, SYSTEM_STAT, None, 1.0).is_none());
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_sampled() {
        let sample = process::sample().expect("a sample of this process");
        assert!(sample.resident_bytes > 1_000_000.0, "{sample:?}");
        assert!(sample.virtual_bytes >= sample.resident_bytes, "{sample:?}");
        assert!(
            sample.threads >= 1.0 && sample.open_fds >= 3.0,
            "{sample:?}"
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs_f64();
        assert!(
            sample.start_time_seconds <= now + 1.0 && sample.start_time_seconds > now - 86_400.0,
            "{sample:?}"
        );
        assert!(sample.max_fds.is_some_and(|max| max >= sample.open_fds));
    }
}
