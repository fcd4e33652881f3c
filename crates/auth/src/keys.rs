//! Ed25519 keys: the private key the user service signs with, and the public
//! keys it publishes as a JWKS document.
//!
//! Keys travel as PEM, the form `openssl genpkey -algorithm ed25519` writes
//! (PKCS#8 `PRIVATE KEY`) and `openssl pkey -pubout` derives (SPKI
//! `PUBLIC KEY`). A public key is identified by its RFC 7638 thumbprint, so
//! its `kid` is a function of the key alone.

use std::fmt;

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use jsonwebtoken::jwk::{
    AlgorithmParameters, CommonParameters, EllipticCurve, Jwk, JwkSet, KeyAlgorithm,
    OctetKeyPairParameters, OctetKeyPairType, PublicKeyUse,
};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};

use crate::Claims;

/// Length of a raw Ed25519 public key.
const PUBLIC_KEY_LEN: usize = 32;

/// Why a key could not be read, made or used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The text is not a PEM `PRIVATE KEY` holding an Ed25519 key.
    #[error(
        "not an Ed25519 private key in PKCS#8 PEM form (-----BEGIN PRIVATE KEY-----, as written by `openssl genpkey -algorithm ed25519`)"
    )]
    NotAPrivateKey,
    /// The text is neither a PEM `PUBLIC KEY` nor a `PRIVATE KEY` holding an
    /// Ed25519 key.
    #[error(
        "not an Ed25519 key in PEM form (-----BEGIN PUBLIC KEY----- or -----BEGIN PRIVATE KEY-----)"
    )]
    NotAKey,
    /// The operating system's random source failed.
    #[error("cannot generate an Ed25519 key")]
    Generate,
    /// Signing failed (a key that parsed but cannot sign).
    #[error("cannot sign a token: {0}")]
    Sign(#[source] jsonwebtoken::errors::Error),
}

/// The private key access tokens are signed with.
///
/// Its `Debug` output names only the key id: the key material never reaches
/// a log line.
pub struct SigningKey {
    encoding: EncodingKey,
    public: PublicKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.public.kid)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a PKCS#8 PEM Ed25519 private key.
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        let encoding =
            EncodingKey::from_ed_pem(pem.as_bytes()).map_err(|_| KeyError::NotAPrivateKey)?;
        Self::from_pkcs8_der(encoding.as_bytes())
    }

    /// Makes a fresh random key (PKCS#8 v1, as OpenSSL writes it).
    pub fn generate() -> Result<Self, KeyError> {
        let document = Ed25519KeyPair::generate_pkcs8v1(&SystemRandom::new())
            .map_err(|_| KeyError::Generate)?;
        Self::from_pkcs8_der(document.as_ref())
    }

    fn from_pkcs8_der(der: &[u8]) -> Result<Self, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8(der).map_err(|_| KeyError::NotAPrivateKey)?;
        let public = PublicKey::from_raw(pair.public_key().as_ref())?;
        Ok(Self {
            encoding: EncodingKey::from_ed_der(der),
            public,
        })
    }

    /// The key id tokens signed with this key carry in their header.
    pub fn kid(&self) -> &str {
        &self.public.kid
    }

    /// The matching public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// Signs `claims` as a compact JWS with header `{alg: EdDSA, typ: JWT, kid}`.
    pub fn sign(&self, claims: &Claims) -> Result<String, KeyError> {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.public.kid.clone());
        jsonwebtoken::encode(&header, claims, &self.encoding).map_err(KeyError::Sign)
    }

    /// The key as PKCS#8 PEM, the form [`SigningKey::from_pem`] reads: for
    /// tools and tests that hand a key to a process.
    pub fn to_pkcs8_pem(&self) -> String {
        pem("PRIVATE KEY", self.encoding.as_bytes())
    }
}

/// A public Ed25519 key and its JWK form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    kid: String,
    jwk: Jwk,
}

impl PublicKey {
    /// Reads a PEM `PUBLIC KEY`, or derives the public half of a PEM
    /// `PRIVATE KEY` (so a retired signing key file can serve as the previous
    /// key during a rotation).
    pub fn from_pem(pem: &str) -> Result<Self, KeyError> {
        if let Ok(decoding) = DecodingKey::from_ed_pem(pem.as_bytes())
            && let Ok(raw) = decoding.try_get_as_bytes()
        {
            return Self::from_raw(raw).map_err(|_| KeyError::NotAKey);
        }
        SigningKey::from_pem(pem)
            .map(|key| key.public)
            .map_err(|_| KeyError::NotAKey)
    }

    fn from_raw(raw: &[u8]) -> Result<Self, KeyError> {
        if raw.len() != PUBLIC_KEY_LEN {
            return Err(KeyError::NotAKey);
        }
        let x = URL_SAFE_NO_PAD.encode(raw);
        let kid = thumbprint(&x);
        let jwk = Jwk {
            common: CommonParameters {
                public_key_use: Some(PublicKeyUse::Signature),
                key_algorithm: Some(KeyAlgorithm::EdDSA),
                key_id: Some(kid.clone()),
                ..CommonParameters::default()
            },
            algorithm: AlgorithmParameters::OctetKeyPair(OctetKeyPairParameters {
                key_type: OctetKeyPairType::OctetKeyPair,
                curve: EllipticCurve::Ed25519,
                x,
            }),
        };
        Ok(Self { kid, jwk })
    }

    /// The RFC 7638 thumbprint that names this key.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The key as a JWK (`kty: OKP`, `crv: Ed25519`, `alg: EdDSA`,
    /// `use: sig`, `kid`).
    pub fn to_jwk(&self) -> Jwk {
        self.jwk.clone()
    }
}

/// The JWKS document publishing `keys`, in the order given (current key
/// first by convention).
pub fn jwks<'a>(keys: impl IntoIterator<Item = &'a PublicKey>) -> JwkSet {
    JwkSet {
        keys: keys.into_iter().map(PublicKey::to_jwk).collect(),
    }
}

/// RFC 7638 §3: SHA-256 over the required members in lexicographic order,
/// without whitespace, base64url-encoded.
fn thumbprint(x: &str) -> String {
    let canonical = format!(r#"{{"crv":"Ed25519","kty":"OKP","x":"{x}"}}"#);
    URL_SAFE_NO_PAD.encode(digest(&SHA256, canonical.as_bytes()))
}

/// RFC 7468 text encoding: base64 in 64-column lines between labels.
fn pem(label: &str, der: &[u8]) -> String {
    let body = STANDARD.encode(der);
    let mut text = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(64) {
        text.push_str(&String::from_utf8_lossy(line));
        text.push('\n');
    }
    text.push_str(&format!("-----END {label}-----\n"));
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 8037 appendix A.1/A.3: the example Ed25519 key and its thumbprint.
    const RFC8037_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----\n\
        MC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
        -----END PRIVATE KEY-----\n";
    const RFC8037_X: &str = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
    const RFC8037_THUMBPRINT: &str = "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k";

    #[test]
    fn the_rfc_8037_example_key_has_the_rfc_thumbprint() {
        let key = SigningKey::from_pem(RFC8037_PRIVATE).unwrap();
        assert_eq!(key.kid(), RFC8037_THUMBPRINT);
        let jwk = serde_json::to_value(key.public_key().to_jwk()).unwrap();
        assert_eq!(jwk["x"], RFC8037_X);
        assert_eq!(jwk["kty"], "OKP");
        assert_eq!(jwk["crv"], "Ed25519");
        assert_eq!(jwk["alg"], "EdDSA");
        assert_eq!(jwk["use"], "sig");
        assert_eq!(jwk["kid"], RFC8037_THUMBPRINT);
        assert!(
            jwk.get("d").is_none(),
            "the private part must never be published"
        );
    }

    #[test]
    fn pem_round_trips_and_public_keys_read_both_forms() {
        let key = SigningKey::generate().unwrap();
        let again = SigningKey::from_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(again.kid(), key.kid());
        let from_private = PublicKey::from_pem(&key.to_pkcs8_pem()).unwrap();
        assert_eq!(&from_private, key.public_key());

        // SPKI for Ed25519: a fixed 12-byte prefix, then the raw key.
        let AlgorithmParameters::OctetKeyPair(okp) = &key.public_key().to_jwk().algorithm else {
            panic!("an Ed25519 JWK has octet-key-pair parameters");
        };
        let mut spki = vec![
            0x30, 0x2a, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x03, 0x21, 0x00,
        ];
        spki.extend(URL_SAFE_NO_PAD.decode(&okp.x).unwrap());
        let from_public = PublicKey::from_pem(&pem("PUBLIC KEY", &spki)).unwrap();
        assert_eq!(&from_public, key.public_key());
    }

    #[test]
    fn garbage_is_not_a_key() {
        assert!(matches!(
            SigningKey::from_pem("not a key"),
            Err(KeyError::NotAPrivateKey)
        ));
        assert!(matches!(PublicKey::from_pem(""), Err(KeyError::NotAKey)));
        let generated = SigningKey::generate().unwrap();
        assert_ne!(generated.kid(), SigningKey::generate().unwrap().kid());
    }

    #[test]
    fn debug_output_never_shows_key_material() {
        let key = SigningKey::from_pem(RFC8037_PRIVATE).unwrap();
        let debug = format!("{key:?}");
        assert!(debug.contains(RFC8037_THUMBPRINT));
        assert!(!debug.contains("nWGxne"), "{debug}");
    }
}
