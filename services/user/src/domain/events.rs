//! Integration events this service announces to the others.
//!
//! An integration event is a published contract, unlike the rows it is made
//! from: consumers (the payment service opens a wallet on
//! [`UserRegistered`]) depend on its shape, so it is a type of its own with a
//! stable JSON form, and fields are only ever added.

use chrono::{DateTime, Utc};
use serde::Serialize;

use super::user::User;

/// `user.registered`: a new account exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct UserRegistered {
    pub user_id: String,
    pub email: String,
    pub name: String,
    pub registered_at: DateTime<Utc>,
}

impl UserRegistered {
    /// The CloudEvents `type`.
    pub const TYPE: &'static str = "user.registered";

    pub fn of(user: &User) -> Self {
        Self {
            user_id: user.id.to_string(),
            email: user.email.as_str().to_owned(),
            name: user.name.as_str().to_owned(),
            registered_at: user.created_at,
        }
    }
}
