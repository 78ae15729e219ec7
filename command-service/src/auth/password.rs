//! Argon2id password hashing (OWASP parameters, the crate's defaults), run off
//! the async runtime: a hash takes tens of milliseconds of CPU by design.

use argon2::Argon2;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};

use crate::error::CommandError;

pub async fn hash(password: &str) -> Result<String, CommandError> {
    let password = password.to_owned();
    tokio::task::spawn_blocking(move || {
        // 16 bytes from the thread's CSPRNG (reseeded from the OS).
        let salt = SaltString::encode_b64(&rand::random::<[u8; 16]>())
            .map_err(|error| CommandError::Internal(format!("password salt: {error}")))?;
        Argon2::default()
            .hash_password(password.as_bytes(), &salt)
            .map(|hash| hash.to_string())
            .map_err(|error| CommandError::Internal(format!("password hashing: {error}")))
    })
    .await
    .map_err(|error| CommandError::Internal(format!("password hashing task: {error}")))?
}

/// Whether `password` matches the stored PHC-format `hash`.
pub async fn verify(hash: &str, password: &str) -> Result<bool, CommandError> {
    let (hash, password) = (hash.to_owned(), password.to_owned());
    tokio::task::spawn_blocking(move || {
        let parsed = PasswordHash::new(&hash)
            .map_err(|error| CommandError::Internal(format!("stored password hash: {error}")))?;
        Ok(Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok())
    })
    .await
    .map_err(|error| CommandError::Internal(format!("password verification task: {error}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_hash_verifies_its_password_only() {
        let hash = hash("correct horse battery").await.unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify(&hash, "correct horse battery").await.unwrap());
        assert!(!verify(&hash, "wrong horse battery").await.unwrap());
    }
}
