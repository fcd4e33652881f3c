//! Request validation that names every bad field at once.
//!
//! A client that sent three bad fields learns about all three from one
//! answer. A handler parses each field into its domain type, collecting the
//! failures in [`Violations`]; the service's error then carries the
//! [`FieldViolation`]s to every surface: the `google.rpc.BadRequest` detail
//! of a gRPC status, and the `errors` of a problem document ([`by_field`]).

use std::collections::BTreeMap;
use std::fmt::{self, Display};

/// One field of a request that could not be accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldViolation {
    /// The request field path, e.g. `items[1].quantity`, `amount.currency`
    /// or `Idempotency-Key`.
    pub field: String,
    /// What is wrong with it, e.g. `must be greater than zero`.
    pub description: String,
}

impl FieldViolation {
    pub fn new(field: impl Into<String>, description: impl ToString) -> Self {
        Self {
            field: field.into(),
            description: description.to_string(),
        }
    }
}

/// `field: description; …`: the violations on one line, for messages.
pub fn summary(violations: &[FieldViolation]) -> impl Display + '_ {
    Summary(violations)
}

struct Summary<'a>(&'a [FieldViolation]);

impl Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, violation) in self.0.iter().enumerate() {
            if index > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", violation.field, violation.description)?;
        }
        Ok(())
    }
}

/// The violations as a problem document's `errors`: field → description,
/// the last one where a field is named twice.
pub fn by_field(violations: &[FieldViolation]) -> BTreeMap<String, String> {
    violations
        .iter()
        .map(|violation| (violation.field.clone(), violation.description.clone()))
        .collect()
}

/// Collects every invalid field of a request.
#[derive(Debug, Default)]
pub struct Violations(Vec<FieldViolation>);

impl Violations {
    /// The value, or `None` after recording why `field` is invalid.
    pub fn check<T, E: Display>(
        &mut self,
        field: impl Into<String>,
        result: Result<T, E>,
    ) -> Option<T> {
        match result {
            Ok(value) => Some(value),
            Err(error) => self.reject(field, error),
        }
    }

    /// Records why `field` is invalid; `None`, for the value it has not.
    pub fn reject<T>(&mut self, field: impl Into<String>, description: impl Display) -> Option<T> {
        self.0.push(FieldViolation::new(field, description));
        None
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// `Ok(())` when every checked field was valid, else the violations.
    pub fn finish(self) -> Result<(), Vec<FieldViolation>> {
        if self.0.is_empty() {
            Ok(())
        } else {
            Err(self.0)
        }
    }
}

impl From<Violations> for Vec<FieldViolation> {
    fn from(violations: Violations) -> Self {
        violations.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_bad_field_is_kept_in_order() {
        let mut violations = Violations::default();
        assert_eq!(violations.check("a", Ok::<_, String>(1)), Some(1));
        assert!(violations.is_empty());
        assert_eq!(Violations::default().finish(), Ok(()));
        assert_eq!(violations.check::<u32, _>("b", Err("is bad")), None);
        assert_eq!(violations.reject::<u32>("c[0]", "is required"), None);
        let violations = violations.finish().unwrap_err();
        assert_eq!(
            violations,
            [
                FieldViolation::new("b", "is bad"),
                FieldViolation::new("c[0]", "is required"),
            ]
        );
        assert_eq!(
            summary(&violations).to_string(),
            "b: is bad; c[0]: is required"
        );
        assert_eq!(summary(&[]).to_string(), "");
    }

    #[test]
    fn problem_errors_are_keyed_by_field() {
        let errors = by_field(&[
            FieldViolation::new("z", "first"),
            FieldViolation::new("a", "one"),
            FieldViolation::new("z", "second"),
        ]);
        assert_eq!(
            errors,
            BTreeMap::from([
                ("a".to_owned(), "one".to_owned()),
                ("z".to_owned(), "second".to_owned()),
            ])
        );
    }
}
