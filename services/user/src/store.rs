//! Postgres adapter: accounts, refresh-token families, and the outbox row
//! that announces a registration.
//!
//! Queries are checked at run time (`sqlx::query` with `FromRow`), so the
//! service builds without a database. Rows are parsed back into domain types
//! on the way out: a row that no longer parses (an address that was valid
//! under an older rule, say) is an internal error rather than a value that
//! silently skips the rules.

use chrono::{DateTime, Utc};
use eventstore::{OutboxError, OutboxMessage};
use sqlx::PgPool;
use uuid::Uuid;

use crate::domain::{DisplayName, Email, Exchange, RefreshTokenState, TokenHash, User, UserId};
use crate::error::Error;

/// Name of the unique index on `users.email`.
const EMAIL_UNIQUE: &str = "users_email_key";

/// The user service's tables.
#[derive(Debug, Clone)]
pub struct Store {
    pool: PgPool,
}

#[derive(sqlx::FromRow)]
struct UserRow {
    id: Uuid,
    email: String,
    name: String,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

impl TryFrom<UserRow> for User {
    type Error = Error;

    fn try_from(row: UserRow) -> Result<Self, Error> {
        let corrupt = |field: &str, reason: String| {
            Error::Internal(format!("user {} has an invalid {field}: {reason}", row.id).into())
        };
        Ok(Self {
            id: UserId::from(row.id),
            email: Email::parse(&row.email).map_err(|e| corrupt("email", e.to_string()))?,
            name: DisplayName::parse(&row.name).map_err(|e| corrupt("name", e.to_string()))?,
            created_at: row.created_at,
            updated_at: row.updated_at,
        })
    }
}

#[derive(sqlx::FromRow)]
struct CredentialsRow {
    #[sqlx(flatten)]
    user: UserRow,
    password_hash: String,
}

#[derive(sqlx::FromRow)]
struct PresentedTokenRow {
    id: Uuid,
    family_id: Uuid,
    user_id: Uuid,
    expires_at: DateTime<Utc>,
    used: bool,
    revoked: bool,
}

/// What became of a presented refresh token.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Redemption {
    /// Spent; its family's next token was stored.
    Rotated { user_id: UserId },
    /// Refused for the reason given (after revoking the family on reuse).
    Refused {
        reason: Exchange,
        user_id: UserId,
        family_id: Uuid,
    },
    /// No such token.
    Unknown,
}

impl Store {
    pub fn new(pool: PgPool) -> Self {
        Self { pool }
    }

    /// Stores a new user and, in the same transaction, the outbox message
    /// announcing it: the message exists if and only if the user does.
    pub async fn register(
        &self,
        user: &User,
        password_hash: &str,
        announcement: &OutboxMessage,
    ) -> Result<(), Error> {
        let mut transaction = self.pool.begin().await?;
        let inserted = sqlx::query(
            "INSERT INTO users (id, email, name, password_hash, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, $6)",
        )
        .bind(user.id.as_uuid())
        .bind(user.email.as_str())
        .bind(user.name.as_str())
        .bind(password_hash)
        .bind(user.created_at)
        .bind(user.updated_at)
        .execute(&mut *transaction)
        .await;
        match inserted {
            Err(sqlx::Error::Database(error)) if error.constraint() == Some(EMAIL_UNIQUE) => {
                return Err(Error::EmailTaken);
            }
            other => other?,
        };
        eventstore::enqueue(&mut transaction, announcement)
            .await
            .map_err(|error| match error {
                OutboxError::Database(error) => Error::from(error),
                other => Error::internal(other),
            })?;
        transaction.commit().await?;
        Ok(())
    }

    /// The user with `email` and their password hash.
    pub async fn credentials(&self, email: &Email) -> Result<Option<(User, String)>, Error> {
        let row: Option<CredentialsRow> = sqlx::query_as(
            "SELECT id, email, name, created_at, updated_at, password_hash \
               FROM users WHERE email = $1",
        )
        .bind(email.as_str())
        .fetch_optional(&self.pool)
        .await?;
        row.map(|row| Ok((User::try_from(row.user)?, row.password_hash)))
            .transpose()
    }

    pub async fn user(&self, id: UserId) -> Result<Option<User>, Error> {
        let row: Option<UserRow> = sqlx::query_as(
            "SELECT id, email, name, created_at, updated_at FROM users WHERE id = $1",
        )
        .bind(id.as_uuid())
        .fetch_optional(&self.pool)
        .await?;
        row.map(User::try_from).transpose()
    }

    /// The users among `ids` that exist, in no particular order.
    pub async fn users(&self, ids: &[UserId]) -> Result<Vec<User>, Error> {
        let ids: Vec<Uuid> = ids.iter().map(UserId::as_uuid).collect();
        let rows: Vec<UserRow> = sqlx::query_as(
            "SELECT id, email, name, created_at, updated_at FROM users WHERE id = ANY($1)",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        rows.into_iter().map(User::try_from).collect()
    }

    /// Renames a user; `None` when there is no such user.
    pub async fn rename(
        &self,
        id: UserId,
        name: &DisplayName,
        now: DateTime<Utc>,
    ) -> Result<Option<User>, Error> {
        let row: Option<UserRow> = sqlx::query_as(
            "UPDATE users SET name = $2, updated_at = $3 WHERE id = $1 \
             RETURNING id, email, name, created_at, updated_at",
        )
        .bind(id.as_uuid())
        .bind(name.as_str())
        .bind(now)
        .fetch_optional(&self.pool)
        .await?;
        row.map(User::try_from).transpose()
    }

    /// Starts a token family (a login) with its first token.
    pub async fn start_family(
        &self,
        user_id: UserId,
        token: &TokenHash,
        issued_at: DateTime<Utc>,
        expires_at: DateTime<Utc>,
    ) -> Result<(), Error> {
        let family_id = Uuid::now_v7();
        let mut transaction = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO refresh_token_families (id, user_id, created_at) VALUES ($1, $2, $3)",
        )
        .bind(family_id)
        .bind(user_id.as_uuid())
        .bind(issued_at)
        .execute(&mut *transaction)
        .await?;
        insert_token(&mut transaction, family_id, token, issued_at, expires_at).await?;
        transaction.commit().await?;
        Ok(())
    }

    /// Exchanges the token hashed as `presented` for the one hashed as
    /// `next`, under the domain's rule ([`RefreshTokenState::exchange`]).
    ///
    /// The family row is locked first, so every exchange in a family runs
    /// one at a time: a reuse that revokes the family cannot interleave
    /// with a rotation that adds to it.
    pub async fn redeem(
        &self,
        presented: &TokenHash,
        next: &TokenHash,
        now: DateTime<Utc>,
        next_expires_at: DateTime<Utc>,
    ) -> Result<Redemption, Error> {
        let mut transaction = self.pool.begin().await?;
        let family: Option<Uuid> =
            sqlx::query_scalar("SELECT family_id FROM refresh_tokens WHERE token_hash = $1")
                .bind(presented.as_bytes())
                .fetch_optional(&mut *transaction)
                .await?;
        let Some(family_id) = family else {
            return Ok(Redemption::Unknown);
        };
        sqlx::query("SELECT 1 FROM refresh_token_families WHERE id = $1 FOR UPDATE")
            .bind(family_id)
            .execute(&mut *transaction)
            .await?;
        let row: Option<PresentedTokenRow> = sqlx::query_as(
            "SELECT t.id, t.family_id, f.user_id, t.expires_at, \
                    t.used_at IS NOT NULL AS used, f.revoked_at IS NOT NULL AS revoked \
               FROM refresh_tokens t JOIN refresh_token_families f ON f.id = t.family_id \
              WHERE t.token_hash = $1",
        )
        .bind(presented.as_bytes())
        .fetch_optional(&mut *transaction)
        .await?;
        // Purged (long expired) between the first look and the lock.
        let Some(row) = row else {
            return Ok(Redemption::Unknown);
        };
        let user_id = UserId::from(row.user_id);
        let state = RefreshTokenState {
            expires_at: row.expires_at,
            used: row.used,
            revoked: row.revoked,
        };
        let reason = state.exchange(now);
        match reason {
            Exchange::Rotate => {
                sqlx::query("UPDATE refresh_tokens SET used_at = $2 WHERE id = $1")
                    .bind(row.id)
                    .bind(now)
                    .execute(&mut *transaction)
                    .await?;
                insert_token(&mut transaction, row.family_id, next, now, next_expires_at).await?;
                transaction.commit().await?;
                return Ok(Redemption::Rotated { user_id });
            }
            Exchange::Reuse => {
                sqlx::query("UPDATE refresh_token_families SET revoked_at = $2 WHERE id = $1")
                    .bind(row.family_id)
                    .bind(now)
                    .execute(&mut *transaction)
                    .await?;
                transaction.commit().await?;
            }
            Exchange::Expired | Exchange::Revoked => transaction.rollback().await?,
        }
        Ok(Redemption::Refused {
            reason,
            user_id,
            family_id: row.family_id,
        })
    }

    /// Deletes tokens that expired before `before`, then families left
    /// without tokens; returns how many tokens went.
    pub async fn purge_expired_tokens(&self, before: DateTime<Utc>) -> Result<u64, Error> {
        let mut transaction = self.pool.begin().await?;
        let mut families: Vec<Uuid> = sqlx::query_scalar(
            "DELETE FROM refresh_tokens WHERE expires_at < $1 RETURNING family_id",
        )
        .bind(before)
        .fetch_all(&mut *transaction)
        .await?;
        let tokens = families.len() as u64;
        families.sort_unstable();
        families.dedup();
        // Only a family that just lost tokens can have been emptied: looked
        // up by key, not by scanning every family at every sweep.
        sqlx::query(
            "DELETE FROM refresh_token_families f \
              WHERE f.id = ANY($1) \
                AND NOT EXISTS (SELECT 1 FROM refresh_tokens t WHERE t.family_id = f.id)",
        )
        .bind(&families)
        .execute(&mut *transaction)
        .await?;
        transaction.commit().await?;
        Ok(tokens)
    }
}

async fn insert_token(
    connection: &mut sqlx::PgConnection,
    family_id: Uuid,
    token: &TokenHash,
    issued_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<(), Error> {
    sqlx::query(
        "INSERT INTO refresh_tokens (id, family_id, token_hash, issued_at, expires_at) \
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(Uuid::now_v7())
    .bind(family_id)
    .bind(token.as_bytes())
    .bind(issued_at)
    .bind(expires_at)
    .execute(connection)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use chrono::TimeDelta;
    use testkit::postgres::{TestDatabase, fresh_database};

    use super::*;
    use crate::domain::RefreshToken;

    async fn migrated() -> (Store, TestDatabase) {
        let database = fresh_database().await;
        eventstore::migrate(&database.pool).await.unwrap();
        sqlx::migrate!("../../migrations/user")
            .run(&database.pool)
            .await
            .unwrap();
        (Store::new(database.pool.clone()), database)
    }

    async fn user(store: &Store) -> User {
        let now = Utc::now();
        let user = User {
            id: UserId::generate(),
            email: Email::parse("ann@example.com").unwrap(),
            name: DisplayName::parse("Ann").unwrap(),
            created_at: now,
            updated_at: now,
        };
        let announcement = OutboxMessage::new("topic", user.id.to_string(), Vec::new());
        store
            .register(
                &user,
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
                &announcement,
            )
            .await
            .unwrap();
        user
    }

    fn hash(byte: u8) -> TokenHash {
        RefreshToken::from_random([byte; 32]).hash()
    }

    #[tokio::test]
    async fn purging_drops_long_expired_tokens_and_their_empty_families() {
        let (store, database) = migrated().await;
        let user = user(&store).await;
        let now = Utc::now();
        let (old, live) = (hash(1), hash(2));
        store
            .start_family(
                user.id,
                &old,
                now - TimeDelta::days(40),
                now - TimeDelta::days(10),
            )
            .await
            .unwrap();
        store
            .start_family(user.id, &live, now, now + TimeDelta::days(30))
            .await
            .unwrap();

        let purged = store
            .purge_expired_tokens(now - TimeDelta::days(7))
            .await
            .unwrap();
        assert_eq!(purged, 1);
        let families: i64 = sqlx::query_scalar("SELECT count(*) FROM refresh_token_families")
            .fetch_one(&database.pool)
            .await
            .unwrap();
        assert_eq!(families, 1);
        let next = now + TimeDelta::days(30);
        assert_eq!(
            store.redeem(&old, &hash(3), now, next).await.unwrap(),
            Redemption::Unknown
        );
        assert_eq!(
            store.redeem(&live, &hash(4), now, next).await.unwrap(),
            Redemption::Rotated { user_id: user.id }
        );
    }

    #[tokio::test]
    async fn an_expired_token_is_refused_without_revoking_its_family() {
        let (store, _database) = migrated().await;
        let user = user(&store).await;
        let now = Utc::now();
        store
            .start_family(
                user.id,
                &hash(1),
                now - TimeDelta::days(31),
                now - TimeDelta::days(1),
            )
            .await
            .unwrap();
        let outcome = store
            .redeem(&hash(1), &hash(2), now, now + TimeDelta::days(30))
            .await
            .unwrap();
        assert!(
            matches!(
                outcome,
                Redemption::Refused {
                    reason: Exchange::Expired,
                    ..
                }
            ),
            "{outcome:?}"
        );
        // Nothing was added to the family, nothing revoked.
        assert_eq!(
            store.redeem(&hash(2), &hash(3), now, now).await.unwrap(),
            Redemption::Unknown
        );
    }

    #[tokio::test]
    async fn a_second_registration_of_an_address_is_email_taken_and_leaves_no_outbox_row() {
        let (store, database) = migrated().await;
        let first = user(&store).await;
        let mut second = first.clone();
        second.id = UserId::generate();
        let announcement = OutboxMessage::new("topic", second.id.to_string(), Vec::new());
        let outcome = store
            .register(
                &second,
                "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA",
                &announcement,
            )
            .await;
        assert!(matches!(outcome, Err(Error::EmailTaken)), "{outcome:?}");
        let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
            .fetch_one(&database.pool)
            .await
            .unwrap();
        assert_eq!(rows, 1, "only the first registration was announced");
    }
}
