//! Who is calling: access tokens checked against the user service's keys.
//!
//! The gateway holds only the user service's public keys (its JWKS), fetched
//! at start and kept in memory, so it goes on verifying tokens while the
//! user service is down. A token signed with a key it has not seen (the user
//! service rotated) triggers one refetch, at most every
//! [`Config::jwks_refresh_interval`](crate::config::AuthArgs) (10 s): a flood of
//! forged `kid`s cannot turn into a flood of JWKS requests. The refetch
//! outlives the request that triggered it, so a client that gives up does
//! not leave the gateway without the new key for the rest of the interval.
//!
//! [`identify`] runs before every route: a request with a valid token gets a
//! [`Caller`] in its extensions, one without a token none, and one with a bad
//! token is refused with 401 there and then (even on public routes: a client
//! that sends a broken token wants to know). Handlers then ask for what they
//! need: [`Caller`] (401 without one), [`Admin`] (403 for others), or
//! `Option<Caller>`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use auth::{Claims, JwkSet, KeySet, Verifier, VerifyError};
use axum::extract::{FromRequestParts, OptionalFromRequestParts, Request};
use axum::response::{IntoResponse, Response};
use http::header::AUTHORIZATION;
use http::request::Parts;
use http::{HeaderMap, HeaderValue};
use tokio::sync::Mutex;
use uuid::Uuid;

use crate::error::ApiError;

/// The verified caller of a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub user_id: Uuid,
    pub roles: Vec<String>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.roles.iter().any(|role| role == auth::ADMIN_ROLE)
    }

    /// The `x-user-roles` value services read.
    pub fn roles_header(&self) -> String {
        self.roles.join(",")
    }
}

/// Replaces whatever identity a client sent (`x-user-id`, `x-user-roles`,
/// which services trust from the gateway alone) with the verified caller's,
/// and keeps the bearer token at the edge.
pub fn vouch_for(caller: Option<&Caller>, headers: &mut HeaderMap) {
    headers.remove(AUTHORIZATION);
    let Some(caller) = caller else {
        headers.remove(proto::metadata::USER_ID);
        headers.remove(proto::metadata::USER_ROLES);
        return;
    };
    // `insert` replaces every value a client may have sent. A UUID always
    // makes a header value; were it not, an id every service refuses is
    // safer than none, which the user service reads as its own services'
    // call.
    let mut id = Uuid::encode_buffer();
    let id = HeaderValue::from_str(caller.user_id.hyphenated().encode_lower(&mut id))
        .unwrap_or(HeaderValue::from_static("unencodable"));
    headers.insert(proto::metadata::USER_ID, id);
    let roles = match caller.roles.as_slice() {
        [] => Ok(HeaderValue::from_static("")),
        [role] => HeaderValue::from_str(role),
        _ => HeaderValue::from_str(&caller.roles_header()),
    };
    match roles {
        Ok(roles) => headers.insert(proto::metadata::USER_ROLES, roles),
        Err(_) => headers.remove(proto::metadata::USER_ROLES),
    };
}

impl From<Claims> for Caller {
    fn from(claims: Claims) -> Self {
        Self {
            user_id: claims.sub,
            roles: claims.roles,
        }
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Caller>()
            .cloned()
            .ok_or(ApiError::Unauthenticated(VerifyError::Missing))
    }
}

impl<S: Send + Sync> OptionalFromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Option<Self>, Self::Rejection> {
        Ok(parts.extensions.get::<Caller>().cloned())
    }
}

/// A caller with the `admin` role.
#[derive(Debug, Clone)]
pub struct Admin(pub Caller);

impl<S: Send + Sync> FromRequestParts<S> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let caller = <Caller as FromRequestParts<S>>::from_request_parts(parts, state).await?;
        if caller.is_admin() {
            Ok(Self(caller))
        } else {
            Err(ApiError::Forbidden(auth::ADMIN_ROLE))
        }
    }
}

/// Verifies the request's bearer token, if any, and records the caller in
/// its extensions; a bad token is refused there and then, with the
/// response to send. A token not verified yet is first shown to
/// `admit_check`, which may refuse the signature check it would cost (the
/// rate limit, [`crate::rate_limit::admit_token_check`]). The edge
/// middleware ([`crate::routes`]) runs this before every route.
pub async fn identify(
    keys: &Keys,
    request: &mut Request,
    admit_check: impl FnOnce(&Request) -> Option<Response>,
) -> Result<(), Response> {
    let Some(value) = request.headers().get(AUTHORIZATION) else {
        return Ok(());
    };
    let authorization = Some(value.to_str().unwrap_or("\u{0}"));
    let verified = match keys.presented(authorization) {
        Ok(Presented::Verified(claims)) => Ok(claims),
        Ok(Presented::Unverified(token)) => match admit_check(request) {
            Some(refused) => return Err(refused),
            None => keys.check(token).await,
        },
        Err(error) => Err(error),
    };
    match verified {
        Ok(claims) => {
            tracing::Span::current().record("user_id", tracing::field::display(claims.sub));
            request.extensions_mut().insert(Caller::from(claims));
            Ok(())
        }
        Err(error) => {
            tracing::info!(reason = error.kind(), %error, "token refused");
            Err(ApiError::from(error).into_response())
        }
    }
}

/// A bearer token as presented, before any signature check.
#[derive(Debug)]
pub enum Presented<'a> {
    /// Verified already: its claims, from the cache.
    Verified(Claims),
    /// Not verified yet: [`Keys::check`] it.
    Unverified(&'a str),
}

/// Tokens already verified, until they expire.
///
/// Checking an Ed25519 signature costs more than the rest of the edge's work
/// on a proxied request, and a client sends the same token with every
/// request for its lifetime, so a positive result is kept (as Envoy's JWT
/// filter does) — keyed by the whole token, so any change to it misses.
/// Only successes are kept; expiry is checked on every hit (without the
/// verifier's leeway, so a cached token never outlives a fresh check); the
/// cache is emptied when the keys change, and when it is full (a flood of
/// distinct tokens gets no more from it than a check each). Keys are hashed
/// with foldhash's seeded quality hasher: a token is some 300 bytes, and
/// SipHash over them cost more than the rest of a cache hit.
#[derive(Debug, Default)]
struct VerifiedTokens {
    entries: RwLock<Entries>,
}

/// The tokens verified with the keys of one generation.
#[derive(Debug, Default)]
struct Entries {
    /// Bumped whenever the keys change, so that a check made with the old
    /// keys and finished after the change is not kept.
    generation: u64,
    tokens: HashMap<Box<str>, Claims, foldhash::quality::RandomState>,
}

/// Tokens kept at most (a few hundred bytes each).
const VERIFIED_TOKENS: usize = 10_000;

impl Entries {
    /// Drops the expired tokens, and if that frees less than a tenth, half
    /// of the others: the map's seeded hash puts them in no order a client
    /// can choose, so a flood of fresh tokens from one account costs
    /// everyone else half of their cached checks at a time, not all of them.
    fn make_room(&mut self) {
        let now = unix_now();
        self.tokens.retain(|_, claims| claims.exp > now);
        if self.tokens.len() > VERIFIED_TOKENS / 10 * 9 {
            let mut kept = 0;
            let keep = self.tokens.len() / 2;
            self.tokens.retain(|_, _| {
                kept += 1;
                kept <= keep
            });
        }
    }
}

impl VerifiedTokens {
    fn get(&self, token: &str) -> Option<Claims> {
        let entries = self.entries.read().ok()?;
        let claims = entries.tokens.get(token)?;
        (claims.exp > unix_now()).then(|| claims.clone())
    }

    /// The generation to pass to [`insert`](Self::insert): read it before
    /// reading the keys a token is checked with.
    fn generation(&self) -> u64 {
        self.entries.read().map_or(0, |entries| entries.generation)
    }

    /// Keeps a token checked with the keys of `generation`, unless the keys
    /// have changed since.
    fn insert(&self, token: &str, claims: &Claims, generation: u64) {
        if let Ok(mut entries) = self.entries.write()
            && entries.generation == generation
        {
            if entries.tokens.len() >= VERIFIED_TOKENS {
                entries.make_room();
            }
            entries.tokens.insert(token.into(), claims.clone());
        }
    }

    /// Forgets every token, the keys having changed.
    fn clear(&self) {
        let mut entries = self
            .entries
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.generation = entries.generation.wrapping_add(1);
        entries.tokens.clear();
    }
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_secs()).unwrap_or(i64::MAX)
        })
}

/// Settings of [`Keys`].
#[derive(Debug, Clone)]
pub struct KeysConfig {
    /// Where the user service publishes its JWKS.
    pub jwks_url: String,
    pub issuer: String,
    pub audience: String,
    /// Least time between two fetches triggered by unknown key ids.
    pub refresh_interval: Duration,
}

/// The user service's public keys, refreshed on demand.
#[derive(Clone)]
pub struct Keys {
    inner: Arc<KeysInner>,
}

struct KeysInner {
    config: KeysConfig,
    client: reqwest::Client,
    verifier: RwLock<Arc<Verifier>>,
    /// Fetches started, and the number of the one whose keys are installed:
    /// a slow fetch that ends after a later one leaves the later one's keys.
    fetches_started: AtomicU64,
    installed_fetch: AtomicU64,
    /// The JWKS the installed keys came from: a fetch that brings the same
    /// document changes nothing, and keeps the verified tokens.
    installed_document: std::sync::Mutex<Option<JwkSet>>,
    verified: VerifiedTokens,
    /// When the last token-triggered fetch was started; the lock, held by
    /// the fetch until it is done, also makes concurrent refetches wait for
    /// one fetch instead of each sending their own.
    last_fetch: Arc<Mutex<Option<Instant>>>,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keys")
            .field("jwks_url", &self.inner.config.jwks_url)
            .field("keys", &self.current().keys().len())
            .finish()
    }
}

/// Why a presented token was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    /// The token is refused: 401.
    #[error(transparent)]
    Refused(#[from] VerifyError),
    /// No key has been loaded since start (the user service has not
    /// answered yet), so no token can be checked: 503, not 401, since the
    /// token may well be good.
    #[error("the user service's signing keys are not loaded yet")]
    KeysUnavailable,
}

impl TokenError {
    /// A low-cardinality label for logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Refused(error) => error.kind(),
            Self::KeysUnavailable => "keys_unavailable",
        }
    }
}

/// Why the JWKS could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum JwksError {
    /// The user service did not answer with a JWKS (unreachable, an error
    /// status, a body that is not one); the keys held are kept.
    #[error("fetching the JWKS from {url} failed: {source}")]
    Fetch {
        url: String,
        #[source]
        source: reqwest::Error,
    },
    /// The JWKS has no key the gateway can verify with; the keys held are
    /// kept.
    #[error("the JWKS at {url} holds no usable key")]
    NoKeys { url: String },
    /// The fetch's task ended before the fetch did (the gateway stopping).
    #[error("the JWKS fetch was interrupted: {0}")]
    Interrupted(String),
}

impl Keys {
    /// Keys with none loaded yet; [`Keys::refresh`] loads them. Fails only
    /// when no HTTP client can be built (no TLS backend or resolver).
    pub fn new(config: KeysConfig) -> Result<Self, reqwest::Error> {
        let verifier = Verifier::new(KeySet::default(), &config.issuer, &config.audience);
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()?;
        Ok(Self {
            inner: Arc::new(KeysInner {
                config,
                client,
                verifier: RwLock::new(Arc::new(verifier)),
                fetches_started: AtomicU64::new(0),
                installed_fetch: AtomicU64::new(0),
                installed_document: std::sync::Mutex::default(),
                verified: VerifiedTokens::default(),
                last_fetch: Arc::default(),
            }),
        })
    }

    fn current(&self) -> Arc<Verifier> {
        match self.inner.verifier.read() {
            Ok(verifier) => verifier.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The bearer token of an `Authorization` header value, and whether it
    /// is verified already; an error when there is no well-formed token.
    pub fn presented<'a>(
        &self,
        authorization: Option<&'a str>,
    ) -> Result<Presented<'a>, TokenError> {
        let token = auth::bearer_token(authorization)?;
        Ok(match self.inner.verified.get(token) {
            Some(claims) => Presented::Verified(claims),
            None => Presented::Unverified(token),
        })
    }

    /// Verifies an `Authorization` header value: [`presented`](Self::presented),
    /// then [`check`](Self::check) if need be. The edge calls the two itself,
    /// to count a check before it is made.
    #[cfg(test)]
    pub async fn verify(&self, authorization: Option<&str>) -> Result<Claims, TokenError> {
        match self.presented(authorization)? {
            Presented::Verified(claims) => Ok(claims),
            Presented::Unverified(token) => self.check(token).await,
        }
    }

    /// Checks a token's signature and claims, refetching the keys once when
    /// it names a key not seen yet, and keeps it as verified if it passes.
    pub async fn check(&self, token: &str) -> Result<Claims, TokenError> {
        let mut generation = self.inner.verified.generation();
        let claims = match self.current().verify(token) {
            Err(error) if error.is_unknown_key() => {
                if let Err(fetch) = self.refresh_if_due().await {
                    tracing::warn!(error = %fetch, "could not refresh the JWKS");
                }
                generation = self.inner.verified.generation();
                let verifier = self.current();
                if verifier.keys().is_empty() {
                    return Err(TokenError::KeysUnavailable);
                }
                verifier.verify(token)?
            }
            result => result?,
        };
        self.inner.verified.insert(token, &claims, generation);
        Ok(claims)
    }

    /// Fetches the JWKS unless a fetch started less than the refresh
    /// interval ago.
    ///
    /// The fetch runs in a task of its own, holding the lock until it is
    /// done: a request that goes away meanwhile does not cancel it (the
    /// interval would then pass with no new keys), and the requests queued
    /// behind it verify with what it loaded.
    pub async fn refresh_if_due(&self) -> Result<(), JwksError> {
        let mut last = Arc::clone(&self.inner.last_fetch).lock_owned().await;
        if last.is_some_and(|at| at.elapsed() < self.inner.config.refresh_interval) {
            return Ok(());
        }
        *last = Some(Instant::now());
        let keys = self.clone();
        tokio::spawn(async move {
            let _last = last;
            keys.fetch().await
        })
        .await
        .unwrap_or_else(|ended| Err(JwksError::Interrupted(ended.to_string())))
    }

    /// Fetches the JWKS now and replaces the keys (an empty or unreadable
    /// document leaves the current keys in place). Scheduled reloads use
    /// this; only fetches triggered by tokens count against the interval.
    pub async fn refresh(&self) -> Result<(), JwksError> {
        self.fetch().await
    }

    async fn fetch(&self) -> Result<(), JwksError> {
        let fetch = self.inner.fetches_started.fetch_add(1, Ordering::Relaxed) + 1;
        let config = &self.inner.config;
        let fail = |source| JwksError::Fetch {
            url: config.jwks_url.clone(),
            source,
        };
        let document: JwkSet = self
            .inner
            .client
            .get(&config.jwks_url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(fail)?
            .json()
            .await
            .map_err(fail)?;
        let keys = KeySet::from_jwks(&document);
        if keys.is_empty() {
            return Err(JwksError::NoKeys {
                url: config.jwks_url.clone(),
            });
        }
        let count = keys.len();
        let verifier = Verifier::new(keys, &config.issuer, &config.audience);
        let mut current = self
            .inner
            .verifier
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        // Compared and set under the write lock: one installer at a time.
        if self.inner.installed_fetch.load(Ordering::Relaxed) > fetch {
            tracing::debug!(url = %config.jwks_url, "JWKS fetched after a later fetch; not installed");
            return Ok(());
        }
        *current = Arc::new(verifier);
        self.inner.installed_fetch.store(fetch, Ordering::Relaxed);
        let changed = {
            let mut installed = self
                .inner
                .installed_document
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let changed = installed.as_ref() != Some(&document);
            *installed = Some(document);
            changed
        };
        drop(current);
        tracing::info!(keys = count, url = %config.jwks_url, changed, "JWKS loaded");
        // A key may have been withdrawn or replaced: tokens are checked anew.
        // The same document again (a scheduled reload, or a fetch for a
        // made-up key id) changes nothing, and leaves the cache be.
        if changed {
            self.inner.verified.clear();
        }
        Ok(())
    }

    /// Loads the keys at start, retrying with backoff until it succeeds or
    /// `cancel` fires; then keeps them fresh every `period`.
    pub async fn keep_loaded(self, period: Duration, cancel: tokio_util::sync::CancellationToken) {
        let mut delay = Duration::from_millis(200);
        loop {
            let wait = match self.refresh().await {
                Ok(()) => {
                    delay = Duration::from_millis(200);
                    period
                }
                Err(error) => {
                    tracing::warn!(%error, retry_in = ?delay, "JWKS not loaded");
                    let wait = delay;
                    delay = (delay * 2).min(Duration::from_secs(5));
                    wait
                }
            };
            tokio::select! {
                () = cancel.cancelled() => return,
                () = tokio::time::sleep(wait) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

    use auth::{SigningKey, jwks};
    use axum::Json;
    use axum::routing::get;

    use super::*;

    #[test]
    fn services_know_the_admin_role_tokens_carry() {
        assert_eq!(auth::ADMIN_ROLE, proto::metadata::ADMIN_ROLE);
    }

    /// A user service stand-in serving whatever JWKS the test sets, counting
    /// fetches; `None` answers 503 (the user service is down).
    #[derive(Clone, Default)]
    struct Issuer {
        document: Arc<RwLock<Option<JwkSet>>>,
        fetches: Arc<AtomicUsize>,
        /// How long each answer takes, in milliseconds.
        delay_ms: Arc<AtomicU64>,
    }

    impl Issuer {
        fn publish(&self, keys: &[&SigningKey]) {
            let set = jwks(keys.iter().map(|key| key.public_key()));
            *self.document.write().unwrap() = Some(set);
        }

        fn answer_after(&self, delay: Duration) {
            let millis = u64::try_from(delay.as_millis()).unwrap();
            self.delay_ms.store(millis, Ordering::SeqCst);
        }

        fn go_down(&self) {
            *self.document.write().unwrap() = None;
        }

        fn fetches(&self) -> usize {
            self.fetches.load(Ordering::SeqCst)
        }

        async fn serve(&self) -> String {
            let issuer = self.clone();
            let app = axum::Router::new().route(
                auth::JWKS_PATH,
                get(move || {
                    let issuer = issuer.clone();
                    async move {
                        issuer.fetches.fetch_add(1, Ordering::SeqCst);
                        // The document as it was when asked for, sent late.
                        let document = issuer.document.read().unwrap().clone();
                        let delay = issuer.delay_ms.load(Ordering::SeqCst);
                        tokio::time::sleep(Duration::from_millis(delay)).await;
                        match document {
                            Some(set) => Ok(Json(set)),
                            None => Err(http::StatusCode::SERVICE_UNAVAILABLE),
                        }
                    }
                }),
            );
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            let address = listener.local_addr().unwrap();
            tokio::spawn(async move { axum::serve(listener, app).await });
            format!("http://{address}{}", auth::JWKS_PATH)
        }
    }

    fn keys(jwks_url: String, refresh_interval: Duration) -> Keys {
        Keys::new(KeysConfig {
            jwks_url,
            issuer: auth::DEFAULT_ISSUER.into(),
            audience: auth::DEFAULT_AUDIENCE.into(),
            refresh_interval,
        })
        .unwrap()
    }

    fn bearer(key: &SigningKey) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs() as i64;
        let claims = Claims {
            sub: Uuid::now_v7(),
            roles: vec!["customer".into()],
            iat: now,
            exp: now + 300,
            iss: auth::DEFAULT_ISSUER.into(),
            aud: auth::DEFAULT_AUDIENCE.into(),
            jti: Uuid::now_v7(),
        };
        format!("Bearer {}", key.sign(&claims).unwrap())
    }

    /// An issuer publishing one key, and the gateway's keys loaded from it
    /// with a 10 s refetch interval.
    async fn loaded_with_one_key() -> (Issuer, SigningKey, Keys) {
        let issuer = Issuer::default();
        let old = SigningKey::generate().unwrap();
        issuer.publish(&[&old]);
        let keys = keys(issuer.serve().await, Duration::from_secs(10));
        keys.refresh().await.unwrap();
        (issuer, old, keys)
    }

    #[tokio::test]
    async fn a_rotated_key_is_fetched_once_and_unknown_kids_do_not_flood_the_issuer() {
        let (issuer, old, keys) = loaded_with_one_key().await;
        assert!(keys.verify(Some(&bearer(&old))).await.is_ok());

        // The issuer rotates: a token with the new kid triggers one refetch.
        let new = SigningKey::generate().unwrap();
        issuer.publish(&[&new, &old]);
        let fetches = issuer.fetches();
        assert!(keys.verify(Some(&bearer(&new))).await.is_ok());
        assert_eq!(issuer.fetches(), fetches + 1);

        // Forged kids within the interval: refused without another fetch.
        let forger = SigningKey::generate().unwrap();
        for _ in 0..20 {
            let refused = keys.verify(Some(&bearer(&forger))).await.unwrap_err();
            assert!(
                matches!(refused, TokenError::Refused(ref error) if error.is_unknown_key()),
                "{refused:?}"
            );
        }
        assert_eq!(
            issuer.fetches(),
            fetches + 1,
            "at most one fetch per interval"
        );
    }

    #[tokio::test]
    async fn a_refetch_outlives_the_request_that_started_it() {
        let (issuer, old, keys) = loaded_with_one_key().await;

        let new = SigningKey::generate().unwrap();
        issuer.publish(&[&new, &old]);
        issuer.answer_after(Duration::from_millis(300));
        let token = bearer(&new);
        let abandoned =
            tokio::time::timeout(Duration::from_millis(50), keys.verify(Some(&token))).await;
        assert!(abandoned.is_err(), "the request should give up first");

        // Within the interval nothing is fetched again: the token verifies
        // only if the abandoned request's fetch went on to load the new key.
        tokio::time::sleep(Duration::from_millis(500)).await;
        assert!(keys.verify(Some(&token)).await.is_ok());
        assert_eq!(issuer.fetches(), 2);
    }

    #[tokio::test]
    async fn a_slow_fetch_does_not_undo_a_newer_one() {
        let (issuer, _, keys) = loaded_with_one_key().await;
        issuer.answer_after(Duration::from_millis(400));
        let slow = tokio::spawn({
            let keys = keys.clone();
            async move { keys.refresh().await }
        });
        // The slow fetch has asked; then the issuer rotates, withdrawing the
        // old key, and a second fetch loads the new set first.
        while issuer.fetches() < 2 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let new = SigningKey::generate().unwrap();
        issuer.publish(&[&new]);
        issuer.answer_after(Duration::ZERO);
        keys.refresh().await.unwrap();
        slow.await.unwrap().unwrap();

        // The old set came back last, and was not installed over the new.
        let fetches = issuer.fetches();
        assert!(keys.verify(Some(&bearer(&new))).await.is_ok());
        assert_eq!(issuer.fetches(), fetches, "verified without a refetch");
    }

    #[tokio::test]
    async fn a_verified_token_is_not_checked_again_until_the_keys_change() {
        let issuer = Issuer::default();
        let key = SigningKey::generate().unwrap();
        issuer.publish(&[&key]);
        let keys = keys(issuer.serve().await, Duration::ZERO);
        keys.refresh().await.unwrap();
        let token = bearer(&key);
        let first = keys.verify(Some(&token)).await.unwrap();
        assert_eq!(
            keys.inner.verified.get(token.trim_start_matches("Bearer ")),
            Some(first.clone())
        );
        assert_eq!(keys.verify(Some(&token)).await.unwrap(), first);

        // The same keys fetched again: nothing to check anew.
        keys.refresh().await.unwrap();
        assert_eq!(
            keys.inner.verified.get(token.trim_start_matches("Bearer ")),
            Some(first.clone())
        );

        // The key is withdrawn: the cached result goes with it.
        let other = SigningKey::generate().unwrap();
        issuer.publish(&[&other]);
        keys.refresh().await.unwrap();
        let refused = keys.verify(Some(&token)).await.unwrap_err();
        assert!(matches!(refused, TokenError::Refused(_)), "{refused:?}");
    }

    #[test]
    fn an_expired_token_is_never_served_from_the_cache() {
        let cache = VerifiedTokens::default();
        let mut claims: Claims = serde_json::from_value(serde_json::json!({
            "sub": Uuid::now_v7(), "roles": [], "iat": 0, "exp": unix_now() - 1,
            "iss": auth::DEFAULT_ISSUER, "aud": auth::DEFAULT_AUDIENCE, "jti": Uuid::now_v7(),
        }))
        .unwrap();
        cache.insert("expired", &claims, cache.generation());
        assert_eq!(cache.get("expired"), None);
        claims.exp = unix_now() + 60;
        cache.insert("fresh", &claims, cache.generation());
        assert_eq!(cache.get("fresh"), Some(claims));
    }

    #[test]
    fn a_full_cache_drops_expired_tokens_then_half_of_the_rest() {
        let cache = VerifiedTokens::default();
        let claims = |exp| -> Claims {
            serde_json::from_value(serde_json::json!({
                "sub": Uuid::now_v7(), "roles": [], "iat": 0, "exp": exp,
                "iss": auth::DEFAULT_ISSUER, "aud": auth::DEFAULT_AUDIENCE, "jti": Uuid::now_v7(),
            }))
            .unwrap()
        };
        let generation = cache.generation();
        let len = || cache.entries.read().unwrap().tokens.len();
        // Expired entries cannot be inserted through `insert` alone, as
        // their claims were fresh when checked: write them in directly.
        for n in 0..VERIFIED_TOKENS / 4 {
            let mut entries = cache.entries.write().unwrap();
            entries
                .tokens
                .insert(format!("old-{n}").into(), claims(unix_now() - 1));
        }
        for n in 0..VERIFIED_TOKENS - VERIFIED_TOKENS / 4 {
            cache.insert(&format!("fresh-{n}"), &claims(unix_now() + 60), generation);
        }
        assert_eq!(len(), VERIFIED_TOKENS);

        // Full: the expired quarter goes, the fresh three quarters stay.
        cache.insert("one-more", &claims(unix_now() + 60), generation);
        assert_eq!(len(), VERIFIED_TOKENS * 3 / 4 + 1);
        assert!(cache.get("one-more").is_some());

        // Full of fresh tokens: half of them stay.
        for n in 0..VERIFIED_TOKENS {
            if len() == VERIFIED_TOKENS {
                break;
            }
            cache.insert(&format!("more-{n}"), &claims(unix_now() + 60), generation);
        }
        cache.insert("last", &claims(unix_now() + 60), generation);
        assert_eq!(len(), VERIFIED_TOKENS / 2 + 1);
        assert!(cache.get("last").is_some());
    }

    #[test]
    fn a_check_made_with_keys_changed_since_is_not_kept() {
        let cache = VerifiedTokens::default();
        let claims: Claims = serde_json::from_value(serde_json::json!({
            "sub": Uuid::now_v7(), "roles": [], "iat": 0, "exp": unix_now() + 60,
            "iss": auth::DEFAULT_ISSUER, "aud": auth::DEFAULT_AUDIENCE, "jti": Uuid::now_v7(),
        }))
        .unwrap();
        // A check starts with the old keys; the keys change before it ends.
        let before = cache.generation();
        cache.clear();
        cache.insert("checked-with-old-keys", &claims, before);
        assert_eq!(cache.get("checked-with-old-keys"), None);
        cache.insert("checked-with-new-keys", &claims, cache.generation());
        assert_eq!(cache.get("checked-with-new-keys"), Some(claims));
    }

    #[tokio::test]
    async fn cached_keys_keep_verifying_while_the_user_service_is_down() {
        let issuer = Issuer::default();
        let key = SigningKey::generate().unwrap();
        issuer.publish(&[&key]);
        let keys = keys(issuer.serve().await, Duration::ZERO);
        keys.refresh().await.unwrap();

        issuer.go_down();
        assert!(keys.refresh().await.is_err());
        assert!(keys.verify(Some(&bearer(&key))).await.is_ok());
    }

    #[tokio::test]
    async fn without_any_key_a_token_is_unverifiable_not_refused() {
        let issuer = Issuer::default();
        let keys = keys(issuer.serve().await, Duration::ZERO);
        let key = SigningKey::generate().unwrap();
        let error = keys.verify(Some(&bearer(&key))).await.unwrap_err();
        assert_eq!(error, TokenError::KeysUnavailable);
        assert_eq!(ApiError::from(error).problem().status, 503);
        // A malformed token is refused whatever keys there are.
        let refused = keys.verify(Some("Bearer not.a.token")).await.unwrap_err();
        assert_eq!(ApiError::from(refused).problem().status, 401);
    }
}
