//! The environment a deployment gives a binary, against what the binary reads.
//!
//! Two directions:
//! - everything set must be a variable the binary lists in `--help` (a typo or
//!   a variable it no longer reads is silently ignored at run time);
//! - every variable the binary reads whose default points at the local machine
//!   (`127.0.0.1`, `localhost`: DESIGN.md's defaults for a developer's laptop)
//!   must be set, since inside a container or pod that default reaches
//!   nothing. In the stacks that bring their own infrastructure
//!   (docker-compose.yml, the k8s dev overlay) the listen addresses, the
//!   telemetry settings, `SEED_CATALOG` (inventory) and `ADMIN_EMAILS` (user)
//!   must be set too, once the binary reads them.
//!
//! So when a service starts reading, say, `AMQP_URL`, these checks fail until
//! the deployments give it the stack's broker, and say which line to add.

use std::collections::BTreeMap;

use crate::{EnvVar, contract};

/// How much a deployment must set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// A stack with its own infrastructure: loopback defaults and the
    /// stack's required settings.
    Stack,
    /// Endpoints managed elsewhere: loopback defaults only.
    External,
}

/// Variables a stack sets whenever the binary reads them: `(binary or every
/// binary, name)`.
const STACK_REQUIRED: [(Option<&str>, &str); 6] = [
    (None, "HTTP_ADDR"),
    (None, "GRPC_ADDR"),
    (None, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    (None, "OTEL_SERVICE_NAME"),
    (Some("inventory"), "SEED_CATALOG"),
    (Some("user"), "ADMIN_EMAILS"),
];

/// Whether a value points at the machine it runs on.
pub fn is_loopback(value: &str) -> bool {
    value.contains("127.0.0.1") || value.contains("localhost") || value.contains("[::1]")
}

/// What the stack would set `name` to for `binary`: the value to suggest.
pub fn suggestion(binary: &str, name: &str, default: Option<&str>) -> String {
    let this = contract(binary);
    let upstream = |suffix: &str, grpc: bool| {
        name.strip_suffix(suffix)
            .map(str::to_ascii_lowercase)
            .and_then(|other| contract(&other).copied())
            .map(|other| {
                let port = if grpc {
                    other.grpc_port
                } else {
                    other.http_port
                };
                format!("http://{}:{port}", other.name)
            })
    };
    match name {
        "DATABASE_URL" => format!(
            "postgres://postgres:postgres@postgres:5432/{}",
            this.and_then(|b| b.database).unwrap_or("<database>")
        ),
        "AMQP_URL" => "amqp://guest:guest@rabbitmq:5672/%2f".to_owned(),
        "KAFKA_BROKERS" => "kafka:9092".to_owned(),
        "NATS_URL" => "nats://nats:4222".to_owned(),
        "OTEL_EXPORTER_OTLP_ENDPOINT" => "http://otel-collector:4317".to_owned(),
        "OTEL_SERVICE_NAME" => binary.to_owned(),
        "HTTP_ADDR" => format!("0.0.0.0:{}", this.map_or(0, |b| b.http_port)),
        "GRPC_ADDR" => format!("0.0.0.0:{}", this.map_or(0, |b| b.grpc_port)),
        "SEED_CATALOG" => "true".to_owned(),
        "ADMIN_EMAILS" => "admin@ferrishop.local".to_owned(),
        _ => upstream("_GRPC_URL", true)
            .or_else(|| upstream("_URL", false))
            .unwrap_or_else(|| {
                default
                    .unwrap_or("<value>")
                    .replace("127.0.0.1", "<service>")
                    .replace("localhost", "<service>")
            }),
    }
}

/// Checks the variables `set` for `binary` (name → value; `None` when the
/// value comes from a Secret not in the repository) against what it accepts.
/// `place` says where the variables are set, for the messages.
pub fn check(
    binary: &str,
    set: &BTreeMap<String, Option<String>>,
    accepted: &BTreeMap<String, EnvVar>,
    place: &str,
    scope: Scope,
) -> Vec<String> {
    let mut problems = Vec::new();
    for (name, value) in set {
        if !accepted.contains_key(name) {
            problems.push(format!(
                "{place} sets {name}, which `{binary} --help` does not list: a typo, or a \
                 variable {binary} does not read (it reads {})",
                accepted.keys().cloned().collect::<Vec<_>>().join(", ")
            ));
        }
        if let Some(value) = value
            && is_loopback(value)
        {
            problems.push(format!(
                "{place} sets {name}={value}: that is the container itself, not a service of the stack"
            ));
        }
    }
    for (name, var) in accepted {
        if set.contains_key(name) {
            continue;
        }
        let loopback = var.default.as_deref().is_some_and(is_loopback);
        let required = scope == Scope::Stack
            && STACK_REQUIRED
                .iter()
                .any(|(only, required)| *required == name && only.is_none_or(|b| b == binary));
        if loopback || required {
            let why = match (&var.default, loopback) {
                (Some(default), true) => {
                    format!("its default {default} points at the machine it runs on")
                }
                _ => "the stack sets it for every binary that reads it".to_owned(),
            };
            problems.push(format!(
                "{binary} reads {name} and {place} does not set it ({why}): add \
                 {name}={}",
                suggestion(binary, name, var.default.as_deref())
            ));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accepted(vars: &[(&str, Option<&str>)]) -> BTreeMap<String, EnvVar> {
        vars.iter()
            .map(|(name, default)| {
                (
                    (*name).to_owned(),
                    EnvVar {
                        name: (*name).to_owned(),
                        default: default.map(str::to_owned),
                    },
                )
            })
            .collect()
    }

    fn set(vars: &[(&str, &str)]) -> BTreeMap<String, Option<String>> {
        vars.iter()
            .map(|(name, value)| ((*name).to_owned(), Some((*value).to_owned())))
            .collect()
    }

    #[test]
    fn unknown_variables_are_reported() {
        let problems = check(
            "order",
            &set(&[("AMQP_URL", "amqp://rabbitmq")]),
            &accepted(&[("RUST_LOG", Some("info"))]),
            "here",
            Scope::External,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].contains("AMQP_URL"), "{problems:?}");
    }

    #[test]
    fn loopback_defaults_must_be_overridden_with_a_suggestion() {
        let problems = check(
            "order",
            &set(&[]),
            &accepted(&[
                ("AMQP_URL", Some("amqp://guest:guest@127.0.0.1:5672/%2f")),
                ("INVENTORY_GRPC_URL", Some("http://127.0.0.1:50055")),
                ("RUST_LOG", Some("info")),
            ]),
            "here",
            Scope::External,
        );
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains("AMQP_URL=amqp://guest:guest@rabbitmq:5672/%2f"));
        assert!(problems[1].contains("INVENTORY_GRPC_URL=http://inventory:50055"));
    }

    #[test]
    fn stacks_set_their_required_variables() {
        let accepted = accepted(&[("SEED_CATALOG", Some("false")), ("HTTP_ADDR", None)]);
        let stack = check("inventory", &set(&[]), &accepted, "here", Scope::Stack);
        assert_eq!(stack.len(), 2, "{stack:?}");
        assert!(check("inventory", &set(&[]), &accepted, "here", Scope::External).is_empty());
        let other = check("payment", &set(&[]), &accepted, "here", Scope::Stack);
        assert_eq!(other.len(), 1, "only HTTP_ADDR: {other:?}");
    }

    #[test]
    fn values_pointing_at_the_container_are_reported() {
        let problems = check(
            "user",
            &set(&[("DATABASE_URL", "postgres://127.0.0.1/users")]),
            &accepted(&[("DATABASE_URL", None)]),
            "here",
            Scope::External,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
    }
}
