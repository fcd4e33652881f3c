//! Named fault points for chaos runs.
//!
//! Code that wants to be testable under failure calls
//! [`inject("payment.charge")`](inject) at the spot where a real failure could
//! happen. An operator arms a point with an action — `error(p)` fails with
//! probability `p`, `delay(ms)` sleeps, `abort` kills the process on the spot
//! (no destructors, no flush: the closest thing to `kill -9` a process can do
//! to itself) — either at start through `FAULTS` or at run time through the
//! `ferrishop-faults` key-value bucket.
//!
//! The registry is process-global on purpose: fault points sit deep in code
//! that should not carry a handle just for chaos testing. A process with no
//! armed point pays one relaxed atomic load per call.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, RwLock};
use std::time::Duration;

static ARMED: AtomicBool = AtomicBool::new(false);
static POINTS: LazyLock<RwLock<HashMap<String, FaultAction>>> = LazyLock::new(Default::default);

/// What an armed fault point does when reached.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultAction {
    /// Fail with this probability (0.0..=1.0).
    Error { probability: f64 },
    /// Sleep this long, then carry on.
    Delay(Duration),
    /// Abort the process at this point.
    Abort,
}

/// The error a fault point returns when its `error(p)` action fires.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("injected fault at {point}")]
pub struct InjectedFault {
    pub point: String,
}

/// Reaches the named fault point: does nothing unless it is armed.
pub async fn inject(point: &str) -> Result<(), InjectedFault> {
    if !ARMED.load(Ordering::Relaxed) {
        return Ok(());
    }
    let action = POINTS
        .read()
        .ok()
        .and_then(|points| points.get(point).copied());
    match action {
        None => Ok(()),
        Some(FaultAction::Error { probability }) => {
            if rand::random::<f64>() < probability {
                tracing::warn!(fault.point = point, "injected error");
                Err(InjectedFault {
                    point: point.to_owned(),
                })
            } else {
                Ok(())
            }
        }
        Some(FaultAction::Delay(delay)) => {
            tracing::warn!(
                fault.point = point,
                delay_ms = delay.as_millis() as u64,
                "injected delay"
            );
            tokio::time::sleep(delay).await;
            Ok(())
        }
        Some(FaultAction::Abort) => {
            eprintln!("fault point {point}: abort");
            std::process::abort()
        }
    }
}

/// Arms (`Some`) or disarms (`None`) one point.
pub fn set(point: &str, action: Option<FaultAction>) {
    let Ok(mut points) = POINTS.write() else {
        return;
    };
    match action {
        Some(action) => {
            points.insert(point.to_owned(), action);
        }
        None => {
            points.remove(point);
        }
    }
    ARMED.store(!points.is_empty(), Ordering::Relaxed);
}

/// Arms every point of a plan, keeping points armed earlier.
pub fn arm(plan: &FaultPlan) {
    for (point, action) in &plan.0 {
        set(point, Some(*action));
    }
}

/// A set of armed points, as written in `FAULTS`:
/// `payment.charge=error(0.5);inventory.reserve=delay(200);order.saga.before_confirm=abort`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan(pub Vec<(String, FaultAction)>);

/// Why a fault plan or action could not be parsed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("{0} (expected name=error(p), name=delay(ms) or name=abort, separated by ';')")]
pub struct FaultParseError(String);

impl FromStr for FaultPlan {
    type Err = FaultParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(';')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| {
                let (point, action) = entry
                    .split_once('=')
                    .ok_or_else(|| FaultParseError(format!("{entry:?} has no '='")))?;
                let point = point.trim();
                if point.is_empty() {
                    return Err(FaultParseError(format!("{entry:?} has no point name")));
                }
                Ok((point.to_owned(), action.parse()?))
            })
            .collect::<Result<_, _>>()
            .map(FaultPlan)
    }
}

impl FromStr for FaultAction {
    type Err = FaultParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text == "abort" {
            return Ok(Self::Abort);
        }
        let argument = |name: &str| {
            text.strip_prefix(name)
                .and_then(|rest| rest.strip_prefix('('))
                .and_then(|rest| rest.strip_suffix(')'))
                .map(str::trim)
        };
        if let Some(p) = argument("error") {
            let probability: f64 = p
                .parse()
                .map_err(|_| FaultParseError(format!("error({p}): not a number")))?;
            if !(0.0..=1.0).contains(&probability) {
                return Err(FaultParseError(format!(
                    "error({p}): probability must be in 0..=1"
                )));
            }
            return Ok(Self::Error { probability });
        }
        if let Some(ms) = argument("delay") {
            let ms: u64 = ms
                .parse()
                .map_err(|_| FaultParseError(format!("delay({ms}): not a whole number of ms")))?;
            return Ok(Self::Delay(Duration::from_millis(ms)));
        }
        Err(FaultParseError(format!("unknown action {text:?}")))
    }
}

impl fmt::Display for FaultAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Error { probability } => write!(f, "error({probability})"),
            Self::Delay(delay) => write!(f, "delay({})", delay.as_millis()),
            Self::Abort => f.write_str("abort"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_parses_every_action() {
        let plan: FaultPlan = "payment.charge=error(0.5); inventory.reserve=delay(200);x=abort;"
            .parse()
            .map_err(|e: FaultParseError| e.to_string())
            .unwrap();
        assert_eq!(
            plan.0,
            vec![
                (
                    "payment.charge".into(),
                    FaultAction::Error { probability: 0.5 }
                ),
                (
                    "inventory.reserve".into(),
                    FaultAction::Delay(Duration::from_millis(200))
                ),
                ("x".into(), FaultAction::Abort),
            ]
        );
        assert_eq!(FaultPlan::from_str(""), Ok(FaultPlan::default()));
    }

    #[test]
    fn bad_plans_are_rejected() {
        for bad in [
            "x",
            "=abort",
            "x=error(2)",
            "x=error(a)",
            "x=delay(-1)",
            "x=explode",
        ] {
            assert!(FaultPlan::from_str(bad).is_err(), "{bad} should not parse");
        }
    }

    #[test]
    fn action_display_round_trips() {
        for action in [
            FaultAction::Abort,
            FaultAction::Delay(Duration::from_millis(30)),
            FaultAction::Error { probability: 0.25 },
        ] {
            assert_eq!(action.to_string().parse::<FaultAction>(), Ok(action));
        }
    }

    #[tokio::test]
    async fn armed_points_fire_and_disarmed_points_do_not() {
        assert_eq!(inject("tests.never_armed").await, Ok(()));
        set(
            "tests.always_fails",
            Some(FaultAction::Error { probability: 1.0 }),
        );
        assert!(inject("tests.always_fails").await.is_err());
        assert_eq!(inject("tests.other").await, Ok(()));
        set("tests.always_fails", None);
        assert_eq!(inject("tests.always_fails").await, Ok(()));
    }
}
