//! The OpenMetrics text format (1.0), for scrapers that ask for it.
//!
//! Only OpenMetrics carries exemplars. Prometheus asks for it first
//! (`Accept: application/openmetrics-text;version=1.0.0,...`), so `/metrics`
//! answers it with the exporter's exposition rewritten where the two formats
//! differ:
//!
//! - a counter's family is named without `_total` (its samples keep it); a
//!   counter whose name does not end in `_total` is declared `unknown`, as
//!   OpenMetrics names every counter sample `<family>_total`;
//! - no blank lines, and `# EOF` last;
//! - a histogram bucket with an exemplar ends with
//!   `# {trace_id="…",span_id="…"} <value> <timestamp>`.
//!
//! Everything else (HELP text, label escaping, values) is written alike by
//! both formats.

use std::collections::HashMap;
use std::fmt::Write as _;

use super::exemplars::Exemplar;

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The labels of one series, sorted by name, as written (values unescaped).
pub type Labels = Vec<(String, String)>;

/// Rewrites `exposition` (Prometheus text 0.0.4, as the exporter renders
/// it) as OpenMetrics; `exemplar(family, labels, le)` is the exemplar of a
/// histogram bucket, if it has one.
pub fn render(
    exposition: &str,
    exemplar: impl Fn(&str, &Labels, &str) -> Option<Exemplar>,
) -> String {
    let types: HashMap<&str, &str> = exposition
        .lines()
        .filter_map(|line| {
            let mut words = line.strip_prefix("# TYPE ")?.split_whitespace();
            Some((words.next()?, words.next()?))
        })
        .collect();
    let mut out = String::with_capacity(exposition.len() + exposition.len() / 8 + 8);
    for line in exposition.lines().filter(|line| !line.trim().is_empty()) {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            let (family, kind) = family(name, kind.trim());
            let _ = writeln!(out, "# TYPE {family} {kind}");
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let kind = types.get(name).copied().unwrap_or("untyped");
            let (family, _) = family(name, kind);
            let _ = writeln!(out, "# HELP {family} {help}");
        } else if line.starts_with('#') {
            // Comments other than HELP and TYPE are not OpenMetrics.
        } else {
            out.push_str(line);
            if let Some(exemplar) = bucket_exemplar(line, &types, &exemplar) {
                let _ = write!(
                    out,
                    " # {{trace_id=\"{}\",span_id=\"{}\"}} {} {:.3}",
                    exemplar.trace_id, exemplar.span_id, exemplar.value, exemplar.timestamp
                );
            }
            out.push('\n');
        }
    }
    out.push_str("# EOF\n");
    out
}

/// The OpenMetrics family name and type of the metric `name` of the 0.0.4
/// `kind`.
fn family<'a>(name: &'a str, kind: &'a str) -> (&'a str, &'a str) {
    match kind {
        "counter" => match name.strip_suffix("_total") {
            Some(family) => (family, "counter"),
            None => (name, "unknown"),
        },
        "untyped" => (name, "unknown"),
        _ => (name, kind),
    }
}

/// The exemplar of `line`, if it is the bucket line of a histogram and the
/// bucket has one.
fn bucket_exemplar(
    line: &str,
    types: &HashMap<&str, &str>,
    exemplar: &impl Fn(&str, &Labels, &str) -> Option<Exemplar>,
) -> Option<Exemplar> {
    let (name, rest) = line.split_once('{')?;
    let family = name.strip_suffix("_bucket")?;
    if types.get(family) != Some(&"histogram") {
        return None;
    }
    let mut labels = parse_labels(rest)?;
    let le = labels.iter().position(|(name, _)| name == "le")?;
    let (_, le) = labels.remove(le);
    labels.sort();
    exemplar(family, &labels, &le)
}

/// The labels of `text`, the part of a sample line after its `{`: pairs
/// up to the closing `}`, values unescaped.
fn parse_labels(text: &str) -> Option<Labels> {
    let mut labels = Vec::new();
    let mut rest = text;
    loop {
        rest = rest.trim_start_matches(',');
        if rest.starts_with('}') {
            return Some(labels);
        }
        let (name, after) = rest.split_once("=\"")?;
        let mut value = String::new();
        let mut chars = after.char_indices();
        let end = loop {
            match chars.next()? {
                (i, '"') => break i,
                (_, '\\') => match chars.next()?.1 {
                    'n' => value.push('\n'),
                    other => value.push(other),
                },
                (_, other) => value.push(other),
            }
        };
        labels.push((name.to_owned(), value));
        rest = &after[end + 1..];
    }
}

#[cfg(test)]
mod tests {
    use opentelemetry::trace::{SpanId, TraceId};

    use super::*;

    const EXPOSITION: &str = "\
# HELP orders_total Orders placed.
# TYPE orders_total counter
orders_total{status=\"CONFIRMED\"} 3

# TYPE retries counter
retries 2

# TYPE process_open_fds gauge
process_open_fds 12

# TYPE request_duration_seconds histogram
request_duration_seconds_bucket{route=\"/a \\\"b\\\"\",method=\"GET\",le=\"0.1\"} 1
request_duration_seconds_bucket{route=\"/a \\\"b\\\"\",method=\"GET\",le=\"0.5\"} 4
request_duration_seconds_bucket{route=\"/a \\\"b\\\"\",method=\"GET\",le=\"+Inf\"} 4
request_duration_seconds_sum{route=\"/a \\\"b\\\"\",method=\"GET\"} 0.9
request_duration_seconds_count{route=\"/a \\\"b\\\"\",method=\"GET\"} 4
";

    fn exemplar() -> Exemplar {
        Exemplar {
            trace_id: TraceId::from_bytes([0xab; 16]),
            span_id: SpanId::from_bytes([0xcd; 8]),
            value: 0.25,
            timestamp: 1_700_000_000.5,
        }
    }

    #[test]
    fn the_exposition_becomes_openmetrics_with_exemplars_on_buckets() {
        let rendered = render(EXPOSITION, |family, labels, le| {
            let wanted = [
                ("method".to_owned(), "GET".to_owned()),
                ("route".to_owned(), "/a \"b\"".to_owned()),
            ];
            (family == "request_duration_seconds" && labels[..] == wanted && le == "0.5")
                .then(exemplar)
        });
        let expected = format!(
            "\
# HELP orders Orders placed.
# TYPE orders counter
orders_total{{status=\"CONFIRMED\"}} 3
# TYPE retries unknown
retries 2
# TYPE process_open_fds gauge
process_open_fds 12
# TYPE request_duration_seconds histogram
request_duration_seconds_bucket{{route=\"/a \\\"b\\\"\",method=\"GET\",le=\"0.1\"}} 1
request_duration_seconds_bucket{{route=\"/a \\\"b\\\"\",method=\"GET\",le=\"0.5\"}} 4 # {{trace_id=\"{}\",span_id=\"{}\"}} 0.25 1700000000.500
request_duration_seconds_bucket{{route=\"/a \\\"b\\\"\",method=\"GET\",le=\"+Inf\"}} 4
request_duration_seconds_sum{{route=\"/a \\\"b\\\"\",method=\"GET\"}} 0.9
request_duration_seconds_count{{route=\"/a \\\"b\\\"\",method=\"GET\"}} 4
# EOF
",
            "ab".repeat(16),
            "cd".repeat(8)
        );
        assert_eq!(rendered, expected);
    }

    #[test]
    fn label_values_are_unescaped() {
        assert_eq!(
            parse_labels(r#"a="x\\y",b="line\nnext",c="q\"",le="1"} 3"#).unwrap(),
            vec![
                ("a".to_owned(), "x\\y".to_owned()),
                ("b".to_owned(), "line\nnext".to_owned()),
                ("c".to_owned(), "q\"".to_owned()),
                ("le".to_owned(), "1".to_owned()),
            ]
        );
        assert_eq!(parse_labels("} 3").unwrap(), vec![]);
        assert_eq!(parse_labels(r#"a="unterminated"#), None);
    }

    #[test]
    fn an_empty_exposition_is_just_the_end_marker() {
        assert_eq!(render("", |_, _, _| None), "# EOF\n");
    }
}
