//! E-mail addresses, the login name of every account.
//!
//! The grammar is RFC 5321's "dot-atom" subset that mail providers actually
//! hand out: an unquoted local part of atext characters and single dots, an
//! `@`, and a DNS host name of at least two labels. Quoted local parts,
//! IP-literal domains and internationalised (non-ASCII) addresses are refused:
//! they are legal but practically unused for shop accounts, and each is a
//! source of look-alike duplicates. An internationalised domain is accepted in
//! its ASCII (`xn--`) form.
//!
//! Addresses are stored lower-cased. RFC 5321 lets a server treat the local
//! part as case-sensitive, but no mainstream provider does, and two accounts
//! for `Ann@x.com` and `ann@x.com` would be one person locked out of the
//! other. Lower-casing once, here, is what makes "same e-mail in any case"
//! a unique-index lookup.

use std::fmt;

/// A syntactically valid, lower-cased e-mail address.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

/// Why a string is not an [`Email`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EmailError {
    #[error("must not be empty")]
    Empty,
    #[error("must be at most {} characters", Email::MAX_LEN)]
    TooLong,
    #[error("must be an e-mail address like name@example.com")]
    Malformed,
}

impl Email {
    /// RFC 5321's limit on a forward path, less the angle brackets.
    pub const MAX_LEN: usize = 254;
    const MAX_LOCAL_LEN: usize = 64;
    const MAX_LABEL_LEN: usize = 63;

    /// Parses an address, ignoring surrounding whitespace and letter case.
    pub fn parse(input: &str) -> Result<Self, EmailError> {
        let input = input.trim();
        if input.is_empty() {
            return Err(EmailError::Empty);
        }
        if input.len() > Self::MAX_LEN {
            return Err(EmailError::TooLong);
        }
        let address = input.to_ascii_lowercase();
        let (local, domain) = address.split_once('@').ok_or(EmailError::Malformed)?;
        if valid_local_part(local) && valid_domain(domain) {
            Ok(Self(address))
        } else {
            Err(EmailError::Malformed)
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn into_string(self) -> String {
        self.0
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// RFC 5322 `atext`, the characters of an unquoted local part besides dots.
fn is_atext(c: char) -> bool {
    c.is_ascii_alphanumeric() || "!#$%&'*+-/=?^_`{|}~".contains(c)
}

/// A dot-atom: atext runs separated by single dots.
fn valid_local_part(local: &str) -> bool {
    !local.is_empty()
        && local.len() <= Email::MAX_LOCAL_LEN
        && local
            .split('.')
            .all(|atom| !atom.is_empty() && atom.chars().all(is_atext))
}

/// A host name of two or more LDH labels whose top-level label is not
/// numeric (so `1.2.3.4` is not mistaken for a domain).
fn valid_domain(domain: &str) -> bool {
    let labels: Vec<&str> = domain.split('.').collect();
    labels.len() >= 2
        && labels.iter().all(|label| {
            !label.is_empty()
                && label.len() <= Email::MAX_LABEL_LEN
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
        })
        && labels
            .last()
            .is_some_and(|tld| !tld.chars().all(|c| c.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn ordinary_addresses_parse_lower_cased() {
        for (input, canonical) in [
            ("ann@example.com", "ann@example.com"),
            (
                "  Ann.Lee+shop@Mail.Example.COM ",
                "ann.lee+shop@mail.example.com",
            ),
            ("o'brien@xn--bcher-kva.de", "o'brien@xn--bcher-kva.de"),
            ("a@b.co", "a@b.co"),
        ] {
            assert_eq!(
                Email::parse(input).map(|e| e.into_string()),
                Ok(canonical.to_owned())
            );
        }
    }

    #[test]
    fn malformed_addresses_are_refused() {
        for input in [
            "ann",
            "ann@",
            "@example.com",
            "ann@@example.com",
            "ann@b@example.com",
            "ann@localhost",
            "ann@example.",
            "ann@.example.com",
            "ann@exa mple.com",
            "an n@example.com",
            ".ann@example.com",
            "ann.@example.com",
            "a..nn@example.com",
            "ann@-example.com",
            "ann@example-.com",
            "ann@example.123",
            "ann@[127.0.0.1]",
            "\"ann\"@example.com",
            "ånn@example.com",
            "ann@exämple.com",
            "ann@example.com\u{0}",
        ] {
            assert_eq!(Email::parse(input), Err(EmailError::Malformed), "{input:?}");
        }
        assert_eq!(Email::parse("   "), Err(EmailError::Empty));
        let long = format!("{}@{}.com", "a".repeat(64), "b".repeat(200));
        assert_eq!(Email::parse(&long), Err(EmailError::TooLong));
        let long_local = format!("{}@example.com", "a".repeat(65));
        assert_eq!(Email::parse(&long_local), Err(EmailError::Malformed));
    }

    fn address() -> impl Strategy<Value = String> {
        (
            "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]{1,20}(\\.[A-Za-z0-9_-]{1,10}){0,2}",
            "[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?",
            "[A-Za-z]{2,10}",
        )
            .prop_map(|(local, host, tld)| format!("{local}@{host}.{tld}"))
    }

    proptest! {
        #[test]
        fn well_formed_addresses_parse_to_their_lower_case(input in address()) {
            let email = Email::parse(&input).unwrap();
            prop_assert_eq!(email.as_str(), input.to_ascii_lowercase());
        }

        #[test]
        fn parsing_is_canonical_and_case_insensitive(input in "\\PC{0,300}") {
            if let Ok(email) = Email::parse(&input) {
                prop_assert!(email.as_str().len() <= Email::MAX_LEN);
                prop_assert_eq!(email.as_str(), email.as_str().to_ascii_lowercase());
                prop_assert_eq!(email.as_str().matches('@').count(), 1);
                prop_assert_eq!(Email::parse(email.as_str()), Ok(email.clone()));
                prop_assert_eq!(Email::parse(&input.to_ascii_uppercase()), Ok(email));
            }
        }

        #[test]
        fn whitespace_inside_is_never_accepted(
            input in address(),
            at in any::<prop::sample::Index>(),
            space in prop::sample::select(vec![' ', '\t', '\n']),
        ) {
            let mut chars: Vec<char> = input.chars().collect();
            let position = 1 + at.index(chars.len() - 1);
            chars.insert(position, space);
            let spaced: String = chars.into_iter().collect();
            prop_assert!(Email::parse(&spaced).is_err(), "{:?}", spaced);
        }
    }
}
