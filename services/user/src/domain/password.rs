//! Passwords as they arrive, before hashing.
//!
//! The policy is NIST SP 800-63B's: length is what matters (12 to 128
//! characters), every character is allowed, nothing is trimmed or rewritten,
//! and there are no composition rules. Only a password of nothing but
//! whitespace is refused, because it is almost always a client bug.
//!
//! A `Password` is never printed: it has no `Display`, its `Debug` is
//! redacted, and the only way to the characters is
//! [`Password::expose_secret`], which the password hasher calls. So a
//! `tracing::debug!(?request)` or an `unwrap` on a struct holding one cannot
//! put a password into a log line.

use std::fmt;

/// A password that satisfies the policy. Not `Clone`: it is moved into the
/// hasher and dropped there.
pub struct Password(String);

/// Why a string is not an acceptable [`Password`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("must be at least {} characters", Password::MIN_CHARS)]
    TooShort,
    #[error("must be at most {} characters", Password::MAX_CHARS)]
    TooLong,
    #[error("must not be only whitespace")]
    Blank,
}

impl Password {
    pub const MIN_CHARS: usize = 12;
    /// Bounds the work an attacker can make the hasher do per request.
    pub const MAX_CHARS: usize = 128;

    /// Applies the policy to a new password (registration).
    pub fn parse(input: String) -> Result<Self, PasswordError> {
        let chars = input.chars().count();
        if chars < Self::MIN_CHARS {
            return Err(PasswordError::TooShort);
        }
        if chars > Self::MAX_CHARS {
            return Err(PasswordError::TooLong);
        }
        if input.chars().all(char::is_whitespace) {
            return Err(PasswordError::Blank);
        }
        Ok(Self(input))
    }

    /// Wraps a password presented at login without applying the policy, so
    /// an account created under an older policy can still log in.
    pub fn presented(input: String) -> Self {
        Self(input)
    }

    /// The characters, for the password hasher and nothing else.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password([redacted])")
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn the_policy_is_about_length() {
        assert_eq!(
            Password::parse("short".into()).err(),
            Some(PasswordError::TooShort)
        );
        assert_eq!(
            Password::parse(" ".repeat(20)).err(),
            Some(PasswordError::Blank)
        );
        assert_eq!(
            Password::parse("a".repeat(129)).err(),
            Some(PasswordError::TooLong)
        );
        assert!(Password::parse("correct horse battery staple".into()).is_ok());
        // Characters, not bytes: 12 emoji are 48 bytes but a 12-character password.
        assert!(Password::parse("🔑".repeat(12)).is_ok());
        assert_eq!(
            Password::parse("🔑".repeat(11)).err(),
            Some(PasswordError::TooShort)
        );
        // Nothing is trimmed: the spaces are part of the password.
        let spaced = Password::parse("  twelve chars  ".into()).unwrap();
        assert_eq!(spaced.expose_secret(), "  twelve chars  ");
    }

    proptest! {
        #[test]
        fn accepted_exactly_when_long_enough_and_not_blank(input in "\\PC{0,140}") {
            let chars = input.chars().count();
            let acceptable = (Password::MIN_CHARS..=Password::MAX_CHARS).contains(&chars)
                && !input.chars().all(char::is_whitespace);
            prop_assert_eq!(Password::parse(input.clone()).is_ok(), acceptable);
        }

        #[test]
        fn debug_output_never_contains_the_password(input in "[a-zA-Z0-9]{12,40}") {
            let password = Password::parse(input.clone()).unwrap();
            let debug = format!("{password:?} {:?}", Some(&password));
            prop_assert!(!debug.contains(&input));
        }
    }
}
