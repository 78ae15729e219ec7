//! Short-lived JWT access tokens (HS256). command-service issues them and
//! verifies them on every command; query-service verifies them for reads.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

const ISSUER: &str = "chronicle";
const AUDIENCE: &str = "chronicle-api";

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct Claims {
    /// The user id.
    pub sub: Uuid,
    /// The role when the token was issued; writes re-check the current role.
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    pub jti: Uuid,
    pub iss: String,
    pub aud: String,
    /// The session (sign-in) the token belongs to: ending the session ends
    /// the token at once, before it expires. Absent from tokens issued before
    /// sessions existed, which are refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sid: Option<Uuid>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is invalid")]
    Invalid,
}

/// Cheap to clone (request handlers get a copy of their state per request).
#[derive(Clone)]
pub struct AccessTokens(Arc<Keys>);

struct Keys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    ttl: Duration,
}

impl fmt::Debug for AccessTokens {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter
            .debug_struct("AccessTokens")
            .field("ttl", &self.0.ttl)
            .finish_non_exhaustive()
    }
}

impl AccessTokens {
    pub fn new(secret: &str, ttl: Duration) -> AccessTokens {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_issuer(&[ISSUER]);
        validation.set_audience(&[AUDIENCE]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        validation.leeway = 5;
        AccessTokens(Arc::new(Keys {
            encoding: EncodingKey::from_secret(secret.as_bytes()),
            decoding: DecodingKey::from_secret(secret.as_bytes()),
            validation,
            ttl,
        }))
    }

    pub fn ttl(&self) -> Duration {
        self.0.ttl
    }

    pub fn issue(&self, user_id: Uuid, role: &str, session_id: Uuid) -> String {
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: user_id,
            role: role.to_owned(),
            iat: now,
            exp: now + self.0.ttl.as_secs() as i64,
            jti: Uuid::now_v7(),
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            sid: Some(session_id),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        jsonwebtoken::decode::<Claims>(token, &self.0.decoding, &self.0.validation)
            .map(|data| data.claims)
            .map_err(|error| match error.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            })
    }
}

/// The token of an `Authorization: Bearer …` header value.
pub fn bearer(header_value: &str) -> Option<&str> {
    let (scheme, token) = header_value.trim().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_issued_token_verifies_and_carries_the_user() {
        let tokens = AccessTokens::new("test-secret", Duration::from_secs(60));
        let user = Uuid::now_v7();
        let claims = tokens
            .verify(&tokens.issue(user, "USER", Uuid::now_v7()))
            .unwrap();
        assert_eq!(claims.sub, user);
    }

    #[test]
    fn a_token_signed_with_another_secret_is_invalid() {
        let ours = AccessTokens::new("ours", Duration::from_secs(60));
        let theirs = AccessTokens::new("theirs", Duration::from_secs(60));
        assert_eq!(
            ours.verify(&theirs.issue(Uuid::now_v7(), "ADMIN", Uuid::now_v7())),
            Err(TokenError::Invalid)
        );
        assert_eq!(ours.verify("not.a.jwt"), Err(TokenError::Invalid));
    }

    #[test]
    fn an_expired_token_says_so() {
        let tokens = AccessTokens::new("s", Duration::from_secs(0));
        let mut claims = tokens
            .verify(&tokens.issue(Uuid::now_v7(), "USER", Uuid::now_v7()))
            .unwrap();
        claims.exp = Utc::now().timestamp() - 60;
        let stale =
            jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &tokens.0.encoding)
                .unwrap();
        assert_eq!(tokens.verify(&stale), Err(TokenError::Expired));
    }

    #[test]
    fn bearer_headers_are_parsed_case_insensitively() {
        assert_eq!(bearer("Bearer abc"), Some("abc"));
        assert_eq!(bearer("bearer  abc "), Some("abc"));
        assert_eq!(bearer("Basic abc"), None);
    }
}
