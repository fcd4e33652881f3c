//! Access tokens, signed by the user service and verified by the gateway.
//!
//! The user service issues a short-lived JSON Web Token at login; the gateway
//! checks it on every authenticated request and forwards the caller's id and
//! roles to the services behind it. Both sides must agree exactly on what a
//! valid token is, so the whole contract lives here and both link it:
//!
//! - [`Claims`] ([`claims`]): what a token says (`sub`, `roles`, `iat`, `exp`,
//!   `iss`, `aud`, `jti`).
//! - [`SigningKey`] and [`PublicKey`] ([`keys`]): Ed25519 keys, their PEM
//!   forms, and the public JWKS document (`GET /.well-known/jwks.json`).
//! - [`Verifier`] ([`verify`]): checks a token against a JWKS key set and
//!   says precisely why it is refused ([`VerifyError`]: missing, expired, or
//!   invalid with a reason).
//!
//! # Why Ed25519 and a JWKS
//!
//! The verifier holds only public keys, so the gateway (or anything else that
//! checks tokens) can never mint one. Ed25519 (`alg: EdDSA`) has small keys and
//! signatures, deterministic signing, and no parameter choices to get wrong;
//! RSA keys published by other issuers still verify, since the key set takes
//! each key's algorithm from its JWK.
//!
//! Keys are identified by their RFC 7638 thumbprint (`kid`), which is derived
//! from the key itself: every replica holding the same key agrees on its id
//! without configuration, and two different keys can never share one.
//!
//! # Rotating keys without downtime
//!
//! The JWKS document lists the current key and, during a rotation, the previous
//! one. To rotate, restart the user service with the new key as the signing key
//! and the old one as the previous key: tokens signed before the switch keep
//! verifying while they live. Once the access-token lifetime has passed, drop
//! the previous key. A verifier that meets a `kid` it does not know
//! ([`VerifyError::is_unknown_key`]) should fetch the JWKS again (at most
//! every few seconds) before refusing the token, so new keys are picked up
//! as soon as they are used.

pub mod claims;
pub mod keys;
pub mod verify;

pub use claims::Claims;
pub use jsonwebtoken::jwk::{Jwk, JwkSet};
pub use keys::{KeyError, PublicKey, SigningKey, jwks};
pub use verify::{InvalidToken, KeySet, Verifier, VerifyError, bearer_token};

/// Where the issuer publishes its public keys.
pub const JWKS_PATH: &str = "/.well-known/jwks.json";

/// The `iss` of Ferrishop's access tokens unless configured otherwise.
pub const DEFAULT_ISSUER: &str = "ferrishop-user";

/// The `aud` of Ferrishop's access tokens unless configured otherwise.
pub const DEFAULT_AUDIENCE: &str = "ferrishop";

/// The role that unlocks the admin routes.
pub const ADMIN_ROLE: &str = "admin";
