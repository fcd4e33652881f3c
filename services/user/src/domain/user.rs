//! Accounts: who a user is, what they may change, and what they may do.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::display_name::DisplayName;
use super::email::Email;
use super::password::Password;
use platform::validation::{FieldViolation, Violations};

/// A user's id: a UUID v7, so ids sort by registration time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct UserId(Uuid);

impl UserId {
    /// A fresh id.
    pub fn generate() -> Self {
        Self(Uuid::now_v7())
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl From<Uuid> for UserId {
    fn from(id: Uuid) -> Self {
        Self(id)
    }
}

impl FromStr for UserId {
    type Err = uuid::Error;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Uuid::parse_str(text).map(Self)
    }
}

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A registered user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub id: UserId,
    pub email: Email,
    pub name: DisplayName,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What a user may do beyond shopping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    Admin,
}

impl Role {
    /// The name tokens and the `x-user-roles` header carry.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Admin => auth::ADMIN_ROLE,
        }
    }
}

/// The addresses whose owners are administrators (`ADMIN_EMAILS`).
///
/// Roles are derived from this list whenever a token is issued or a profile
/// read, never stored: removing an address from the list demotes its owner at
/// their next token refresh, with no data to migrate.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AdminEmails(HashSet<Email>);

impl AdminEmails {
    pub fn roles_of(&self, email: &Email) -> Vec<Role> {
        if self.0.contains(email) {
            vec![Role::Admin]
        } else {
            Vec::new()
        }
    }
}

impl FromStr for AdminEmails {
    type Err = String;

    /// A comma-separated list; blanks between commas are ignored, so the
    /// empty string is the empty list.
    fn from_str(text: &str) -> Result<Self, Self::Err> {
        text.split(',')
            .map(str::trim)
            .filter(|entry| !entry.is_empty())
            .map(|entry| Email::parse(entry).map_err(|error| format!("{entry:?}: {error}")))
            .collect::<Result<_, _>>()
            .map(Self)
    }
}

/// A user together with the roles they currently hold.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Account {
    pub user: User,
    pub roles: Vec<Role>,
}

impl Account {
    pub fn new(user: User, admins: &AdminEmails) -> Self {
        let roles = admins.roles_of(&user.email);
        Self { user, roles }
    }

    pub fn role_names(&self) -> Vec<String> {
        self.roles
            .iter()
            .map(|role| role.as_str().to_owned())
            .collect()
    }
}

/// Who is asking, as far as reading profiles is concerned.
///
/// Identity arrives from the gateway, which authenticates the public call and
/// forwards the user's id and roles. A call without identity comes from
/// another service inside the cluster network, which may read any profile
/// (e.g. to show a customer's name next to an order).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Caller {
    Internal,
    User { id: UserId, admin: bool },
}

impl Caller {
    /// Users see their own profile, administrators and services every one.
    pub fn may_read(&self, target: UserId) -> bool {
        match *self {
            Self::Internal => true,
            Self::User { id, admin } => admin || id == target,
        }
    }
}

/// A registration request whose every field parsed.
#[derive(Debug)]
pub struct Registration {
    pub email: Email,
    pub password: Password,
    pub name: DisplayName,
}

impl Registration {
    /// Parses all three fields and reports every invalid one at once, so a
    /// form shows all its errors after one round trip.
    pub fn parse(email: &str, password: String, name: &str) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Violations::default();
        let email = violations.check("email", Email::parse(email));
        let password = violations.check("password", Password::parse(password));
        let name = violations.check("name", DisplayName::parse(name));
        match (email, password, name) {
            (Some(email), Some(password), Some(name)) => Ok(Self {
                email,
                password,
                name,
            }),
            _ => Err(violations.into()),
        }
    }
}

/// The parts of a profile its owner may change. The e-mail address is not
/// one of them: changing it would need a confirmation round trip first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProfileChanges {
    pub name: Option<DisplayName>,
}

impl ProfileChanges {
    pub fn parse(name: Option<&str>) -> Result<Self, Vec<FieldViolation>> {
        let mut violations = Violations::default();
        let name = name.and_then(|name| violations.check("name", DisplayName::parse(name)));
        violations.finish()?;
        Ok(Self { name })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(email: &str) -> User {
        User {
            id: UserId::generate(),
            email: Email::parse(email).unwrap(),
            name: DisplayName::parse("Ann").unwrap(),
            created_at: Utc::now(),
            updated_at: Utc::now(),
        }
    }

    #[test]
    fn admin_emails_grant_the_admin_role_in_any_case() {
        let admins: AdminEmails = " Root@Example.com, ,ops@example.com,".parse().unwrap();
        assert_eq!(
            Account::new(user("root@example.com"), &admins).roles,
            [Role::Admin]
        );
        assert_eq!(
            Account::new(user("ops@example.com"), &admins).roles,
            [Role::Admin]
        );
        assert_eq!(
            Account::new(user("ROOT@example.COM"), &admins).role_names(),
            vec!["admin"]
        );
        assert!(
            Account::new(user("ann@example.com"), &admins)
                .roles
                .is_empty()
        );
        assert_eq!("".parse::<AdminEmails>(), Ok(AdminEmails::default()));
        let error = "ok@example.com,not-an-email"
            .parse::<AdminEmails>()
            .unwrap_err();
        assert!(error.contains("not-an-email"), "{error}");
    }

    #[test]
    fn users_read_their_own_profile_admins_and_services_any() {
        let (me, other) = (UserId::generate(), UserId::generate());
        let shopper = Caller::User {
            id: me,
            admin: false,
        };
        assert!(shopper.may_read(me));
        assert!(!shopper.may_read(other));
        assert!(
            Caller::User {
                id: me,
                admin: true
            }
            .may_read(other)
        );
        assert!(Caller::Internal.may_read(other));
    }

    #[test]
    fn registration_reports_every_invalid_field() {
        let fields = |violations: Vec<FieldViolation>| {
            violations
                .into_iter()
                .map(|violation| violation.field)
                .collect::<Vec<_>>()
        };
        let errors = Registration::parse("nope", "short".into(), " ").unwrap_err();
        assert_eq!(fields(errors), ["email", "password", "name"]);
        let only_name =
            Registration::parse("ann@example.com", "long enough pw".into(), "").unwrap_err();
        assert_eq!(fields(only_name), ["name"]);
        let ok = Registration::parse(" Ann@Example.com", "long enough pw".into(), " Ann ").unwrap();
        assert_eq!(ok.email.as_str(), "ann@example.com");
        assert_eq!(ok.name.as_str(), "Ann");
    }

    #[test]
    fn profile_changes_parse_only_what_was_sent() {
        assert_eq!(
            ProfileChanges::parse(None),
            Ok(ProfileChanges { name: None })
        );
        let renamed = ProfileChanges::parse(Some(" Annie ")).unwrap();
        assert_eq!(
            renamed.name.map(|name| name.as_str().to_owned()),
            Some("Annie".into())
        );
        let refused = ProfileChanges::parse(Some("")).unwrap_err();
        assert_eq!(refused.len(), 1);
        assert_eq!(refused[0].field, "name");
    }
}
