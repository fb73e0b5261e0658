//! Password hashing: Argon2id for every new hash, bcrypt only to verify
//! hashes imported from passlib / FastAPI apps, which are replaced at the
//! user's next successful login.
//!
//! Hashing costs ~20 MiB and tens of milliseconds of one core, on purpose.
//! So it runs on tokio's blocking pool behind a semaphore: a flood of
//! logins queues there instead of starving the threads that serve
//! everything else.

use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use portcullis_core::Secret;
use std::sync::Arc;
use tokio::sync::Semaphore;

/// Longest password accepted, in bytes. Far above any passphrase (ASVS
/// asks that 64 characters work), and refused before hashing so a
/// megabyte "password" costs nothing.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Shortest password `users add` / `passwd` accept (ASVS 5.0 6.2.1).
pub const MIN_PASSWORD_CHARS: usize = 8;

/// bcrypt reads only 72 bytes; a longer password would be checked against
/// its prefix, so it is refused instead (ASVS 5.0 6.2.8: no truncation).
const BCRYPT_MAX_BYTES: usize = 72;

/// Why a password could not be hashed or checked.
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    /// Longer than [`MAX_PASSWORD_BYTES`].
    #[error("password longer than {MAX_PASSWORD_BYTES} bytes")]
    TooLong,
    /// Shorter than [`MIN_PASSWORD_CHARS`].
    #[error("password shorter than {MIN_PASSWORD_CHARS} characters")]
    TooShort,
    /// The stored hash is of no algorithm we verify.
    #[error("unsupported password hash (expected $argon2id$ or bcrypt $2a$/$2b$/$2y$)")]
    UnsupportedHash,
    /// The hashing task failed.
    #[error("password hashing failed")]
    Hashing,
}

/// The outcome of a check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Checked {
    /// The password matches.
    pub ok: bool,
    /// The hash should be replaced (bcrypt, or weaker Argon2 parameters).
    pub needs_rehash: bool,
}

/// Hashes and verifies passwords on a bounded pool.
#[derive(Clone)]
pub struct Passwords {
    permits: Arc<Semaphore>,
    params: Params,
    // Checked against when the user does not exist, so an unknown name
    // costs the same time as a wrong password.
    dummy: Arc<String>,
}

impl std::fmt::Debug for Passwords {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Passwords")
            .field("permits", &self.permits.available_permits())
            .finish_non_exhaustive()
    }
}

fn argon2(params: &Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone())
}

/// The OWASP minimum: m = 19456 KiB, t = 2, p = 1. (`Params::DEFAULT`;
/// the unit of m is KiB.)
pub fn default_params() -> Params {
    Params::default()
}

/// Checks a password's length before anything else touches it.
pub fn check_length(pw: &str, new: bool) -> Result<(), PasswordError> {
    if pw.len() > MAX_PASSWORD_BYTES {
        return Err(PasswordError::TooLong);
    }
    if new && pw.chars().count() < MIN_PASSWORD_CHARS {
        return Err(PasswordError::TooShort);
    }
    Ok(())
}

/// Whether a stored hash is one we can verify: an Argon2id PHC string or
/// a bcrypt modular-crypt hash. Used to check imports before they land.
pub fn is_supported_hash(h: &str) -> bool {
    if h.starts_with("$argon2id$") {
        PasswordHash::new(h).is_ok()
    } else if h.starts_with("$2a$") || h.starts_with("$2b$") || h.starts_with("$2y$") {
        h.len() == 60
    } else {
        false
    }
}

fn hash_blocking(params: &Params, pw: &str) -> Result<String, PasswordError> {
    let salt = SaltString::generate(&mut OsRng);
    argon2(params)
        .hash_password(pw.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|_| PasswordError::Hashing)
}

fn verify_blocking(params: &Params, stored: &str, pw: &str) -> Result<Checked, PasswordError> {
    if stored.starts_with("$2") {
        if pw.len() > BCRYPT_MAX_BYTES {
            return Ok(Checked {
                ok: false,
                needs_rehash: false,
            });
        }
        let ok = bcrypt::verify(pw, stored).map_err(|_| PasswordError::UnsupportedHash)?;
        return Ok(Checked {
            ok,
            needs_rehash: true,
        });
    }
    let parsed = PasswordHash::new(stored).map_err(|_| PasswordError::UnsupportedHash)?;
    if parsed.algorithm.as_str() != "argon2id" {
        return Err(PasswordError::UnsupportedHash);
    }
    let ok = argon2(params)
        .verify_password(pw.as_bytes(), &parsed)
        .is_ok();
    let weaker = Params::try_from(&parsed)
        .is_ok_and(|p| p.m_cost() < params.m_cost() || p.t_cost() < params.t_cost());
    Ok(Checked {
        ok,
        needs_rehash: ok && weaker,
    })
}

impl Passwords {
    /// A hasher running at most `parallel` hashes at once.
    pub fn new(params: Params, parallel: usize) -> Result<Passwords, PasswordError> {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).map_err(|_| PasswordError::Hashing)?;
        let mut text = String::new();
        portcullis_core::base62::encode_fixed(&random, 43, &mut text);
        let dummy = hash_blocking(&params, &text)?;
        Ok(Passwords {
            permits: Arc::new(Semaphore::new(parallel.max(1))),
            params,
            dummy: Arc::new(dummy),
        })
    }

    /// Hashes a new password with Argon2id.
    pub async fn hash(&self, pw: &Secret<String>) -> Result<String, PasswordError> {
        check_length(pw.expose(), true)?;
        let params = self.params.clone();
        let pw = pw.clone();
        self.run(move || hash_blocking(&params, pw.expose())).await
    }

    /// Checks a password against a stored hash; `None` checks against a
    /// dummy hash and always fails (unknown users take as long as known
    /// ones).
    pub async fn verify(
        &self,
        stored: Option<&str>,
        pw: &Secret<String>,
    ) -> Result<Checked, PasswordError> {
        let fail = Checked {
            ok: false,
            needs_rehash: false,
        };
        let params = self.params.clone();
        let too_long = check_length(pw.expose(), false).is_err();
        let (stored, known) = match stored {
            Some(s) if !too_long => (s.to_owned(), true),
            _ => (self.dummy.as_ref().clone(), false),
        };
        // An over-long password still pays for one dummy check, so its
        // answer takes as long as any other failure.
        let pw = if too_long {
            Secret::new(String::new())
        } else {
            pw.clone()
        };
        let r = self
            .run(move || verify_blocking(&params, &stored, pw.expose()))
            .await?;
        Ok(if known { r } else { fail })
    }

    async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, PasswordError> + Send + 'static,
    ) -> Result<T, PasswordError> {
        let _permit = self
            .permits
            .acquire()
            .await
            .map_err(|_| PasswordError::Hashing)?;
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|_| PasswordError::Hashing)?
    }
}
