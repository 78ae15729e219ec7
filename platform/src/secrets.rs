//! Secrets from the environment, checked before a service starts. A key an
//! attacker can guess (a template's placeholder, or one too short to resist a
//! brute-force search) is refused, never used: a token forged with
//! "dev-only-jwt-secret-change-me" would read and write as anyone.

use std::collections::HashSet;

/// 256 bits: an HS256 key shorter than its hash is weaker than the algorithm.
pub const MIN_SECRET_BYTES: usize = 32;

/// Words that only templates and examples put in a secret.
const PLACEHOLDER_MARKERS: &[&str] = &[
    "change-me",
    "changeme",
    "change_me",
    "replace-me",
    "replaceme",
    "your-secret",
    "example",
    "placeholder",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WeakSecret {
    #[error(
        "{name} is {bytes} bytes; it must be at least {MIN_SECRET_BYTES} random bytes \
         (generate one with ops/generate-secrets)"
    )]
    TooShort { name: &'static str, bytes: usize },
    #[error(
        "{name} is a placeholder, not a secret; set a random one (generate one with ops/generate-secrets)"
    )]
    Placeholder { name: &'static str },
}

/// Refuses a secret that is short, a known placeholder, or nearly constant.
pub fn check(name: &'static str, value: &str) -> Result<(), WeakSecret> {
    let lower = value.to_ascii_lowercase();
    if PLACEHOLDER_MARKERS
        .iter()
        .any(|marker| lower.contains(marker))
    {
        return Err(WeakSecret::Placeholder { name });
    }
    if value.len() < MIN_SECRET_BYTES {
        return Err(WeakSecret::TooShort {
            name,
            bytes: value.len(),
        });
    }
    let distinct: HashSet<u8> = value.bytes().collect();
    if distinct.len() < 8 {
        return Err(WeakSecret::Placeholder { name });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn placeholders_and_short_keys_are_refused_random_ones_pass() {
        assert_eq!(
            check("JWT_SECRET", "dev-only-jwt-secret-change-me"),
            Err(WeakSecret::Placeholder { name: "JWT_SECRET" })
        );
        assert_eq!(
            check("JWT_SECRET", "secret"),
            Err(WeakSecret::TooShort {
                name: "JWT_SECRET",
                bytes: 6
            })
        );
        assert!(check("JWT_SECRET", &"a".repeat(64)).is_err());
        assert!(check("JWT_SECRET", "mjzuPkpaEEtM5Vwp54hZFjIREKLMXMotkmyR25RFVcp").is_ok());
    }
}
