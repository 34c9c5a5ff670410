//! Argon2id password hashing, off the async runtime.
//!
//! Login must not reveal whether an email exists: an unknown email is checked against
//! a fixed dummy hash so both paths cost one Argon2 verification.

use std::sync::Arc;

use argon2::{
    Argon2, PasswordHash, PasswordVerifier,
    password_hash::{PasswordHasher as _, SaltString, rand_core::OsRng},
};

use crate::error::AppError;

/// Hashes a password (blocking; call from `spawn_blocking` or a CLI).
pub fn hash_password(password: &str) -> Result<String, AppError> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|hash| hash.to_string())
        .map_err(|e| AppError::internal(anyhow::anyhow!("argon2 hash: {e}")))
}

/// Verifies passwords with equal cost whether or not the account exists.
#[derive(Clone)]
pub struct PasswordHasher {
    dummy_hash: Arc<str>,
}

impl PasswordHasher {
    /// Computes the dummy hash once (about one hash's time).
    pub fn new() -> Result<Self, AppError> {
        Ok(Self { dummy_hash: hash_password("dummy password for unknown accounts")?.into() })
    }

    pub async fn hash(&self, password: String) -> Result<String, AppError> {
        tokio::task::spawn_blocking(move || hash_password(&password)).await.map_err(AppError::internal)?
    }

    /// `stored` is `None` for an unknown account; the answer is then always false,
    /// after the same work as a real check.
    pub async fn verify(&self, password: String, stored: Option<String>) -> Result<bool, AppError> {
        let exists = stored.is_some();
        let hash = stored.unwrap_or_else(|| self.dummy_hash.to_string());
        let matches = tokio::task::spawn_blocking(move || {
            PasswordHash::new(&hash)
                .map(|parsed| Argon2::default().verify_password(password.as_bytes(), &parsed).is_ok())
                .map_err(|e| AppError::internal(anyhow::anyhow!("stored hash unreadable: {e}")))
        })
        .await
        .map_err(AppError::internal)??;
        Ok(exists && matches)
    }
}
