//! REST adapter, called by the gateway.
//!
//! The routes are the public API's own paths (`/api/v1/users`,
//! `/api/v1/auth/*`, `/api/v1/users/me`), so the gateway forwards them 1:1,
//! plus `GET /.well-known/jwks.json` from which the gateway learns the keys
//! it verifies access tokens with.
//!
//! # Caller identity
//!
//! `/api/v1/users/me` does not read the access token: the gateway has already
//! verified it and passes the user's id in the `x-user-id` header, after
//! removing any such header the client sent. The service trusts that header
//! because it is reachable only from the gateway and the other services on the
//! internal network, never from clients directly; deployments must keep it
//! that way.
//!
//! Handlers are thin: extract, call one use case, shape the answer. Every
//! failure is an [`Error`], turned into problem+json in exactly one place,
//! its `IntoResponse` implementation at the end of this file.

use std::sync::Arc;

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, Utc};
use platform::problem::{JsonBody, Problem, retry_after_secs};
use proto::metadata::VouchedUser;
use serde::{Deserialize, Serialize};

use crate::app::{App, TokenPair};
use crate::domain::{Account, ProfileChanges, UserId};
use crate::error::Error;

/// The routes of the REST API.
pub fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/api/v1/users", post(register))
        .route("/api/v1/users/me", get(me).patch(update_me))
        .route("/api/v1/auth/login", post(login))
        .route("/api/v1/auth/refresh", post(refresh))
        .route(auth::JWKS_PATH, get(jwks))
        .with_state(app)
}

// ---------------------------------------------------------------- bodies

#[derive(Deserialize)]
struct RegisterRequest {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    name: String,
}

#[derive(Deserialize)]
struct LoginRequest {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
}

#[derive(Deserialize)]
struct RefreshRequest {
    #[serde(default)]
    refresh_token: String,
}

/// Unknown members are refused, so `{"email": ...}` is a 422 rather than a
/// change silently not made.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ProfilePatch {
    name: Option<String>,
}

#[derive(Serialize)]
struct UserResponse {
    id: String,
    email: String,
    name: String,
    roles: Vec<String>,
    created_at: DateTime<Utc>,
}

impl From<Account> for UserResponse {
    fn from(account: Account) -> Self {
        Self {
            roles: account.role_names(),
            id: account.user.id.to_string(),
            email: account.user.email.into_string(),
            name: account.user.name.as_str().to_owned(),
            created_at: account.user.created_at,
        }
    }
}

#[derive(Serialize)]
struct TokenResponse {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
    refresh_token: String,
}

impl IntoResponse for TokenPair {
    /// RFC 6749 §5.1: token responses must not be cached.
    fn into_response(self) -> Response {
        let body = TokenResponse {
            access_token: self.access_token,
            token_type: "Bearer",
            expires_in: self.expires_in.as_secs(),
            refresh_token: self.refresh_token.expose_secret().to_owned(),
        };
        ([(header::CACHE_CONTROL, "no-store")], Json(body)).into_response()
    }
}

// ---------------------------------------------------------------- handlers

async fn register(
    State(app): State<Arc<App>>,
    JsonBody(request): JsonBody<RegisterRequest>,
) -> Result<(StatusCode, Json<UserResponse>), Error> {
    let account = app
        .register(&request.email, request.password, &request.name)
        .await?;
    Ok((StatusCode::CREATED, Json(account.into())))
}

async fn login(
    State(app): State<Arc<App>>,
    JsonBody(request): JsonBody<LoginRequest>,
) -> Result<TokenPair, Error> {
    app.login(&request.email, request.password).await
}

async fn refresh(
    State(app): State<Arc<App>>,
    JsonBody(request): JsonBody<RefreshRequest>,
) -> Result<TokenPair, Error> {
    app.refresh(request.refresh_token).await
}

async fn me(State(app): State<Arc<App>>, caller: CallerId) -> Result<Json<UserResponse>, Error> {
    Ok(Json(app.profile(caller.0).await?.into()))
}

async fn update_me(
    State(app): State<Arc<App>>,
    caller: CallerId,
    JsonBody(patch): JsonBody<ProfilePatch>,
) -> Result<Json<UserResponse>, Error> {
    let changes = ProfileChanges::parse(patch.name.as_deref()).map_err(Error::Validation)?;
    Ok(Json(app.update_profile(caller.0, changes).await?.into()))
}

/// Public keys change rarely and verifiers refetch on an unknown `kid`, so
/// a few minutes of caching is safe.
async fn jwks(State(app): State<Arc<App>>) -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(app.jwks().clone()),
    )
}

// ---------------------------------------------------------------- extractors

/// The signed-in user, from the gateway's `x-user-id` header; recorded on
/// the request span so every log line of the request names the user.
struct CallerId(UserId);

impl<S: Send + Sync> FromRequestParts<S> for CallerId {
    type Rejection = Error;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Error> {
        let id = VouchedUser::from_headers(&parts.headers)
            .ok()
            .flatten()
            .map(|user| UserId::from(user.id))
            .ok_or(Error::Unauthenticated)?;
        tracing::Span::current().record("user_id", tracing::field::display(id));
        Ok(CallerId(id))
    }
}

// ---------------------------------------------------------------- errors

impl IntoResponse for Error {
    fn into_response(self) -> Response {
        self.log();
        let status = match &self {
            Self::Validation(violations) => {
                return Problem::validation(platform::validation::by_field(violations))
                    .into_response();
            }
            Self::BadRequest(_) => StatusCode::BAD_REQUEST,
            Self::EmailTaken => StatusCode::CONFLICT,
            Self::InvalidCredentials | Self::InvalidRefreshToken | Self::Unauthenticated => {
                StatusCode::UNAUTHORIZED
            }
            Self::UserNotFound => StatusCode::NOT_FOUND,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let mut response = Problem::new(status, self.code(), self.to_string()).into_response();
        let headers = response.headers_mut();
        match self {
            Self::RateLimited { retry_after } => {
                headers.insert(
                    header::RETRY_AFTER,
                    HeaderValue::from(retry_after_secs(retry_after)),
                );
            }
            // RFC 9110: a 401 names the scheme that would be accepted.
            Self::InvalidCredentials | Self::InvalidRefreshToken | Self::Unauthenticated => {
                headers.insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
            }
            _ => {}
        }
        response
    }
}
