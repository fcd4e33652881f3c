//! The use cases: register, log in, refresh, read and change a profile, and
//! the reads other services make.
//!
//! Each use case parses its input into domain types, applies the domain's
//! rules and drives the adapters (store, password hasher, token issuer,
//! announcement of events). The HTTP and gRPC adapters only translate to and
//! from their protocols, so both expose the same behaviour by construction.

pub mod passwords;
pub mod throttle;
pub mod tokens;

use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::db::now;

use crate::domain::{
    Account, AdminEmails, Caller, Email, Exchange, Password, ProfileChanges, RefreshToken,
    Registration, User, UserId, UserRegistered,
};
use crate::error::Error;
use crate::messaging::Announcements;
use crate::store::{Redemption, Store};
use passwords::Passwords;
use throttle::LoginThrottle;
use tokens::Tokens;

/// Most users one batch read may ask for.
pub const MAX_BATCH: usize = 100;

/// Requests refused by a rate limiter (DESIGN.md), labelled by `limiter`.
const RATE_LIMITED_TOTAL: &str = "ferrishop_rate_limited_total";

/// What a successful login or refresh hands out.
#[derive(Debug)]
pub struct TokenPair {
    pub access_token: String,
    pub expires_in: Duration,
    pub refresh_token: RefreshToken,
}

/// The user service's use cases and everything they need.
#[derive(Debug)]
pub struct App {
    store: Store,
    passwords: Passwords,
    tokens: Tokens,
    throttle: LoginThrottle,
    admins: AdminEmails,
    announcements: Announcements,
}

impl App {
    pub fn new(
        store: Store,
        passwords: Passwords,
        tokens: Tokens,
        throttle: LoginThrottle,
        admins: AdminEmails,
        announcements: Announcements,
    ) -> Self {
        Self {
            store,
            passwords,
            tokens,
            throttle,
            admins,
            announcements,
        }
    }

    /// Creates an account and announces `user.registered` in the same
    /// transaction.
    pub async fn register(
        &self,
        email: &str,
        password: String,
        name: &str,
    ) -> Result<Account, Error> {
        let registration = Registration::parse(email, password, name).map_err(Error::Validation)?;
        // A taken address costs no hash (the insert below still decides a race).
        if self.store.credentials(&registration.email).await?.is_some() {
            return Err(Error::EmailTaken);
        }
        let password_hash = self.passwords.hash(registration.password).await?;
        let now = now();
        let user = User {
            id: UserId::generate(),
            email: registration.email,
            name: registration.name,
            created_at: now,
            updated_at: now,
        };
        let announcement = self
            .announcements
            .user_registered(&UserRegistered::of(&user))?;
        self.store
            .register(&user, &password_hash, &announcement)
            .await?;
        tracing::info!(user_id = %user.id, "user registered");
        Ok(Account::new(user, &self.admins))
    }

    /// Checks credentials and starts a session (a refresh-token family).
    ///
    /// An address that cannot be parsed cannot have an account, so it is
    /// refused at once; any well-formed address is throttled, then looked up
    /// and checked with the same work whether or not it has an account.
    pub async fn login(&self, email: &str, password: String) -> Result<TokenPair, Error> {
        let email = Email::parse(email).map_err(|_| Error::InvalidCredentials)?;
        self.throttle.attempt(&email).map_err(|retry_after| {
            metrics::counter!(RATE_LIMITED_TOTAL, "limiter" => "login").increment(1);
            Error::RateLimited { retry_after }
        })?;
        let found = self.store.credentials(&email).await?;
        let (user, stored_hash) = match found {
            Some((user, hash)) => (Some(user), Some(hash)),
            None => (None, None),
        };
        let verified = self
            .passwords
            .verify(Password::presented(password), stored_hash)
            .await?;
        let user = match user {
            Some(user) if verified => user,
            _ => {
                tracing::info!("login refused: unknown address or wrong password");
                return Err(Error::InvalidCredentials);
            }
        };
        let now = now();
        let refresh = self.tokens.refresh_token(now);
        self.store
            .start_family(user.id, &refresh.token.hash(), now, refresh.expires_at)
            .await?;
        tracing::info!(user_id = %user.id, "user logged in");
        self.pair(&Account::new(user, &self.admins), refresh.token, now)
    }

    /// Exchanges a refresh token for a new pair; a token used twice revokes
    /// its whole family.
    pub async fn refresh(&self, presented: String) -> Result<TokenPair, Error> {
        let presented = RefreshToken::presented(presented);
        let now = now();
        let next = self.tokens.refresh_token(now);
        let redemption = self
            .store
            .redeem(&presented.hash(), &next.token.hash(), now, next.expires_at)
            .await?;
        match redemption {
            Redemption::Rotated { user_id } => {
                let user = self
                    .store
                    .user(user_id)
                    .await?
                    .ok_or(Error::InvalidRefreshToken)?;
                self.pair(&Account::new(user, &self.admins), next.token, now)
            }
            Redemption::Refused {
                reason: Exchange::Reuse,
                user_id,
                family_id,
            } => {
                tracing::warn!(%user_id, %family_id, "refresh token reused: session revoked");
                Err(Error::InvalidRefreshToken)
            }
            Redemption::Refused {
                reason,
                user_id,
                family_id,
            } => {
                tracing::info!(%user_id, %family_id, ?reason, "refresh refused");
                Err(Error::InvalidRefreshToken)
            }
            Redemption::Unknown => Err(Error::InvalidRefreshToken),
        }
    }

    /// The signed-in user's own account.
    pub async fn profile(&self, caller: UserId) -> Result<Account, Error> {
        let user = self.store.user(caller).await?.ok_or(Error::UserNotFound)?;
        Ok(Account::new(user, &self.admins))
    }

    /// Applies the owner's changes to their profile.
    pub async fn update_profile(
        &self,
        caller: UserId,
        changes: ProfileChanges,
    ) -> Result<Account, Error> {
        let user = match changes.name {
            Some(name) => self.store.rename(caller, &name, now()).await?,
            None => self.store.user(caller).await?,
        };
        let user = user.ok_or(Error::UserNotFound)?;
        Ok(Account::new(user, &self.admins))
    }

    /// One account, if `caller` may see it.
    pub async fn user(&self, caller: Caller, id: UserId) -> Result<Account, Error> {
        if !caller.may_read(id) {
            return Err(Error::UserNotFound);
        }
        self.profile(id).await
    }

    /// The accounts among `ids` that exist and `caller` may see, in the order
    /// of their first mention.
    pub async fn users(&self, caller: Caller, ids: Vec<UserId>) -> Result<Vec<Account>, Error> {
        if ids.len() > MAX_BATCH {
            return Err(Error::BadRequest(format!(
                "at most {MAX_BATCH} users per request, got {}",
                ids.len()
            )));
        }
        let mut wanted: Vec<UserId> = Vec::with_capacity(ids.len());
        for id in ids {
            if caller.may_read(id) && !wanted.contains(&id) {
                wanted.push(id);
            }
        }
        let mut found = self.store.users(&wanted).await?;
        found.sort_by_key(|user| wanted.iter().position(|id| *id == user.id));
        Ok(found
            .into_iter()
            .map(|user| Account::new(user, &self.admins))
            .collect())
    }

    /// The public keys, for `GET /.well-known/jwks.json`.
    pub fn jwks(&self) -> &auth::JwkSet {
        self.tokens.jwks()
    }

    /// Housekeeping every `every` until `cancel`: forgets idle throttle
    /// entries and deletes refresh tokens that expired more than `grace`
    /// ago. The first round runs one interval after start, when the schema
    /// is long migrated.
    pub async fn sweep_periodically(
        &self,
        every: Duration,
        grace: Duration,
        cancel: tokio_util::sync::CancellationToken,
    ) {
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        loop {
            tokio::select! {
                () = cancel.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.throttle.forget_idle();
            let before = now() - chrono::TimeDelta::from_std(grace).unwrap_or_default();
            match self.store.purge_expired_tokens(before).await {
                Ok(purged) => tracing::debug!(purged, "purged expired refresh tokens"),
                Err(error) => {
                    tracing::warn!(error = %error.report(), "sweep failed; next round retries")
                }
            }
        }
    }

    fn pair(
        &self,
        account: &Account,
        refresh_token: RefreshToken,
        now: DateTime<Utc>,
    ) -> Result<TokenPair, Error> {
        let access = self.tokens.access_token(account, now)?;
        Ok(TokenPair {
            access_token: access.token,
            expires_in: access.expires_in,
            refresh_token,
        })
    }
}
