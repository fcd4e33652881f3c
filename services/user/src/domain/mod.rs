//! The user service's rules: what a valid e-mail address, display name and
//! password are, who is an administrator, and when a refresh token may be
//! exchanged. Pure types and functions, no I/O, so every rule is tested
//! without a database or a server.
//!
//! Input is *parsed*, not validated: [`Email::parse`] either returns an
//! `Email`, which is then known to be well-formed and canonical (lower case)
//! for the rest of its life, or says what is wrong. Code that holds an
//! `Email` never checks it again, and code that has not parsed one cannot
//! pretend it has.

pub mod display_name;
pub mod email;
pub mod events;
pub mod password;
pub mod refresh_token;
pub mod user;

pub use display_name::DisplayName;
pub use email::Email;
pub use events::UserRegistered;
pub use password::Password;
pub use refresh_token::{Exchange, RefreshToken, RefreshTokenState, TokenHash};
pub use user::{Account, AdminEmails, Caller, ProfileChanges, Registration, User, UserId};
