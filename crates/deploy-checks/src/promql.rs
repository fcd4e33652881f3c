//! Just enough of PromQL to tell which metrics and labels a query uses.
//!
//! Parsing proper is `promtool`'s job (the dashboards' checks run it); this
//! lexer only walks a query that parses and reports its vector selectors
//! (metric name and the label names it matches on) and the label names of its
//! `by`/`without`/`on`/`ignoring`/`group_left`/`group_right` clauses, so the
//! checks can hold both against what the services export.
//!
//! Grafana's template variables are replaced first ([`expand_grafana`]): the
//! interval variables by durations, every other `$name` by a placeholder that
//! is valid inside a label matcher's string and nowhere else, so a variable
//! misplaced outside a string fails promtool.

use std::collections::BTreeSet;

/// One vector selector: `name{label="value", ...}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selector {
    pub metric: String,
    /// The label names it matches on, in order.
    pub labels: Vec<String>,
}

/// What a query refers to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Analysis {
    pub selectors: Vec<Selector>,
    /// Label names of grouping and vector-matching clauses.
    pub grouping: BTreeSet<String>,
}

impl Analysis {
    /// The metric names, without repeats.
    pub fn metrics(&self) -> BTreeSet<&str> {
        self.selectors.iter().map(|s| s.metric.as_str()).collect()
    }
}

/// Aggregation operators: an identifier that names one is never a metric.
const AGGREGATIONS: [&str; 14] = [
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
    "limitk",
    "limit_ratio",
];

/// Keywords followed by a parenthesised list of label names.
const LABEL_LIST_KEYWORDS: [&str; 6] = [
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Other keywords (binary operators and modifiers).
const KEYWORDS: [&str; 7] = ["and", "or", "unless", "bool", "offset", "atan2", "start"];

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Ident(String),
    Str,
    Number,
    Open(char),
    Close(char),
    Comma,
    /// Any operator: `=~`, `!=`, `+`, `/`, `@`, ...
    Op,
}

/// Tokenises a query; `Err` on a character PromQL does not have.
fn lex(query: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = query.chars().collect();
    let mut tokens = Vec::new();
    let mut at = 0;
    while let Some(&c) = chars.get(at) {
        if c.is_whitespace() {
            at += 1;
        } else if c == '#' {
            while chars.get(at).is_some_and(|&c| c != '\n') {
                at += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            at += 1;
            loop {
                match chars.get(at) {
                    None => return Err(format!("unterminated string in {query:?}")),
                    Some('\\') if c != '`' => at += 2,
                    Some(&end) if end == c => {
                        at += 1;
                        break;
                    }
                    Some(_) => at += 1,
                }
            }
            tokens.push(Token::Str);
        } else if c.is_ascii_digit()
            || (c == '.' && chars.get(at + 1).is_some_and(char::is_ascii_digit))
        {
            // Numbers and durations (`0.95`, `1e3`, `5m`, `1h30m`, `0x1f`).
            while chars
                .get(at)
                .is_some_and(|&c| c.is_ascii_alphanumeric() || c == '.' || c == '_')
            {
                at += 1;
            }
            tokens.push(Token::Number);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = at;
            while chars
                .get(at)
                .is_some_and(|&c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            {
                at += 1;
            }
            tokens.push(Token::Ident(chars[start..at].iter().collect()));
        } else if matches!(c, '(' | '{' | '[') {
            tokens.push(Token::Open(c));
            at += 1;
        } else if matches!(c, ')' | '}' | ']') {
            tokens.push(Token::Close(c));
            at += 1;
        } else if c == ',' {
            tokens.push(Token::Comma);
            at += 1;
        } else if "+-*/%^=!<>~@".contains(c) {
            tokens.push(Token::Op);
            at += 1;
        } else {
            return Err(format!("unexpected {c:?} in {query:?}"));
        }
    }
    Ok(tokens)
}

/// The selectors and grouping labels of a query.
pub fn analyze(query: &str) -> Result<Analysis, String> {
    let tokens = lex(query)?;
    let mut analysis = Analysis::default();
    let mut at = 0;
    while at < tokens.len() {
        match &tokens[at] {
            Token::Open('[') => {
                // A range or subquery duration: nothing to see.
                while at < tokens.len() && tokens[at] != Token::Close(']') {
                    at += 1;
                }
                at += 1;
            }
            Token::Open('{') => {
                // A selector without a metric name.
                let (labels, next) = matchers(&tokens, at)?;
                analysis.selectors.push(Selector {
                    metric: String::new(),
                    labels,
                });
                at = next;
            }
            Token::Ident(word) => {
                let next = tokens.get(at + 1);
                if LABEL_LIST_KEYWORDS.contains(&word.as_str()) {
                    if next == Some(&Token::Open('(')) {
                        let (labels, after) = label_list(&tokens, at + 1)?;
                        analysis.grouping.extend(labels);
                        at = after;
                    } else {
                        at += 1;
                    }
                } else if AGGREGATIONS.contains(&word.as_str())
                    || KEYWORDS.contains(&word.as_str())
                    || next == Some(&Token::Open('('))
                {
                    // An operator or a function call.
                    at += 1;
                } else {
                    let mut selector = Selector {
                        metric: word.clone(),
                        labels: Vec::new(),
                    };
                    at += 1;
                    if tokens.get(at) == Some(&Token::Open('{')) {
                        let (labels, after) = matchers(&tokens, at)?;
                        selector.labels = labels;
                        at = after;
                    }
                    analysis.selectors.push(selector);
                }
            }
            _ => at += 1,
        }
    }
    Ok(analysis)
}

/// `{name op "value", ...}` starting at the `{`: the label names and the
/// index after the `}`.
fn matchers(tokens: &[Token], open: usize) -> Result<(Vec<String>, usize), String> {
    let mut labels = Vec::new();
    let mut at = open + 1;
    loop {
        match tokens.get(at) {
            Some(Token::Close('}')) => return Ok((labels, at + 1)),
            Some(Token::Comma) => at += 1,
            Some(Token::Ident(name)) => {
                labels.push(name.clone());
                at += 1;
                while matches!(tokens.get(at), Some(Token::Op)) {
                    at += 1;
                }
                if tokens.get(at) != Some(&Token::Str) {
                    return Err(format!("label {name} is not matched against a string"));
                }
                at += 1;
            }
            // A quoted metric name (`{"name"}`, PromQL 3) or garbage.
            Some(Token::Str) => at += 1,
            other => return Err(format!("unexpected {other:?} in a label matcher list")),
        }
    }
}

/// `(a, b, ...)` starting at the `(`: the names and the index after `)`.
fn label_list(tokens: &[Token], open: usize) -> Result<(Vec<String>, usize), String> {
    let mut labels = Vec::new();
    let mut at = open + 1;
    loop {
        match tokens.get(at) {
            Some(Token::Close(')')) => return Ok((labels, at + 1)),
            Some(Token::Comma) => at += 1,
            Some(Token::Ident(name)) => {
                labels.push(name.clone());
                at += 1;
            }
            other => return Err(format!("unexpected {other:?} in a label list")),
        }
    }
}

/// Grafana's interval variables and the durations that stand in for them.
const INTERVALS: [(&str, &str); 5] = [
    ("__rate_interval", "1m"),
    ("__interval", "15s"),
    ("__range", "1h"),
    ("__range_s", "3600"),
    ("__range_ms", "3600000"),
];

/// What every other variable becomes: valid in a matcher's string only.
pub const PLACEHOLDER: &str = "grafana_variable";

/// Replaces Grafana's variables (`$name`, `${name}`, `${name:format}`,
/// `[[name]]`) and returns the query with the names of the variables it used
/// (built-ins, which start with `__`, left out).
pub fn expand_grafana(query: &str) -> (String, BTreeSet<String>) {
    let mut out = String::with_capacity(query.len());
    let mut used = BTreeSet::new();
    let mut rest = query;
    while !rest.is_empty() {
        let (name, consumed) = if let Some(after) = rest.strip_prefix("${") {
            match after.find('}') {
                Some(end) => {
                    let inner = &after[..end];
                    let name = inner.split(':').next().unwrap_or_default();
                    (Some(name.to_owned()), end + 3)
                }
                None => (None, 0),
            }
        } else if let Some(after) = rest.strip_prefix("[[") {
            match after.find("]]") {
                Some(end) => (Some(after[..end].to_owned()), end + 4),
                None => (None, 0),
            }
        } else if let Some(after) = rest.strip_prefix('$') {
            let len = after
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(after.len());
            if len == 0 {
                (None, 0)
            } else {
                (Some(after[..len].to_owned()), len + 1)
            }
        } else {
            (None, 0)
        };
        match name {
            Some(name) => {
                match INTERVALS.iter().find(|(builtin, _)| *builtin == name) {
                    Some((_, value)) => out.push_str(value),
                    None => {
                        out.push_str(PLACEHOLDER);
                        if !name.starts_with("__") {
                            used.insert(name);
                        }
                    }
                }
                rest = &rest[consumed..];
            }
            None => {
                let c = rest.chars().next().unwrap_or_default();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    (out, used)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_and_grouping_labels() {
        let analysis = analyze(
            r#"histogram_quantile(0.95, sum by (job, le) (rate(http_server_request_duration_seconds_bucket{job=~"gateway", http_route!="/x"}[5m])))
               / on (job) group_left (instance) max without (pod) (up offset 5m)"#,
        )
        .unwrap();
        assert_eq!(
            analysis.selectors,
            [
                Selector {
                    metric: "http_server_request_duration_seconds_bucket".into(),
                    labels: vec!["job".into(), "http_route".into()],
                },
                Selector {
                    metric: "up".into(),
                    labels: vec![],
                },
            ]
        );
        assert_eq!(
            analysis
                .grouping
                .iter()
                .map(String::as_str)
                .collect::<Vec<_>>(),
            ["instance", "job", "le", "pod"]
        );
    }

    #[test]
    fn numbers_strings_and_keywords_are_not_metrics() {
        let analysis = analyze(
            r#"sum(increase(a_total{x="sum by (y) (b)"}[1h30m])) or vector(0) and bool c > 1e3"#,
        )
        .unwrap();
        assert_eq!(
            analysis.metrics().into_iter().collect::<Vec<_>>(),
            ["a_total", "c"]
        );
        assert!(analysis.grouping.is_empty());
        let topk = analyze("topk(10, rate(d_count[5m]))").unwrap();
        assert_eq!(topk.metrics().into_iter().collect::<Vec<_>>(), ["d_count"]);
    }

    #[test]
    fn bad_input_is_refused() {
        assert!(analyze(r#"a{x="unterminated}"#).is_err());
        assert!(analyze("a{x=y}").is_err());
        assert!(analyze("a ; b").is_err());
    }

    #[test]
    fn grafana_variables_expand() {
        let (query, used) = expand_grafana(
            r#"rate(x{job=~"$service", a="${system:regex}", b="[[old]]"}[$__rate_interval]) / $__range_s"#,
        );
        assert_eq!(
            query,
            r#"rate(x{job=~"grafana_variable", a="grafana_variable", b="grafana_variable"}[1m]) / 3600"#
        );
        assert_eq!(
            used.into_iter().collect::<Vec<_>>(),
            ["old", "service", "system"]
        );
        let (query, used) = expand_grafana("increase(x[$__range]) + $__tags");
        assert_eq!(query, "increase(x[1h]) + grafana_variable");
        assert!(used.is_empty());
    }
}
