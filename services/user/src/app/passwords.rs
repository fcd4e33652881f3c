//! Password hashing with Argon2id.
//!
//! Parameters are OWASP's first recommended Argon2id configuration
//! (Password Storage Cheat Sheet): 19 MiB of memory, 2 passes, 1 lane. Hashes
//! are stored as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`),
//! which carry their own parameters, so raising the cost later applies to new
//! hashes while old ones keep verifying.
//!
//! A hash costs tens of milliseconds of CPU and 19 MiB of memory. It runs on
//! tokio's blocking pool, never on a runtime worker, and a semaphore lets only
//! as many run at once as there are cores: a burst of logins queues instead
//! of stalling other requests or exhausting memory.
//!
//! Login must not reveal whether an address has an account. For an unknown
//! address the presented password is checked against a dummy hash made at
//! start with the same parameters, so it takes as long as a wrong password;
//! the final comparison is constant-time (`password_hash::Output`'s
//! equality).

use std::sync::Arc;

use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use tokio::sync::Semaphore;

use crate::domain::Password;
use crate::error::Error;

/// Memory cost in KiB (19 MiB).
pub const MEMORY_KIB: u32 = 19 * 1024;
/// Passes over the memory.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const PARALLELISM: u32 = 1;
/// Salt length in bytes (the PHC recommendation).
const SALT_BYTES: usize = 16;

/// Hashes and verifies passwords off the async runtime.
#[derive(Clone)]
pub struct Passwords {
    hasher: Argon2<'static>,
    permits: Arc<Semaphore>,
    dummy_hash: Arc<str>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("available_permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

impl Passwords {
    /// Sets up the hasher and computes the dummy hash.
    pub async fn new() -> Result<Self, Error> {
        let params = Params::new(MEMORY_KIB, ITERATIONS, PARALLELISM, None)
            .map_err(|error| Error::Internal(error.to_string().into()))?;
        let hasher = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let concurrency = std::thread::available_parallelism().map_or(1, usize::from);
        let permits = Arc::new(Semaphore::new(concurrency));
        let decoy = Password::presented(hex(&rand::random::<[u8; 32]>()));
        let dummy_hash = {
            let hasher = hasher.clone();
            blocking(&permits, move || phc_hash(&hasher, &decoy)).await?
        };
        Ok(Self {
            hasher,
            permits,
            dummy_hash: Arc::from(dummy_hash),
        })
    }

    /// The PHC string of `password` with a fresh random salt.
    pub async fn hash(&self, password: Password) -> Result<String, Error> {
        let hasher = self.hasher.clone();
        blocking(&self.permits, move || phc_hash(&hasher, &password)).await
    }

    /// Whether `password` matches `stored`, the account's PHC string; `None`
    /// (no such account) does the same work and answers `false`.
    pub async fn verify(&self, password: Password, stored: Option<String>) -> Result<bool, Error> {
        let hasher = self.hasher.clone();
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        blocking(&self.permits, move || {
            let hash = PasswordHash::new(&stored).map_err(|error| {
                Error::Internal(format!("stored password hash: {error}").into())
            })?;
            let matches = hasher
                .verify_password(password.expose_secret().as_bytes(), &hash)
                .is_ok();
            Ok(known && matches)
        })
        .await
    }
}

/// Runs CPU-heavy `work` on the blocking pool, at most one per permit.
///
/// The permit goes with the work, not with the caller: a request dropped
/// mid-hash (its client hung up) leaves the hash running, and a permit
/// freed then would let clients that hang up start hash after hash.
async fn blocking<T: Send + 'static>(
    permits: &Arc<Semaphore>,
    work: impl FnOnce() -> Result<T, Error> + Send + 'static,
) -> Result<T, Error> {
    let permit = Arc::clone(permits)
        .acquire_owned()
        .await
        .map_err(Error::internal)?;
    tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work()
    })
    .await
    .map_err(Error::internal)?
}

fn phc_hash(hasher: &Argon2<'_>, password: &Password) -> Result<String, Error> {
    let salt = SaltString::encode_b64(&rand::random::<[u8; SALT_BYTES]>())
        .map_err(|error| Error::Internal(error.to_string().into()))?;
    hasher
        .hash_password(password.expose_secret().as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|error| Error::Internal(error.to_string().into()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hashes_are_argon2id_phc_strings_that_verify() {
        let passwords = Passwords::new().await.unwrap();
        let hash = passwords
            .hash(Password::parse("correct horse battery".into()).unwrap())
            .await
            .unwrap();
        assert!(
            hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"),
            "{hash}"
        );
        let check = |candidate: &str, stored: Option<String>| {
            passwords.verify(Password::presented(candidate.to_owned()), stored)
        };
        assert!(
            check("correct horse battery", Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(
            !check("correct horse battery!", Some(hash.clone()))
                .await
                .unwrap()
        );
        assert!(!check("correct horse battery", None).await.unwrap());

        let again = passwords
            .hash(Password::parse("correct horse battery".into()).unwrap())
            .await
            .unwrap();
        assert_ne!(hash, again, "every hash has its own salt");
    }

    #[tokio::test]
    async fn a_hash_whose_caller_gave_up_keeps_its_permit_until_it_ends() {
        let permits = Arc::new(Semaphore::new(1));
        let (started, has_started) = std::sync::mpsc::channel();
        let (finish, may_finish) = std::sync::mpsc::channel::<()>();
        let caller = tokio::spawn({
            let permits = Arc::clone(&permits);
            async move {
                blocking(&permits, move || {
                    let _ = started.send(());
                    let _ = may_finish.recv();
                    Ok(())
                })
                .await
            }
        });
        tokio::task::spawn_blocking(move || has_started.recv())
            .await
            .unwrap()
            .unwrap();
        caller.abort();
        assert!(caller.await.unwrap_err().is_cancelled());
        assert_eq!(permits.available_permits(), 0, "the hash still runs");

        finish.send(()).unwrap();
        let freed =
            tokio::time::timeout(std::time::Duration::from_secs(5), permits.acquire()).await;
        assert!(freed.is_ok(), "the permit returns when the hash ends");
    }
}
