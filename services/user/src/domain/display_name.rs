//! The name a user is greeted and shown by.
//!
//! Any script is welcome, so the rule is only about shape: surrounding
//! whitespace is dropped, what remains must be 1 to 100 characters (Unicode
//! scalar values, not bytes) and free of control characters, which have no
//! business in a name and break log lines and e-mail headers.

use std::fmt;

/// A trimmed display name of 1 to 100 characters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DisplayName(String);

/// Why a string is not a [`DisplayName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DisplayNameError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {} characters", DisplayName::MAX_CHARS)]
    TooLong,
    #[error("must not contain control characters")]
    ControlCharacter,
}

impl DisplayName {
    pub const MAX_CHARS: usize = 100;

    pub fn parse(input: &str) -> Result<Self, DisplayNameError> {
        let name = input.trim();
        if name.is_empty() {
            return Err(DisplayNameError::Empty);
        }
        if name.chars().count() > Self::MAX_CHARS {
            return Err(DisplayNameError::TooLong);
        }
        if name.chars().any(char::is_control) {
            return Err(DisplayNameError::ControlCharacter);
        }
        Ok(Self(name.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DisplayName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn names_are_trimmed_and_bounded() {
        assert_eq!(
            DisplayName::parse("  Ann Lee ").unwrap().as_str(),
            "Ann Lee"
        );
        assert_eq!(DisplayName::parse("李小龍").unwrap().as_str(), "李小龍");
        assert_eq!(DisplayName::parse(""), Err(DisplayNameError::Empty));
        assert_eq!(DisplayName::parse(" \t\n "), Err(DisplayNameError::Empty));
        assert_eq!(
            DisplayName::parse("Ann\u{7}"),
            Err(DisplayNameError::ControlCharacter)
        );
        assert_eq!(
            DisplayName::parse("Ann\nLee"),
            Err(DisplayNameError::ControlCharacter)
        );
        // 100 four-byte characters are 100 characters, not 400.
        assert!(DisplayName::parse(&"😀".repeat(100)).is_ok());
        assert_eq!(
            DisplayName::parse(&"a".repeat(101)),
            Err(DisplayNameError::TooLong)
        );
    }

    proptest! {
        #[test]
        fn parsed_names_obey_the_rules(input in "\\PC{0,120}") {
            if let Ok(name) = DisplayName::parse(&input) {
                let text = name.as_str();
                prop_assert_eq!(text, text.trim());
                prop_assert!((1..=DisplayName::MAX_CHARS).contains(&text.chars().count()));
                prop_assert!(!text.chars().any(char::is_control));
                prop_assert_eq!(DisplayName::parse(text), Ok(name.clone()));
            }
        }

        #[test]
        fn surrounding_whitespace_never_matters(name in "[^\\s\\p{Cc}]{1,100}", pad in "[ \t]{0,5}") {
            let padded = format!("{pad}{name}{pad}");
            prop_assert_eq!(DisplayName::parse(&padded), DisplayName::parse(&name));
            prop_assert!(DisplayName::parse(&name).is_ok());
        }
    }
}
