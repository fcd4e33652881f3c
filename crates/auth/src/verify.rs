//! Checking an access token: signature, algorithm, key id, issuer, audience
//! and expiry, against the issuer's published keys.
//!
//! The algorithm is taken from the key, never from the token: a token's
//! header only has to agree with the key its `kid` names. That closes the
//! classic JWT holes, `alg: none` and "verify an HS256 MAC with the public
//! key as the secret", before any cryptography runs. Symmetric keys are never
//! accepted into a [`KeySet`], whatever a JWKS document contains.
//!
//! Failures say why ([`VerifyError`]), so the gateway can log "expired" apart
//! from "forged" apart from "no token at all", while answering all three with
//! the same 401.

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, JwkSet, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use crate::keys::PublicKey;
use crate::{Claims, jwks};

/// Signature algorithms a key may use: asymmetric ones only.
const ALLOWED_ALGORITHMS: [Algorithm; 9] = [
    Algorithm::EdDSA,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// Tokens longer than this are refused unread: ours are a few hundred bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Clock skew tolerated on `exp` unless configured otherwise.
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);

/// Why a request is not authenticated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    /// No token was presented.
    #[error("no bearer token presented")]
    Missing,
    /// A genuine token whose `exp` has passed.
    #[error("token expired")]
    Expired,
    /// Anything else: forged, tampered, for someone else, or not a token.
    #[error("invalid token: {0}")]
    Invalid(#[from] InvalidToken),
}

impl VerifyError {
    /// `missing`, `expired` or `invalid`: a low-cardinality label for logs
    /// and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Expired => "expired",
            Self::Invalid(_) => "invalid",
        }
    }

    /// True when the token names a key this verifier does not hold: the
    /// issuer may have rotated, so fetching its JWKS again may help.
    pub fn is_unknown_key(&self) -> bool {
        matches!(self, Self::Invalid(InvalidToken::UnknownKey(_)))
    }
}

/// Why a presented token is invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidToken {
    /// Not a compact JWS, or not decodable (base64, JSON, UTF-8, too long).
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm that is not allowed (e.g. `none`,
    /// `HS256`) or that is not the named key's algorithm.
    #[error("algorithm {0:?} is not allowed")]
    AlgorithmNotAllowed(String),
    /// The header marks extensions as critical (`crit`); none are supported.
    #[error("unsupported critical header parameters")]
    UnsupportedCritical,
    /// The header has no `kid`.
    #[error("no key id")]
    MissingKeyId,
    /// No key in the set has this `kid`.
    #[error("unknown key id {0:?}")]
    UnknownKey(String),
    /// The signature does not match: the token was altered or forged.
    #[error("bad signature")]
    BadSignature,
    /// `iss` is not the expected issuer.
    #[error("wrong issuer")]
    WrongIssuer,
    /// `aud` is not the expected audience.
    #[error("wrong audience")]
    WrongAudience,
    /// A required claim is absent.
    #[error("missing claim {0:?}")]
    MissingClaim(String),
    /// The claims are not Ferrishop claims (wrong types, missing fields).
    #[error("invalid claims: {0}")]
    InvalidClaims(String),
    /// `nbf` lies in the future.
    #[error("not valid yet")]
    NotYetValid,
    /// The key could not check the signature (a broken key in the set).
    #[error("cannot verify: {0}")]
    Unverifiable(String),
}

/// The verification keys of a JWKS document, by `kid`.
///
/// A JWK is kept only if it has a `kid`, is meant for signatures (`use` is
/// absent or `sig`), and has an allowed asymmetric algorithm that matches its
/// key type; other keys are skipped, as RFC 7517 asks of keys a reader does
/// not understand. An `alg`-less key is accepted only where the key type
/// implies the algorithm (Ed25519 → EdDSA).
#[derive(Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, VerificationKey>,
}

#[derive(Clone)]
struct VerificationKey {
    algorithm: Algorithm,
    key: DecodingKey,
}

impl fmt::Debug for KeySet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut kids: Vec<_> = self.keys.keys().collect();
        kids.sort();
        f.debug_struct("KeySet").field("kids", &kids).finish()
    }
}

impl KeySet {
    /// The usable keys of `document`.
    pub fn from_jwks(document: &JwkSet) -> Self {
        let keys = document
            .keys
            .iter()
            .filter_map(|jwk| {
                let kid = jwk.common.key_id.clone()?;
                verification_key(jwk).map(|key| (kid, key))
            })
            .collect();
        Self { keys }
    }

    /// The keys of an issuer's own public keys (what its JWKS would hold).
    pub fn from_public_keys<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> Self {
        Self::from_jwks(&jwks(keys))
    }

    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn contains(&self, kid: &str) -> bool {
        self.keys.contains_key(kid)
    }
}

fn verification_key(jwk: &Jwk) -> Option<VerificationKey> {
    if jwk
        .common
        .public_key_use
        .as_ref()
        .is_some_and(|usage| *usage != PublicKeyUse::Signature)
    {
        return None;
    }
    let algorithm = match jwk.common.key_algorithm {
        Some(declared) => Algorithm::from_str(&declared.to_string()).ok()?,
        None => match &jwk.algorithm {
            AlgorithmParameters::OctetKeyPair(okp) if okp.curve == EllipticCurve::Ed25519 => {
                Algorithm::EdDSA
            }
            _ => return None,
        },
    };
    if !ALLOWED_ALGORITHMS.contains(&algorithm) {
        return None;
    }
    let key = DecodingKey::from_jwk(jwk).ok()?;
    (key.family() == algorithm.family()).then_some(VerificationKey { algorithm, key })
}

/// Checks access tokens against one issuer's keys.
#[derive(Debug, Clone)]
pub struct Verifier {
    keys: KeySet,
    issuer: String,
    audience: String,
    leeway: Duration,
}

impl Verifier {
    /// A verifier accepting tokens signed by `keys`, issued by `issuer` for
    /// `audience`, with [`DEFAULT_LEEWAY`] on expiry.
    pub fn new(keys: KeySet, issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            keys,
            issuer: issuer.into(),
            audience: audience.into(),
            leeway: DEFAULT_LEEWAY,
        }
    }

    /// Tolerates this much clock skew between issuer and verifier on `exp`.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    pub fn keys(&self) -> &KeySet {
        &self.keys
    }

    /// Verifies the token of an `Authorization` header value.
    pub fn verify_authorization(&self, authorization: Option<&str>) -> Result<Claims, VerifyError> {
        self.verify(bearer_token(authorization)?)
    }

    /// Verifies a compact JWS and returns its claims.
    pub fn verify(&self, token: &str) -> Result<Claims, VerifyError> {
        let header = peek_header(token)?;
        let kid = header.kid.ok_or(InvalidToken::MissingKeyId)?;
        let key = self
            .keys
            .keys
            .get(&kid)
            .ok_or(InvalidToken::UnknownKey(kid))?;
        if header.alg != key.algorithm {
            return Err(InvalidToken::AlgorithmNotAllowed(format!("{:?}", header.alg)).into());
        }
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
        validation.leeway = self.leeway.as_secs();
        jsonwebtoken::decode::<Claims>(token, &key.key, &validation)
            .map(|data| data.claims)
            .map_err(|error| classify(error.into_kind()))
    }
}

/// The part of a JOSE header looked at before any key is chosen.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: String,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// What a token's header asks for, once it is known to be allowed.
struct AllowedHeader {
    alg: Algorithm,
    kid: Option<String>,
}

/// Reads the header without trusting it: the algorithm must be an allowed
/// asymmetric one before anything else happens.
fn peek_header(token: &str) -> Result<AllowedHeader, InvalidToken> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(InvalidToken::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(InvalidToken::Malformed);
    };
    let json = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| InvalidToken::Malformed)?;
    let peeked: PeekedHeader =
        serde_json::from_slice(&json).map_err(|_| InvalidToken::Malformed)?;
    let alg = Algorithm::from_str(&peeked.alg)
        .ok()
        .filter(|alg| ALLOWED_ALGORITHMS.contains(alg))
        .ok_or(InvalidToken::AlgorithmNotAllowed(peeked.alg))?;
    if peeked.crit.is_some() {
        return Err(InvalidToken::UnsupportedCritical);
    }
    Ok(AllowedHeader {
        alg,
        kid: peeked.kid,
    })
}

fn classify(kind: ErrorKind) -> VerifyError {
    let invalid = match kind {
        ErrorKind::ExpiredSignature => return VerifyError::Expired,
        ErrorKind::InvalidSignature => InvalidToken::BadSignature,
        ErrorKind::InvalidIssuer => InvalidToken::WrongIssuer,
        ErrorKind::InvalidAudience => InvalidToken::WrongAudience,
        ErrorKind::MissingRequiredClaim(claim) => InvalidToken::MissingClaim(claim),
        ErrorKind::ImmatureSignature => InvalidToken::NotYetValid,
        ErrorKind::InvalidAlgorithm => InvalidToken::AlgorithmNotAllowed("mismatch".to_owned()),
        ErrorKind::InvalidClaimFormat(claim) => InvalidToken::InvalidClaims(claim),
        ErrorKind::Json(error) => InvalidToken::InvalidClaims(error.to_string()),
        ErrorKind::InvalidToken | ErrorKind::Base64(_) | ErrorKind::Utf8(_) => {
            InvalidToken::Malformed
        }
        other => InvalidToken::Unverifiable(format!("{other:?}")),
    };
    VerifyError::Invalid(invalid)
}

/// The token of an `Authorization: Bearer <token>` header value.
///
/// An absent or blank header is [`VerifyError::Missing`]; any other scheme,
/// or `Bearer` with nothing after it, is malformed. The scheme is
/// case-insensitive (RFC 9110 §11.1).
pub fn bearer_token(authorization: Option<&str>) -> Result<&str, VerifyError> {
    let value = authorization.map(str::trim).unwrap_or_default();
    if value.is_empty() {
        return Err(VerifyError::Missing);
    }
    let (scheme, token) = value.split_once(' ').ok_or(InvalidToken::Malformed)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
        return Err(InvalidToken::Malformed.into());
    }
    Ok(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_headers_parse() {
        assert_eq!(bearer_token(Some("Bearer abc")), Ok("abc"));
        assert_eq!(bearer_token(Some("bearer  abc ")), Ok("abc"));
        assert_eq!(bearer_token(None), Err(VerifyError::Missing));
        assert_eq!(bearer_token(Some("  ")), Err(VerifyError::Missing));
        assert_eq!(
            bearer_token(Some("Basic dXNlcjpwdw==")),
            Err(InvalidToken::Malformed.into())
        );
        assert_eq!(
            bearer_token(Some("Bearer")),
            Err(InvalidToken::Malformed.into())
        );
    }

    #[test]
    fn symmetric_and_foreign_use_keys_never_enter_a_key_set() {
        let document: JwkSet = serde_json::from_value(serde_json::json!({
            "keys": [
                {"kty": "oct", "k": "c2VjcmV0", "alg": "HS256", "kid": "mac"},
                {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "use": "enc", "kid": "enc"},
                {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"},
                {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "alg": "RS256", "kid": "mismatch"},
                {"kty": "OKP", "crv": "Ed25519", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo", "kid": "implied"},
            ]
        }))
        .unwrap();
        let keys = KeySet::from_jwks(&document);
        assert_eq!(keys.len(), 1, "{keys:?}");
        assert!(keys.contains("implied"));
    }
}
