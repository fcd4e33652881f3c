//! Grafana dashboards (`deploy/grafana/dashboards/*.json`) and datasource
//! provisioning, read for the checks: every query with where it comes from,
//! every datasource reference, every template variable.

use std::collections::BTreeMap;

use serde_json::Value;

use crate::yaml::{items, str_at};

/// Where the dashboards live, relative to the repository root.
pub const DASHBOARDS_DIR: &str = "deploy/grafana/dashboards";
/// The datasource provisioning file.
pub const DATASOURCES: &str = "deploy/grafana/provisioning/datasources/datasources.yaml";

/// One dashboard file.
#[derive(Debug, Clone)]
pub struct Dashboard {
    /// File name, e.g. `overview.json`.
    pub file: String,
    pub json: Value,
}

/// One PromQL query and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query {
    /// `overview.json: panel "Request rate" A`, for messages.
    pub place: String,
    pub expr: String,
}

/// A datasource reference and where it is.
#[derive(Debug, Clone)]
pub struct DatasourceRef {
    pub place: String,
    pub value: Value,
}

/// Every dashboard, by file name.
pub fn load_dashboards() -> Vec<Dashboard> {
    let dir = crate::repo_path(DASHBOARDS_DIR);
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|error| panic!("cannot list {}: {error}", dir.display()))
        .flatten()
        .map(|entry| entry.file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".json"))
        .collect();
    files.sort();
    files
        .into_iter()
        .map(|file| {
            let text = crate::read(format!("{DASHBOARDS_DIR}/{file}"));
            let json = serde_json::from_str(&text)
                .unwrap_or_else(|error| panic!("{DASHBOARDS_DIR}/{file} is not JSON: {error}"));
            Dashboard { file, json }
        })
        .collect()
}

/// Provisioned datasources: uid → type.
pub fn provisioned_datasources() -> BTreeMap<String, String> {
    let provisioning = crate::yaml::load(DATASOURCES);
    items(provisioning.get("datasources"))
        .iter()
        .map(|source| {
            (
                str_at(source, "/uid").unwrap_or_default().to_owned(),
                str_at(source, "/type").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

impl Dashboard {
    pub fn title(&self) -> &str {
        str_at(&self.json, "/title").unwrap_or_default()
    }

    pub fn uid(&self) -> &str {
        str_at(&self.json, "/uid").unwrap_or_default()
    }

    /// Every panel, those nested in collapsed rows included.
    pub fn panels(&self) -> Vec<&Value> {
        let mut panels = Vec::new();
        for panel in items(self.json.get("panels")) {
            panels.push(panel);
            panels.extend(items(panel.get("panels")));
        }
        panels
    }

    /// The template variables.
    pub fn variables(&self) -> &[Value] {
        items(self.json.pointer("/templating/list"))
    }

    fn panel_place(&self, panel: &Value) -> String {
        format!(
            "{}: panel {:?}",
            self.file,
            str_at(panel, "/title").unwrap_or_default()
        )
    }

    /// The PromQL of every Prometheus target (panels' `expr`).
    pub fn queries(&self) -> Vec<Query> {
        let mut queries = Vec::new();
        for panel in self.panels() {
            for target in items(panel.get("targets")) {
                if let Some(expr) = str_at(target, "/expr") {
                    queries.push(Query {
                        place: format!(
                            "{} {}",
                            self.panel_place(panel),
                            str_at(target, "/refId").unwrap_or_default()
                        ),
                        expr: expr.to_owned(),
                    });
                }
            }
        }
        queries
    }

    /// The query of every `query` variable (the text Grafana sends to the
    /// Prometheus datasource: `label_values(...)`, `query_result(...)`, ...).
    pub fn variable_queries(&self) -> Vec<Query> {
        self.variables()
            .iter()
            .filter(|variable| str_at(variable, "/type") == Some("query"))
            .filter_map(|variable| {
                let query = variable.get("query")?;
                let text = query
                    .as_str()
                    .or_else(|| str_at(query, "/query"))?
                    .to_owned();
                Some(Query {
                    place: format!(
                        "{}: variable {}",
                        self.file,
                        str_at(variable, "/name").unwrap_or_default()
                    ),
                    expr: text,
                })
            })
            .collect()
    }

    /// Every datasource reference: panels, targets, variables, annotations.
    pub fn datasource_refs(&self) -> Vec<DatasourceRef> {
        let mut refs = Vec::new();
        for panel in self.panels() {
            if str_at(panel, "/type") == Some("row") {
                continue;
            }
            refs.push(DatasourceRef {
                place: self.panel_place(panel),
                value: panel.get("datasource").cloned().unwrap_or(Value::Null),
            });
            for target in items(panel.get("targets")) {
                refs.push(DatasourceRef {
                    place: format!(
                        "{} target {}",
                        self.panel_place(panel),
                        str_at(target, "/refId").unwrap_or_default()
                    ),
                    value: target.get("datasource").cloned().unwrap_or(Value::Null),
                });
            }
        }
        for variable in self.variables() {
            if str_at(variable, "/type") == Some("query") {
                refs.push(DatasourceRef {
                    place: format!(
                        "{}: variable {}",
                        self.file,
                        str_at(variable, "/name").unwrap_or_default()
                    ),
                    value: variable.get("datasource").cloned().unwrap_or(Value::Null),
                });
            }
        }
        for annotation in items(self.json.pointer("/annotations/list")) {
            if annotation.get("builtIn").and_then(Value::as_i64) == Some(1) {
                continue;
            }
            refs.push(DatasourceRef {
                place: format!(
                    "{}: annotation {}",
                    self.file,
                    str_at(annotation, "/name").unwrap_or_default()
                ),
                value: annotation.get("datasource").cloned().unwrap_or(Value::Null),
            });
        }
        refs
    }
}

/// What a variable query asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableQuery {
    /// `label_values(selector, label)` (`selector` empty for
    /// `label_values(label)`).
    LabelValues { selector: String, label: String },
    /// `query_result(expr)`: a PromQL expression.
    Expr(String),
    /// `label_names()`, `metrics(regex)`: no metric to check.
    Other,
}

/// Parses the text of a Prometheus variable query.
pub fn parse_variable_query(text: &str) -> VariableQuery {
    let text = text.trim();
    if let Some(inner) = text
        .strip_prefix("label_values(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return match inner.rsplit_once(',') {
            Some((selector, label)) => VariableQuery::LabelValues {
                selector: selector.trim().to_owned(),
                label: label.trim().to_owned(),
            },
            None => VariableQuery::LabelValues {
                selector: String::new(),
                label: inner.trim().to_owned(),
            },
        };
    }
    if let Some(inner) = text
        .strip_prefix("query_result(")
        .and_then(|rest| rest.strip_suffix(')'))
    {
        return VariableQuery::Expr(inner.trim().to_owned());
    }
    VariableQuery::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variable_queries_parse() {
        assert_eq!(
            parse_variable_query("label_values(x_count{a=\"b,c\"}, job)"),
            VariableQuery::LabelValues {
                selector: "x_count{a=\"b,c\"}".into(),
                label: "job".into()
            }
        );
        assert_eq!(
            parse_variable_query("label_values(job)"),
            VariableQuery::LabelValues {
                selector: String::new(),
                label: "job".into()
            }
        );
        assert_eq!(
            parse_variable_query("query_result(topk(5, up))"),
            VariableQuery::Expr("topk(5, up)".into())
        );
        assert_eq!(parse_variable_query("label_names()"), VariableQuery::Other);
    }

    #[test]
    fn panels_in_rows_and_their_queries() {
        let dashboard = Dashboard {
            file: "x.json".into(),
            json: serde_json::json!({
                "panels": [
                    {"type": "row", "title": "r", "panels": [
                        {"type": "timeseries", "title": "inner", "datasource": {"uid": "prometheus"},
                         "targets": [{"refId": "A", "expr": "up"}]}
                    ]},
                    {"type": "timeseries", "title": "outer",
                     "targets": [{"refId": "B", "expr": "sum(x)"}, {"refId": "C", "queryType": "search"}]}
                ],
                "templating": {"list": [{"type": "query", "name": "v", "query": {"query": "label_values(job)"}}]}
            }),
        };
        assert_eq!(dashboard.panels().len(), 3);
        let queries = dashboard.queries();
        assert_eq!(queries.len(), 2);
        assert_eq!(queries[0].place, "x.json: panel \"inner\" A");
        assert_eq!(dashboard.variable_queries()[0].expr, "label_values(job)");
        // inner panel + its target, outer panel + two targets, the variable.
        assert_eq!(dashboard.datasource_refs().len(), 6);
    }
}
