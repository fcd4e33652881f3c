//! Issuing tokens: the signed access token and the opaque refresh token
//! that a login or a refresh hands out.

use std::sync::Arc;
use std::time::Duration;

use auth::{Claims, JwkSet, PublicKey, SigningKey};
use chrono::{DateTime, TimeDelta, Utc};
use uuid::Uuid;

use crate::domain::{Account, RefreshToken};
use crate::error::Error;

/// What tokens say and how long they live.
#[derive(Debug, Clone)]
pub struct TokenSettings {
    pub issuer: String,
    pub audience: String,
    pub access_ttl: Duration,
    pub refresh_ttl: Duration,
}

/// The signing key, the published keys, and the token lifetimes.
#[derive(Debug)]
pub struct Tokens {
    signing: Arc<SigningKey>,
    jwks: JwkSet,
    settings: TokenSettings,
}

/// A signed access token and its lifetime.
#[derive(Debug)]
pub struct AccessToken {
    pub token: String,
    pub expires_in: Duration,
}

/// A fresh refresh token and when it stops working.
#[derive(Debug)]
pub struct NewRefreshToken {
    pub token: RefreshToken,
    pub expires_at: DateTime<Utc>,
}

impl Tokens {
    /// Publishes `signing`'s public key and, during a rotation, `previous`.
    pub fn new(
        signing: Arc<SigningKey>,
        previous: Option<PublicKey>,
        settings: TokenSettings,
    ) -> Self {
        let previous = previous.filter(|key| key.kid() != signing.kid());
        let jwks = auth::jwks(std::iter::once(signing.public_key()).chain(previous.as_ref()));
        Self {
            signing,
            jwks,
            settings,
        }
    }

    /// The JWKS document: the current key first, then the previous one.
    pub fn jwks(&self) -> &JwkSet {
        &self.jwks
    }

    /// An access token for `account`, valid from `now` for the access TTL.
    pub fn access_token(
        &self,
        account: &Account,
        now: DateTime<Utc>,
    ) -> Result<AccessToken, Error> {
        let ttl = self.settings.access_ttl;
        let claims = Claims {
            sub: account.user.id.as_uuid(),
            roles: account.role_names(),
            iat: now.timestamp(),
            exp: (now + delta(ttl)).timestamp(),
            iss: self.settings.issuer.clone(),
            aud: self.settings.audience.clone(),
            jti: Uuid::now_v7(),
        };
        let token = self.signing.sign(&claims).map_err(Error::internal)?;
        Ok(AccessToken {
            token,
            expires_in: ttl,
        })
    }

    /// A new random refresh token, valid from `now` for the refresh TTL.
    pub fn refresh_token(&self, now: DateTime<Utc>) -> NewRefreshToken {
        NewRefreshToken {
            token: RefreshToken::from_random(rand::random()),
            expires_at: now + delta(self.settings.refresh_ttl),
        }
    }
}

/// Configured lifetimes are far below `TimeDelta`'s range; saturate anyway.
fn delta(duration: Duration) -> TimeDelta {
    TimeDelta::from_std(duration).unwrap_or(TimeDelta::MAX)
}
