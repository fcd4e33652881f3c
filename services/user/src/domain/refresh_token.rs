//! Refresh tokens: long-lived, opaque, single use.
//!
//! A refresh token is 256 random bits in base64url: there is nothing inside
//! to decode or forge. The database keeps only its SHA-256 hash, so a leaked
//! backup holds no usable token; because the token has full entropy, a fast
//! hash is enough (slow, salted hashes are for guessable secrets such as
//! passwords).
//!
//! Rotation with reuse detection (OAuth 2.0 Security Best Current Practice,
//! RFC 9700 §4.14.2): every exchange spends the token and hands out a new
//! one of the same *family*. A spent token presented again means it was
//! copied, and either the client or a thief now holds the family's newest
//! token. There is no telling which, so the whole family is revoked and its
//! holder must log in again.

use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use chrono::{DateTime, Utc};

/// The secret a client presents to get a new access token.
pub struct RefreshToken(String);

impl RefreshToken {
    /// Bytes of randomness in a token.
    pub const RANDOM_BYTES: usize = 32;

    /// A new token from fresh random bytes (the caller's CSPRNG: keeping the
    /// randomness out of here keeps this module deterministic).
    pub fn from_random(bytes: [u8; Self::RANDOM_BYTES]) -> Self {
        Self(URL_SAFE_NO_PAD.encode(bytes))
    }

    /// A token as a client presented it; any text is acceptable, since an
    /// unknown token simply matches no stored hash.
    pub fn presented(text: String) -> Self {
        Self(text)
    }

    /// What the database stores and looks the token up by.
    pub fn hash(&self) -> TokenHash {
        let mut hash = [0; 32];
        hash.copy_from_slice(digest(&SHA256, self.0.as_bytes()).as_ref());
        TokenHash(hash)
    }

    /// The token's text, for the response that hands it out.
    pub fn expose_secret(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for RefreshToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("RefreshToken([redacted])")
    }
}

/// SHA-256 of a refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TokenHash([u8; 32]);

impl TokenHash {
    pub fn as_bytes(&self) -> &[u8] {
        &self.0
    }
}

/// What is known about a stored token when it is presented.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshTokenState {
    pub expires_at: DateTime<Utc>,
    /// Already exchanged for a newer token.
    pub used: bool,
    /// Its family was revoked (after a reuse).
    pub revoked: bool,
}

/// What presenting a stored token leads to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exchange {
    /// Spend it and issue the family's next token.
    Rotate,
    /// A spent token came back: revoke the family, refuse.
    Reuse,
    /// Refuse; nothing else to do.
    Expired,
    /// Refuse; the family is already revoked.
    Revoked,
}

impl RefreshTokenState {
    /// The rule, in order: a revoked family stays revoked; a spent token
    /// means theft even if it has expired since; an expired token is
    /// refused; anything else rotates.
    pub fn exchange(&self, now: DateTime<Utc>) -> Exchange {
        if self.revoked {
            Exchange::Revoked
        } else if self.used {
            Exchange::Reuse
        } else if now >= self.expires_at {
            Exchange::Expired
        } else {
            Exchange::Rotate
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn every_state_leads_to_one_exchange() {
        let now = Utc::now();
        let live = now + TimeDelta::days(1);
        let past = now - TimeDelta::seconds(1);
        let state = |expires_at, used, revoked| RefreshTokenState {
            expires_at,
            used,
            revoked,
        };
        assert_eq!(state(live, false, false).exchange(now), Exchange::Rotate);
        assert_eq!(state(live, true, false).exchange(now), Exchange::Reuse);
        assert_eq!(state(past, true, false).exchange(now), Exchange::Reuse);
        assert_eq!(state(past, false, false).exchange(now), Exchange::Expired);
        assert_eq!(state(now, false, false).exchange(now), Exchange::Expired);
        assert_eq!(state(live, true, true).exchange(now), Exchange::Revoked);
        assert_eq!(state(live, false, true).exchange(now), Exchange::Revoked);
    }

    #[test]
    fn tokens_are_url_safe_and_hashed_with_sha256() {
        let token = RefreshToken::from_random([0xfb; 32]);
        assert_eq!(token.expose_secret().len(), 43);
        assert!(
            token
                .expose_secret()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        // SHA-256("abc"), FIPS 180-2 appendix B.1.
        let abc = RefreshToken::presented("abc".into()).hash();
        assert_eq!(abc.as_bytes()[..4], [0xba, 0x78, 0x16, 0xbf], "{abc:?}");
        assert_eq!(format!("{token:?}"), "RefreshToken([redacted])");
    }

    proptest! {
        #[test]
        fn distinct_randomness_gives_distinct_tokens_and_hashes(
            a in any::<[u8; 32]>(),
            b in any::<[u8; 32]>(),
        ) {
            let (ta, tb) = (RefreshToken::from_random(a), RefreshToken::from_random(b));
            prop_assert_eq!(a == b, ta.expose_secret() == tb.expose_secret());
            prop_assert_eq!(a == b, ta.hash() == tb.hash());
            prop_assert_eq!(
                RefreshToken::presented(ta.expose_secret().to_owned()).hash(),
                ta.hash()
            );
        }
    }
}
