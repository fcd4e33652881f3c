//! The verifier the gateway runs, against tokens from an issuer and from
//! attackers: every way a token can be wrong is refused, for the right
//! reason.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use auth::{Claims, InvalidToken, KeySet, SigningKey, Verifier, VerifyError, jwks};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use uuid::Uuid;

const ISSUER: &str = "ferrishop-user";
const AUDIENCE: &str = "ferrishop";

fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

fn claims() -> Claims {
    Claims {
        sub: Uuid::now_v7(),
        roles: vec!["admin".to_owned()],
        iat: now(),
        exp: now() + 900,
        iss: ISSUER.to_owned(),
        aud: AUDIENCE.to_owned(),
        jti: Uuid::now_v7(),
    }
}

fn verifier_for(keys: &[&SigningKey]) -> Verifier {
    Verifier::new(
        KeySet::from_public_keys(keys.iter().map(|key| key.public_key())),
        ISSUER,
        AUDIENCE,
    )
}

fn b64(value: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(value).unwrap())
}

/// Signs arbitrary JSON claims with `key`, for claims a real issuer never writes.
fn sign_raw(key: &SigningKey, claims: &Value) -> String {
    let mut header = Header::new(Algorithm::EdDSA);
    header.kid = Some(key.kid().to_owned());
    let encoding = EncodingKey::from_ed_pem(key.to_pkcs8_pem().as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &encoding).unwrap()
}

fn invalid(reason: InvalidToken) -> Result<Claims, VerifyError> {
    Err(VerifyError::Invalid(reason))
}

#[test]
fn a_token_round_trips_through_the_published_jwks_document() {
    let key = SigningKey::generate().unwrap();
    let issued = claims();
    let token = key.sign(&issued).unwrap();

    // What the gateway does: fetch the JSON document, build the key set.
    let document = serde_json::to_string(&jwks([key.public_key()])).unwrap();
    let keys = KeySet::from_jwks(&serde_json::from_str(&document).unwrap());
    let verifier = Verifier::new(keys, ISSUER, AUDIENCE);

    assert_eq!(verifier.verify(&token), Ok(issued.clone()));
    assert_eq!(
        verifier.verify_authorization(Some(&format!("Bearer {token}"))),
        Ok(issued)
    );
    let header: Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(token.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], key.kid());
}

#[test]
fn alg_none_is_refused() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let claims = serde_json::to_value(claims()).unwrap();
    for alg in ["none", "None", "NONE"] {
        let header = json!({"alg": alg, "typ": "JWT", "kid": key.kid()});
        let token = format!("{}.{}.", b64(&header), b64(&claims));
        assert_eq!(
            verifier.verify(&token),
            invalid(InvalidToken::AlgorithmNotAllowed(alg.to_owned())),
            "{alg}"
        );
    }
}

#[test]
fn an_hmac_signed_with_the_public_key_is_refused() {
    // The classic confusion: the attacker knows the public key and MACs with it.
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let public = serde_json::to_value(key.public_key().to_jwk()).unwrap();
    let secret = URL_SAFE_NO_PAD
        .decode(public["x"].as_str().unwrap())
        .unwrap();
    let mut header = Header::new(Algorithm::HS256);
    header.kid = Some(key.kid().to_owned());
    let token =
        jsonwebtoken::encode(&header, &claims(), &EncodingKey::from_secret(&secret)).unwrap();
    assert_eq!(
        verifier.verify(&token),
        invalid(InvalidToken::AlgorithmNotAllowed("HS256".to_owned()))
    );
}

#[test]
fn a_tampered_payload_is_refused() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let mut shopper = claims();
    shopper.roles.clear();
    let token = key.sign(&shopper).unwrap();
    let parts: Vec<&str> = token.split('.').collect();

    let mut promoted = serde_json::to_value(&shopper).unwrap();
    promoted["roles"] = json!(["admin"]);
    let forged = format!("{}.{}.{}", parts[0], b64(&promoted), parts[2]);
    assert_eq!(
        verifier.verify(&forged),
        invalid(InvalidToken::BadSignature)
    );

    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[0] ^= 1;
    let flipped = format!(
        "{}.{}.{}",
        parts[0],
        parts[1],
        URL_SAFE_NO_PAD.encode(signature)
    );
    assert_eq!(
        verifier.verify(&flipped),
        invalid(InvalidToken::BadSignature)
    );
}

#[test]
fn wrong_audience_or_issuer_is_refused() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let mut other_audience = claims();
    other_audience.aud = "another-shop".to_owned();
    assert_eq!(
        verifier.verify(&key.sign(&other_audience).unwrap()),
        invalid(InvalidToken::WrongAudience)
    );
    let mut other_issuer = claims();
    other_issuer.iss = "https://evil.example".to_owned();
    assert_eq!(
        verifier.verify(&key.sign(&other_issuer).unwrap()),
        invalid(InvalidToken::WrongIssuer)
    );
}

#[test]
fn an_expired_token_is_refused_after_the_leeway() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]).with_leeway(Duration::from_secs(30));

    let mut long_gone = claims();
    long_gone.iat = now() - 1000;
    long_gone.exp = now() - 100;
    let token = key.sign(&long_gone).unwrap();
    assert_eq!(verifier.verify(&token), Err(VerifyError::Expired));
    assert_eq!(VerifyError::Expired.kind(), "expired");

    let mut just_expired = claims();
    just_expired.exp = now() - 5;
    assert!(
        verifier.verify(&key.sign(&just_expired).unwrap()).is_ok(),
        "within the leeway a token still verifies"
    );
    let strict = verifier_for(&[&key]).with_leeway(Duration::ZERO);
    assert_eq!(
        strict.verify(&key.sign(&just_expired).unwrap()),
        Err(VerifyError::Expired)
    );
}

#[test]
fn a_forged_token_is_invalid_not_expired() {
    // Expiry is only reported for tokens whose signature holds.
    let key = SigningKey::generate().unwrap();
    let impostor = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let mut expired = claims();
    expired.exp = now() - 1000;
    let token = impostor.sign(&expired).unwrap();
    let parts: Vec<&str> = token.split('.').collect();
    let relabelled_header = json!({"alg": "EdDSA", "typ": "JWT", "kid": key.kid()});
    let forged = format!("{}.{}.{}", b64(&relabelled_header), parts[1], parts[2]);
    assert_eq!(
        verifier.verify(&forged),
        invalid(InvalidToken::BadSignature)
    );
}

#[test]
fn keys_rotate_without_refusing_live_tokens() {
    let previous = SigningKey::generate().unwrap();
    let current = SigningKey::generate().unwrap();
    let old_token = previous.sign(&claims()).unwrap();
    let new_token = current.sign(&claims()).unwrap();

    // During the rotation both keys are published.
    let both = verifier_for(&[&current, &previous]);
    assert!(both.verify(&old_token).is_ok());
    assert!(both.verify(&new_token).is_ok());

    // A verifier that has not refetched the JWKS learns it should.
    let stale = verifier_for(&[&previous]);
    let error = stale.verify(&new_token).unwrap_err();
    assert!(error.is_unknown_key(), "{error:?}");

    // Once the previous key is dropped, its tokens stop verifying.
    let after = verifier_for(&[&current]);
    assert_eq!(
        after.verify(&old_token),
        invalid(InvalidToken::UnknownKey(previous.kid().to_owned()))
    );
}

#[test]
fn headers_without_kid_or_with_critical_extensions_are_refused() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let claims = serde_json::to_value(claims()).unwrap();
    let signature = "c2ln";
    let no_kid = format!(
        "{}.{}.{signature}",
        b64(&json!({"alg": "EdDSA"})),
        b64(&claims)
    );
    assert_eq!(
        verifier.verify(&no_kid),
        invalid(InvalidToken::MissingKeyId)
    );
    let critical = json!({"alg": "EdDSA", "kid": key.kid(), "crit": ["exp"], "exp": 1});
    let with_crit = format!("{}.{}.{signature}", b64(&critical), b64(&claims));
    assert_eq!(
        verifier.verify(&with_crit),
        invalid(InvalidToken::UnsupportedCritical)
    );
}

#[test]
fn claims_that_are_not_ferrishop_claims_are_refused() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    let refused_for = |claims: &Value, field: &str| match verifier.verify(&sign_raw(&key, claims)) {
        Err(VerifyError::Invalid(InvalidToken::InvalidClaims(reason))) => {
            assert!(reason.contains(field), "{field}: {reason}");
        }
        other => panic!("{field}: expected invalid claims, got {other:?}"),
    };
    for field in ["sub", "exp", "iss", "aud", "roles", "jti"] {
        let mut without = serde_json::to_value(claims()).unwrap();
        without.as_object_mut().unwrap().remove(field);
        refused_for(&without, field);
    }
    let mut not_a_uuid = serde_json::to_value(claims()).unwrap();
    not_a_uuid["sub"] = json!("alice");
    refused_for(&not_a_uuid, "UUID");
}

#[test]
fn garbage_is_malformed_and_absence_is_missing() {
    let key = SigningKey::generate().unwrap();
    let verifier = verifier_for(&[&key]);
    for garbage in ["", "abc", "a.b", "a.b.c.d", "!!!.e30.", &"a".repeat(10_000)] {
        assert_eq!(
            verifier.verify(garbage),
            invalid(InvalidToken::Malformed),
            "{garbage:.20}"
        );
    }
    assert_eq!(
        verifier.verify_authorization(None),
        Err(VerifyError::Missing)
    );
    assert_eq!(VerifyError::Missing.kind(), "missing");
}
