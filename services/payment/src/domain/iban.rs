//! International Bank Account Numbers (ISO 13616), where a wallet's money is
//! paid out when it is closed.
//!
//! The shape alone — two letters, two digits, up to thirty alphanumerics —
//! accepts almost every typo, and a payout to a mistyped account is money
//! gone. An [`Iban`] is therefore only made by [`Iban::parse`], which checks
//! everything a bank checks before it talks to another bank:
//!
//! 1. the country code is one that issues IBANs, and the length is that
//!    country's length from the SWIFT IBAN registry (a German IBAN is always
//!    22 characters, a Norwegian one 15);
//! 2. the check digits: move the first four characters to the end, replace
//!    every letter with two digits (`A` = 10 … `Z` = 35), and the resulting
//!    number modulo 97 must be 1 (ISO 7064 MOD 97-10). That catches every
//!    single-character error and every swap of two adjacent characters.
//!
//! The number can have 60+ digits, so the remainder is computed digit by
//! digit (`r = (r * 10 + d) mod 97`) instead of in a big integer.
//!
//! Input may be in print form (`DE89 3704 0044 …`, lower case accepted); the
//! value is kept in electronic form (upper case, no spaces) and displayed in
//! print form.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A valid IBAN, in electronic form.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Iban(String);

/// Why a string is not an IBAN.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IbanError {
    #[error("an IBAN contains only letters, digits and spaces")]
    InvalidCharacter,
    #[error("an IBAN starts with a two-letter country code and two check digits")]
    BadPrefix,
    #[error("{0} is not a country that issues IBANs")]
    UnknownCountry(String),
    #[error("an IBAN from {country} has {expected} characters, this one has {actual}")]
    WrongLength {
        country: String,
        expected: usize,
        actual: usize,
    },
    #[error("the check digits do not match: the IBAN is mistyped")]
    Checksum,
}

impl Iban {
    pub fn parse(text: &str) -> Result<Self, IbanError> {
        let compact: String = text
            .chars()
            .filter(|c| *c != ' ')
            .map(|c| c.to_ascii_uppercase())
            .collect();
        if !compact.chars().all(|c| c.is_ascii_alphanumeric()) {
            return Err(IbanError::InvalidCharacter);
        }
        let bytes = compact.as_bytes();
        if bytes.len() < 4
            || !bytes[..2].iter().all(u8::is_ascii_uppercase)
            || !bytes[2..4].iter().all(u8::is_ascii_digit)
        {
            return Err(IbanError::BadPrefix);
        }
        let country = &compact[..2];
        let expected = registry_length(country)
            .ok_or_else(|| IbanError::UnknownCountry(country.to_owned()))?;
        if compact.len() != expected {
            return Err(IbanError::WrongLength {
                country: country.to_owned(),
                expected,
                actual: compact.len(),
            });
        }
        if mod97(&compact) != 1 {
            return Err(IbanError::Checksum);
        }
        Ok(Self(compact))
    }

    /// Electronic form: `DE89370400440532013000`.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The ISO 3166 country code it starts with.
    pub fn country(&self) -> &str {
        &self.0[..2]
    }
}

impl fmt::Display for Iban {
    /// Print form: groups of four, `DE89 3704 0044 0532 0130 00`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, chunk) in self.0.as_bytes().chunks(4).enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            // Only ASCII is ever stored.
            f.write_str(std::str::from_utf8(chunk).unwrap_or_default())?;
        }
        Ok(())
    }
}

impl TryFrom<String> for Iban {
    type Error = IbanError;
    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text)
    }
}

impl From<Iban> for String {
    fn from(iban: Iban) -> Self {
        iban.0
    }
}

/// ISO 7064 MOD 97-10 of an upper-case alphanumeric IBAN: rearranged (first
/// four characters last), letters expanded to two digits, reduced digit by
/// digit.
fn mod97(iban: &str) -> u32 {
    let (head, tail) = iban.split_at(4);
    tail.chars().chain(head.chars()).fold(0, |remainder, c| {
        // to_digit(36) maps 0-9 to 0-9 and A-Z to 10-35, exactly ISO's table.
        let value = c.to_digit(36).unwrap_or(0);
        if value < 10 {
            (remainder * 10 + value) % 97
        } else {
            (remainder * 100 + value) % 97
        }
    })
}

/// IBAN length per country, from the SWIFT IBAN registry (ISO 13616).
fn registry_length(country: &str) -> Option<usize> {
    let length = match country {
        "AD" => 24,
        "AE" => 23,
        "AL" => 28,
        "AT" => 20,
        "AZ" => 28,
        "BA" => 20,
        "BE" => 16,
        "BG" => 22,
        "BH" => 22,
        "BI" => 27,
        "BR" => 29,
        "BY" => 28,
        "CH" => 21,
        "CR" => 22,
        "CY" => 28,
        "CZ" => 24,
        "DE" => 22,
        "DJ" => 27,
        "DK" => 18,
        "DO" => 28,
        "EE" => 20,
        "EG" => 29,
        "ES" => 24,
        "FI" => 18,
        "FK" => 18,
        "FO" => 18,
        "FR" => 27,
        "GB" => 22,
        "GE" => 22,
        "GI" => 23,
        "GL" => 18,
        "GR" => 27,
        "GT" => 28,
        "HN" => 28,
        "HR" => 21,
        "HU" => 28,
        "IE" => 22,
        "IL" => 23,
        "IQ" => 23,
        "IS" => 26,
        "IT" => 27,
        "JO" => 30,
        "KW" => 30,
        "KZ" => 20,
        "LB" => 28,
        "LC" => 32,
        "LI" => 21,
        "LT" => 20,
        "LU" => 20,
        "LV" => 21,
        "LY" => 25,
        "MC" => 27,
        "MD" => 24,
        "ME" => 22,
        "MK" => 19,
        "MN" => 20,
        "MR" => 27,
        "MT" => 31,
        "MU" => 30,
        "NI" => 28,
        "NL" => 18,
        "NO" => 15,
        "OM" => 23,
        "PK" => 24,
        "PL" => 28,
        "PS" => 29,
        "PT" => 25,
        "QA" => 29,
        "RO" => 24,
        "RS" => 22,
        "RU" => 33,
        "SA" => 24,
        "SC" => 31,
        "SD" => 18,
        "SE" => 24,
        "SI" => 19,
        "SK" => 24,
        "SM" => 27,
        "SO" => 23,
        "ST" => 25,
        "SV" => 28,
        "TL" => 23,
        "TN" => 24,
        "TR" => 26,
        "UA" => 29,
        "VA" => 22,
        "VG" => 24,
        "XK" => 20,
        "YE" => 30,
        _ => return None,
    };
    Some(length)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    /// Published examples from several countries' banking associations.
    const VALID: [&str; 14] = [
        "DE89 3704 0044 0532 0130 00",
        "GB82 WEST 1234 5698 7654 32",
        "FR14 2004 1010 0505 0001 3M02 606",
        "NL91 ABNA 0417 1643 00",
        "BE68 5390 0754 7034",
        "CH93 0076 2011 6238 5295 7",
        "ES91 2100 0418 4502 0005 1332",
        "IT60 X054 2811 1010 0000 0123 456",
        "AT61 1904 3002 3457 3201",
        "NO93 8601 1117 947",
        "PL61 1090 1014 0000 0712 1981 2874",
        "SE45 5000 0000 0583 9825 7466",
        "MT84 MALT 0110 0001 2345 MTLC AST0 01S",
        "LC55 HEMM 0001 0001 0012 0012 0002 3015",
    ];

    #[test]
    fn valid_ibans_from_several_countries_parse() {
        for text in VALID {
            let iban = Iban::parse(text).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert_eq!(iban.to_string(), text, "print form round-trips");
            assert_eq!(iban.as_str(), text.replace(' ', ""));
        }
        assert_eq!(
            Iban::parse("de89370400440532013000").map(|i| i.country().to_owned()),
            Ok("DE".to_owned())
        );
    }

    #[test]
    fn changing_one_digit_breaks_the_checksum() {
        for text in VALID {
            let compact = text.replace(' ', "");
            for position in 2..compact.len() {
                let mut bytes = compact.clone().into_bytes();
                if !bytes[position].is_ascii_digit() {
                    continue;
                }
                bytes[position] = b'0' + (bytes[position] - b'0' + 1) % 10;
                let mutated = String::from_utf8(bytes).unwrap();
                assert_eq!(
                    Iban::parse(&mutated),
                    Err(IbanError::Checksum),
                    "{mutated} (from {text}) must fail the checksum"
                );
            }
        }
    }

    #[test]
    fn shape_errors_are_named() {
        assert_eq!(Iban::parse("DE89-3704"), Err(IbanError::InvalidCharacter));
        assert_eq!(Iban::parse("D"), Err(IbanError::BadPrefix));
        assert_eq!(Iban::parse("1289 3704"), Err(IbanError::BadPrefix));
        assert_eq!(
            Iban::parse("US89 3704 0044 0532 0130 00"),
            Err(IbanError::UnknownCountry("US".into()))
        );
        assert_eq!(
            Iban::parse("DE89 3704 0044 0532 0130 0"),
            Err(IbanError::WrongLength {
                country: "DE".into(),
                expected: 22,
                actual: 21
            })
        );
    }

    #[test]
    fn serde_keeps_the_electronic_form_and_refuses_bad_ones() {
        let iban = Iban::parse(VALID[0]).unwrap();
        let json = serde_json::to_value(&iban).unwrap();
        assert_eq!(json, "DE89370400440532013000");
        assert_eq!(serde_json::from_value::<Iban>(json).unwrap(), iban);
        assert!(serde_json::from_value::<Iban>("DE00370400440532013000".into()).is_err());
    }

    proptest! {
        /// Swapping two adjacent, different digits is always caught.
        #[test]
        fn adjacent_swaps_are_caught(which in 0..VALID.len(), position in 2_usize..14) {
            let mut bytes = VALID[which].replace(' ', "").into_bytes();
            prop_assume!(position + 1 < bytes.len() && bytes[position] != bytes[position + 1]);
            prop_assume!(bytes[position].is_ascii_digit() && bytes[position + 1].is_ascii_digit());
            bytes.swap(position, position + 1);
            let swapped = String::from_utf8(bytes).unwrap();
            prop_assert_eq!(Iban::parse(&swapped), Err(IbanError::Checksum));
        }

        /// Any string that parses has a checksum of 1 and its country's length.
        #[test]
        fn parsed_ibans_satisfy_the_rules(text in "[A-Z]{2}[0-9]{2}[A-Z0-9]{11,30}") {
            if let Ok(iban) = Iban::parse(&text) {
                prop_assert_eq!(mod97(iban.as_str()), 1);
                prop_assert_eq!(Some(iban.as_str().len()), registry_length(iban.country()));
            }
        }
    }
}
