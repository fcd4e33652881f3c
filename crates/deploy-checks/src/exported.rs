//! The metrics the workspace's code records, found by reading its sources.
//!
//! Every metric goes through the `metrics` facade's macros
//! (`counter!`, `gauge!`, `histogram!`), with the name as a string literal or
//! a `const NAME: &str = "..."` defined somewhere in the workspace, and the
//! labels as `"key" => value` pairs. Reading those calls gives the names and
//! label keys the binaries can export, without running them; a call whose
//! name or labels cannot be read that way is reported, so the list never
//! silently misses one.
//!
//! Only library and binary sources count: `tests/`, `benches/`, `examples/`
//! and `#[cfg(test)] mod` blocks are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// What the `metrics` macro was.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    /// The series names Prometheus stores for a metric of this kind.
    pub fn series(self, name: &str) -> Vec<String> {
        match self {
            Kind::Histogram => ["_bucket", "_sum", "_count"]
                .iter()
                .map(|suffix| format!("{name}{suffix}"))
                .collect(),
            Kind::Counter | Kind::Gauge => vec![name.to_owned()],
        }
    }
}

/// One exported metric.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Metric {
    pub kind: Kind,
    /// Label keys over every call site.
    pub labels: BTreeSet<String>,
    /// `path:line` of each call site.
    pub sites: Vec<String>,
}

/// The scan: metrics by name, and what could not be read.
#[derive(Debug, Clone, Default)]
pub struct Scan {
    pub metrics: BTreeMap<String, Metric>,
    pub problems: Vec<String>,
}

impl Scan {
    /// Every series name (histograms as `_bucket`/`_sum`/`_count`) → the
    /// metric it belongs to.
    pub fn series(&self) -> BTreeMap<String, &str> {
        let mut series = BTreeMap::new();
        for (name, metric) in &self.metrics {
            for one in metric.kind.series(name) {
                series.insert(one, name.as_str());
            }
        }
        series
    }
}

/// A metric recorded without the macros (through a `Recorder` and a `Key`
/// built by hand, e.g. to cache keys on a hot path): what it is and which
/// file records it, for [`Scan::add_declared`] to verify.
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    pub name: &'static str,
    pub kind: Kind,
    pub labels: &'static [&'static str],
    /// Relative to the repository root.
    pub file: &'static str,
}

impl Scan {
    /// Adds metrics recorded without the macros. Each must still be backed
    /// by its file: the name and every label as string literals there, and a
    /// `register_<kind>` call (or the kind's macro). A declared metric the
    /// macros record too must agree with them on kind and labels.
    pub fn add_declared(&mut self, declared: &[Declared]) {
        self.add_declared_from(declared, |file| {
            std::fs::read_to_string(crate::repo_path(file)).map_err(|error| error.to_string())
        });
    }

    /// [`Scan::add_declared`], reading files with `read`.
    pub fn add_declared_from(
        &mut self,
        declared: &[Declared],
        read: impl Fn(&str) -> Result<String, String>,
    ) {
        for metric in declared {
            let labels: BTreeSet<String> = metric
                .labels
                .iter()
                .map(|label| (*label).to_owned())
                .collect();
            if let Some(found) = self.metrics.get(metric.name) {
                if found.kind != metric.kind || found.labels != labels {
                    self.problems.push(format!(
                        "{} is declared as a {:?} with labels {labels:?} but recorded as a {:?} with {:?} at {}",
                        metric.name,
                        metric.kind,
                        found.kind,
                        found.labels,
                        found.sites.join(", ")
                    ));
                }
                continue;
            }
            let text = match read(metric.file) {
                Ok(text) => without_comments(&without_test_modules(&text)),
                Err(error) => {
                    self.problems.push(format!(
                        "{} is declared as recorded in {}, which cannot be read: {error}",
                        metric.name, metric.file
                    ));
                    continue;
                }
            };
            let (register, macro_name) = match metric.kind {
                Kind::Counter => ("register_counter", "counter!"),
                Kind::Gauge => ("register_gauge", "gauge!"),
                Kind::Histogram => ("register_histogram", "histogram!"),
            };
            let mut missing: Vec<String> = std::iter::once(metric.name)
                .chain(metric.labels.iter().copied())
                .filter(|literal| !text.contains(&format!("\"{literal}\"")))
                .map(|literal| format!("\"{literal}\""))
                .collect();
            if !text.contains(register) && !text.contains(macro_name) {
                missing.push(register.to_owned());
            }
            if missing.is_empty() {
                self.metrics.insert(
                    metric.name.to_owned(),
                    Metric {
                        kind: metric.kind,
                        labels,
                        sites: vec![format!("{} (declared)", metric.file)],
                    },
                );
            } else {
                self.problems.push(format!(
                    "{} is declared as recorded in {}, which has no {}: update the declaration",
                    metric.name,
                    metric.file,
                    missing.join(", ")
                ));
            }
        }
    }
}

const MACROS: [(&str, Kind); 3] = [
    ("counter!", Kind::Counter),
    ("gauge!", Kind::Gauge),
    ("histogram!", Kind::Histogram),
];

/// Scans every `.rs` file below `roots` (relative to the repository root).
pub fn scan_workspace(roots: &[&str]) -> Scan {
    let mut files = Vec::new();
    for root in roots {
        collect_sources(&crate::repo_path(root), &mut files);
    }
    files.sort();
    let sources: Vec<(String, String)> = files
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .unwrap_or_else(|error| panic!("cannot read {}: {error}", path.display()));
            let relative = path
                .strip_prefix(crate::repo_root())
                .unwrap_or(path)
                .display()
                .to_string();
            (relative, without_comments(&without_test_modules(&text)))
        })
        .collect();
    scan(&sources)
}

fn collect_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if path.is_dir() {
            if !matches!(
                name.as_str(),
                "tests" | "benches" | "examples" | "target" | ".git"
            ) {
                collect_sources(&path, out);
            }
        } else if name.ends_with(".rs") && name != "tests.rs" {
            out.push(path);
        }
    }
}

/// The text up to the first `#[cfg(test)]` that opens an inline module
/// (test modules sit at the end of a file by convention).
fn without_test_modules(text: &str) -> String {
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        if line.trim() == "#[cfg(test)]" {
            let next = text[offset + line.len()..].trim_start();
            let declaration = next.split_once(['{', ';']);
            let inline = declaration.is_some_and(|(head, _)| {
                next.as_bytes().get(head.len()) == Some(&b'{')
                    && (head.starts_with("mod ") || head.starts_with("pub mod "))
            });
            if inline {
                return text[..offset].to_owned();
            }
        }
        offset += line.len();
    }
    text.to_owned()
}

/// The text with comments (doc comments included) blanked out, line breaks
/// kept so that line numbers stay right. String, raw string and character
/// literals are skipped over, so `"http://..."` is not a comment.
fn without_comments(text: &str) -> String {
    let chars: Vec<char> = text.chars().collect();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    let blank = |c: char| if c == '\n' { '\n' } else { ' ' };
    while at < chars.len() {
        let c = chars[at];
        let next = chars.get(at + 1).copied();
        if c == '/' && next == Some('/') {
            while at < chars.len() && chars[at] != '\n' {
                out.push(' ');
                at += 1;
            }
        } else if c == '/' && next == Some('*') {
            let mut depth = 0usize;
            while at < chars.len() {
                if chars[at] == '/' && chars.get(at + 1) == Some(&'*') {
                    depth += 1;
                    out.push_str("  ");
                    at += 2;
                } else if chars[at] == '*' && chars.get(at + 1) == Some(&'/') {
                    depth -= 1;
                    out.push_str("  ");
                    at += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    out.push(blank(chars[at]));
                    at += 1;
                }
            }
        } else if c == 'r'
            && matches!(next, Some('"' | '#'))
            && !at
                .checked_sub(1)
                .and_then(|before| chars.get(before))
                .is_some_and(|b| b.is_ascii_alphanumeric() || *b == '_')
        {
            // A raw string r"..." or r#"..."#: copied as it is.
            let hashes = chars[at + 1..].iter().take_while(|&&h| h == '#').count();
            if chars.get(at + 1 + hashes) != Some(&'"') {
                out.push(c);
                at += 1;
                continue;
            }
            let start = at;
            at += 2 + hashes;
            while at < chars.len() {
                if chars[at] == '"'
                    && chars[at + 1..]
                        .iter()
                        .take(hashes)
                        .filter(|&&h| h == '#')
                        .count()
                        == hashes
                {
                    at += 1 + hashes;
                    break;
                }
                at += 1;
            }
            out.extend(&chars[start..at.min(chars.len())]);
        } else if c == '"' {
            let start = at;
            at += 1;
            while at < chars.len() && chars[at] != '"' {
                at += if chars[at] == '\\' { 2 } else { 1 };
            }
            at += 1;
            out.extend(&chars[start..at.min(chars.len())]);
        } else if c == '\'' {
            // A character literal ('"', '\'', '\n') or a lifetime ('a).
            let len = match (next, chars.get(at + 2), chars.get(at + 3)) {
                (Some('\\'), _, _) => chars[at + 2..]
                    .iter()
                    .position(|&q| q == '\'')
                    .map(|end| end + 3),
                (Some(_), Some('\''), _) => Some(3),
                _ => None,
            };
            let len = len.unwrap_or(1).min(chars.len() - at);
            out.extend(&chars[at..at + len]);
            at += len;
        } else {
            out.push(c);
            at += 1;
        }
    }
    out
}

/// Scans `(path, text)` pairs.
pub fn scan(sources: &[(String, String)]) -> Scan {
    let constants = constants(sources);
    let mut result = Scan::default();
    for (path, text) in sources {
        for (macro_name, kind) in MACROS {
            let mut from = 0;
            while let Some(found) = text[from..].find(macro_name) {
                let start = from + found;
                from = start + macro_name.len();
                // `counter!` but not `my_counter!`, `describe_counter!` or
                // the text `"counter!"`.
                let preceded = text[..start]
                    .chars()
                    .next_back()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == '"');
                if preceded {
                    continue;
                }
                let line = text[..start].matches('\n').count() + 1;
                let site = format!("{path}:{line}");
                let rest = text[from..].trim_start();
                let Some(args) = rest.strip_prefix('(').and_then(balanced) else {
                    result
                        .problems
                        .push(format!("{site}: cannot read the arguments of {macro_name}"));
                    continue;
                };
                let parts = split_top_level(args);
                let Some(first) = parts.first().map(|part| part.trim()) else {
                    result
                        .problems
                        .push(format!("{site}: {macro_name} without a name"));
                    continue;
                };
                let name = match string_literal(first) {
                    Some(name) => name,
                    None => {
                        let ident = first.rsplit("::").next().unwrap_or(first).trim();
                        match constants.get(ident).map(|values| values.as_slice()) {
                            Some([value]) => value.clone(),
                            Some(values) => {
                                result.problems.push(format!(
                                    "{site}: {macro_name} names {first}, which is defined with several values: {values:?}"
                                ));
                                continue;
                            }
                            None => {
                                result.problems.push(format!(
                                    "{site}: {macro_name} names {first}, which is neither a string literal nor a `const {ident}: &str` of the workspace"
                                ));
                                continue;
                            }
                        }
                    }
                };
                let mut labels = BTreeSet::new();
                for part in &parts[1..] {
                    let part = part.trim();
                    if part.is_empty() {
                        continue;
                    }
                    match part
                        .split_once("=>")
                        .and_then(|(key, _)| string_literal(key.trim()))
                    {
                        Some(key) => {
                            labels.insert(key);
                        }
                        None => result.problems.push(format!(
                            "{site}: {macro_name}({name}, ...) has a label argument that is not `\"key\" => value`: {part}"
                        )),
                    }
                }
                let entry = result.metrics.entry(name.clone()).or_insert(Metric {
                    kind,
                    labels: BTreeSet::new(),
                    sites: Vec::new(),
                });
                if entry.kind != kind {
                    result.problems.push(format!(
                        "{site}: {name} is recorded as a {kind:?} here and as a {:?} at {}",
                        entry.kind,
                        entry.sites.join(", ")
                    ));
                }
                entry.labels.extend(labels);
                entry.sites.push(site);
            }
        }
    }
    result
}

/// Every `const NAME: &str = "value";` of the sources, by name.
fn constants(sources: &[(String, String)]) -> BTreeMap<String, Vec<String>> {
    let mut constants: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (_, text) in sources {
        let mut from = 0;
        while let Some(found) = text[from..].find("const ") {
            let start = from + found + "const ".len();
            from = start;
            let rest = &text[start..];
            let Some((name, after)) = rest.split_once(':') else {
                continue;
            };
            let name = name.trim();
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                continue;
            }
            let Some(value) = after
                .trim_start()
                .strip_prefix("&str")
                .or_else(|| after.trim_start().strip_prefix("&'static str"))
                .and_then(|value| value.trim_start().strip_prefix('='))
                .and_then(|value| value.split_once(';'))
                .and_then(|(value, _)| string_literal(value.trim()))
            else {
                continue;
            };
            let values = constants.entry(name.to_owned()).or_default();
            if !values.contains(&value) {
                values.push(value);
            }
        }
    }
    constants
}

/// The text up to the parenthesis that closes an already opened one.
fn balanced(text: &str) -> Option<&str> {
    let mut depth = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for (at, c) in text.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => {
                depth -= 1;
                if depth == 0 {
                    return Some(&text[..at]);
                }
            }
            _ => {}
        }
    }
    None
}

/// Splits macro arguments on the commas outside brackets and strings.
fn split_top_level(args: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    let mut start = 0;
    for (at, c) in args.char_indices() {
        if in_string {
            match c {
                _ if escaped => escaped = false,
                '\\' => escaped = true,
                '"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '(' | '[' | '{' => depth += 1,
            ')' | ']' | '}' => depth = depth.saturating_sub(1),
            ',' if depth == 0 => {
                parts.push(&args[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&args[start..]);
    parts
}

/// The value of a plain `"..."` literal without escapes.
fn string_literal(text: &str) -> Option<String> {
    let inner = text.strip_prefix('"')?.strip_suffix('"')?;
    (!inner.contains(['"', '\\'])).then(|| inner.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sources(files: &[(&str, &str)]) -> Vec<(String, String)> {
        files
            .iter()
            .map(|(path, text)| {
                (
                    (*path).to_owned(),
                    without_comments(&without_test_modules(text)),
                )
            })
            .collect()
    }

    #[test]
    fn literals_constants_and_labels() {
        let scan = scan(&sources(&[
            (
                "a.rs",
                r#"pub const SAGA_TOTAL: &str = "ferrishop_saga_total";
fn f() {
    metrics::counter!(names::SAGA_TOTAL, "saga" => t.clone(), "outcome" => o.as_str())
        .increment(1);
    metrics::histogram!(
        "rpc_server_duration_seconds",
        "rpc_service" => service,
        "rpc_method" => format!("{}", m),
    )
    .record(1.0);
    gauge!(LAG, "projection" => self.name().to_owned()).set(0.0);
}
"#,
            ),
            (
                "b.rs",
                "pub(crate) const LAG: &'static str = \"x_lag\";\nfn g() { metrics::describe_counter!(\"ignored\", \"help\"); }\n#[cfg(test)]\nmod tests { fn t() { counter!(\"test_only\").increment(1); } }\n",
            ),
        ]));
        assert!(scan.problems.is_empty(), "{:?}", scan.problems);
        assert_eq!(
            scan.metrics.keys().map(String::as_str).collect::<Vec<_>>(),
            [
                "ferrishop_saga_total",
                "rpc_server_duration_seconds",
                "x_lag"
            ]
        );
        let saga = &scan.metrics["ferrishop_saga_total"];
        assert_eq!(saga.kind, Kind::Counter);
        assert_eq!(
            saga.labels.iter().map(String::as_str).collect::<Vec<_>>(),
            ["outcome", "saga"]
        );
        assert_eq!(saga.sites, ["a.rs:3"]);
        let rpc = &scan.metrics["rpc_server_duration_seconds"];
        assert_eq!(rpc.kind, Kind::Histogram);
        assert_eq!(rpc.labels.len(), 2);
        let series = scan.series();
        assert_eq!(
            series.get("rpc_server_duration_seconds_bucket"),
            Some(&"rpc_server_duration_seconds")
        );
        assert_eq!(series.get("x_lag"), Some(&"x_lag"));
        assert!(!series.contains_key("rpc_server_duration_seconds"));
    }

    #[test]
    fn comments_are_blanked_and_literals_kept() {
        let text = "let a = \"http://x\"; // counter!(\"no\")\n/* gauge!(\"no\") /* nested */ */ let c = '\"'; let r = r#\"//\"#;\nfn f<'a>() { histogram!(\"yes\") }";
        let stripped = without_comments(text);
        assert_eq!(stripped.len(), text.len());
        assert!(stripped.contains("\"http://x\";"));
        assert!(!stripped.contains("no"));
        assert!(stripped.contains("r#\"//\"#"));
        assert!(stripped.contains("histogram!(\"yes\")"));
        assert_eq!(stripped.lines().count(), text.lines().count());
        let scan = scan(&sources(&[("d.rs", text)]));
        assert_eq!(scan.metrics.keys().collect::<Vec<_>>(), ["yes"]);
        assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    }

    #[test]
    fn declared_metrics_are_checked_against_their_file_and_the_macros() {
        const LABELS: &[&str] = &["system", "outcome"];
        let declared = |name| Declared {
            name,
            kind: Kind::Histogram,
            labels: LABELS,
            file: "t.rs",
        };
        let file = "pub const D: &str = \"d_seconds\";\nfn r() { let k = Key::from_parts(D, vec![Label::new(\"system\", s), Label::new(\"outcome\", o)]); recorder.register_histogram(&k, &M); }\n";
        let read = |_: &str| Ok(file.to_owned());
        let mut scan = Scan::default();
        scan.add_declared_from(&[declared("d_seconds")], read);
        assert!(scan.problems.is_empty(), "{:?}", scan.problems);
        assert_eq!(scan.metrics["d_seconds"].labels.len(), 2);
        // Not in the file: reported.
        let mut scan = Scan::default();
        scan.add_declared_from(&[declared("e_seconds")], read);
        assert_eq!(scan.problems.len(), 1, "{:?}", scan.problems);
        assert!(scan.problems[0].contains("\"e_seconds\""));
        // Recorded by a macro too, with other labels: reported.
        let mut scan = scan_from(&[(
            "m.rs",
            "fn f() { histogram!(\"d_seconds\", \"system\" => s).record(1.0); }",
        )]);
        scan.add_declared_from(&[declared("d_seconds")], read);
        assert_eq!(scan.problems.len(), 1, "{:?}", scan.problems);
        // ... with the same labels: fine.
        let mut scan = scan_from(&[(
            "m.rs",
            "fn f() { histogram!(\"d_seconds\", \"system\" => s, \"outcome\" => o).record(1.0); }",
        )]);
        scan.add_declared_from(&[declared("d_seconds")], |_| Err("unread".into()));
        assert!(scan.problems.is_empty(), "{:?}", scan.problems);
    }

    fn scan_from(files: &[(&str, &str)]) -> Scan {
        scan(&sources(files))
    }

    #[test]
    fn unreadable_calls_are_reported() {
        let scan = scan(&sources(&[(
            "c.rs",
            "fn f() { counter!(name_from_elsewhere).increment(1); gauge!(\"g\", &labels).set(1.0); }",
        )]));
        assert_eq!(scan.problems.len(), 2, "{:?}", scan.problems);
        assert!(scan.problems[0].contains("name_from_elsewhere"));
        assert!(scan.problems[1].contains("&labels"));
    }
}
