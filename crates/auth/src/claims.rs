//! What an access token asserts about its bearer.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// The claims of a Ferrishop access token.
///
/// Times are seconds since the Unix epoch, as RFC 7519 prescribes. Every field
/// is required: a token missing one is not a Ferrishop token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user's id.
    pub sub: Uuid,
    /// Role names, e.g. [`ADMIN_ROLE`](crate::ADMIN_ROLE); empty for a shopper.
    pub roles: Vec<String>,
    /// When the token was issued.
    pub iat: i64,
    /// When the token stops being valid.
    pub exp: i64,
    /// Who issued the token.
    pub iss: String,
    /// Who the token is meant for.
    pub aud: String,
    /// Unique token id, for audit logs and deny lists.
    pub jti: Uuid,
}

impl Claims {
    /// Whether the bearer has `role`.
    pub fn has_role(&self, role: &str) -> bool {
        self.roles.iter().any(|held| held == role)
    }

    /// Whether the bearer is an administrator.
    pub fn is_admin(&self) -> bool {
        self.has_role(crate::ADMIN_ROLE)
    }

    /// The roles as the `x-user-roles` header carries them: comma-separated.
    pub fn roles_header(&self) -> String {
        self.roles.join(",")
    }
}
