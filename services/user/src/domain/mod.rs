//! The user service's rules: what a valid e-mail address, display name and
//! password are, who is an administrator, and when a refresh token may be
//! exchanged. Pure types and functions, no I/O, so every rule is tested
//! without a database or a server.
//!
//! Input is *parsed*, not validated: [`Email::parse`] either returns an
//! `Email`, which is then known to be well-formed and canonical (lower case)
//! for the rest of its life, or says what is wrong. Code that holds an
//! `Email` never checks it again, and code that has not parsed one cannot
//! pretend it has.

pub mod display_name;
pub mod email;
pub mod events;
pub mod password;
pub mod refresh_token;
pub mod user;

use std::collections::BTreeMap;

pub use display_name::DisplayName;
pub use email::Email;
pub use events::UserRegistered;
pub use password::Password;
pub use refresh_token::{Exchange, RefreshToken, RefreshTokenState, TokenHash};
pub use user::{Account, AdminEmails, Caller, ProfileChanges, Registration, User, UserId};

/// Validation failures, one message per request field: the `errors` member
/// of a 422 problem document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldErrors(BTreeMap<&'static str, String>);

impl FieldErrors {
    /// Records `field`'s error when `result` is one, passing the value on.
    pub fn check<T, E: std::fmt::Display>(
        &mut self,
        field: &'static str,
        result: Result<T, E>,
    ) -> Option<T> {
        result
            .map_err(|error| {
                self.0.insert(field, error.to_string());
            })
            .ok()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The failures as field name → message.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &str)> {
        self.0
            .iter()
            .map(|(field, message)| (*field, message.as_str()))
    }

    pub fn get(&self, field: &str) -> Option<&str> {
        self.0.get(field).map(String::as_str)
    }
}

impl std::fmt::Display for FieldErrors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut first = true;
        for (field, message) in &self.0 {
            if !first {
                f.write_str("; ")?;
            }
            write!(f, "{field}: {message}")?;
            first = false;
        }
        Ok(())
    }
}
