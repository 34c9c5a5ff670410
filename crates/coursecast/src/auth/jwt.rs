//! HS256 tokens exactly as PROTOCOL.md section 1 describes them.

use std::sync::Arc;

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation, errors::ErrorKind};
use serde::{Deserialize, Serialize};

use super::AuthError;
use crate::config::Settings;

/// No leeway beyond this on `exp` and `nbf` (the contract's bound).
const LEEWAY_SECS: u64 = 30;

/// The claims we issue and accept. `role` stays a string here: an unknown role is a
/// `TOKEN_INVALID`, decided by the caller, not a decoding failure.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: String,
    pub iat: i64,
    pub exp: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// Signing and verification keys plus the validation rules, built once at start-up.
#[derive(Clone)]
pub struct JwtKeys(Arc<Inner>);

struct Inner {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    issuer: Option<String>,
    audience: Option<String>,
    ttl_secs: i64,
}

impl JwtKeys {
    pub fn new(secret: &[u8], settings: &Settings) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = LEEWAY_SECS;
        validation.validate_nbf = true;
        let mut required = vec!["exp", "sub", "iat"];
        match &settings.jwt_issuer {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                required.push("iss");
            }
            None => validation.iss = None,
        }
        match &settings.jwt_audience {
            Some(aud) => {
                validation.set_audience(&[aud]);
                required.push("aud");
            }
            None => validation.validate_aud = false,
        }
        validation.set_required_spec_claims(&required);
        Self(Arc::new(Inner {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
            issuer: settings.jwt_issuer.clone(),
            audience: settings.jwt_audience.clone(),
            ttl_secs: i64::try_from(settings.jwt_ttl_secs).unwrap_or(i64::MAX),
        }))
    }

    /// Issues a token for `sub` with `role`, valid for the configured lifetime.
    /// `not_before_iat` lets a fresh login outlive a logout made in the same second.
    pub fn issue(
        &self,
        sub: &str,
        role: &str,
        not_before_iat: i64,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        self.issue_for(sub, role, not_before_iat, self.0.ttl_secs)
    }

    pub fn issue_for(
        &self,
        sub: &str,
        role: &str,
        not_before_iat: i64,
        ttl_secs: i64,
    ) -> Result<(String, Claims), jsonwebtoken::errors::Error> {
        let now = chrono::Utc::now().timestamp();
        let claims = Claims {
            sub: sub.to_owned(),
            role: role.to_owned(),
            iat: now.max(not_before_iat),
            exp: now.saturating_add(ttl_secs),
            nbf: None,
            iss: self.0.issuer.clone(),
            aud: self.0.audience.clone(),
        };
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.0.encoding)?;
        Ok((token, claims))
    }

    /// Checks signature, algorithm, `exp`/`nbf` (30 s leeway), `iss`/`aud` when configured,
    /// and claim types.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        jsonwebtoken::decode::<Claims>(token, &self.0.decoding, &self.0.validation).map(|data| data.claims).map_err(
            |err| match err.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature"),
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::Invalid("only HS256 is accepted")
                }
                ErrorKind::ImmatureSignature => AuthError::Invalid("the token is not valid yet (nbf)"),
                ErrorKind::MissingRequiredClaim(_) => AuthError::Invalid("a required claim is missing"),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer"),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience"),
                ErrorKind::Json(_) | ErrorKind::InvalidClaimFormat(_) => AuthError::Invalid("malformed claims"),
                _ => AuthError::Invalid("malformed token"),
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header, encode};
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"a-test-secret-that-is-long-enough-for-hs256";

    fn keys() -> JwtKeys {
        JwtKeys::new(SECRET, &Settings::defaults())
    }

    fn sign(claims: serde_json::Value, alg: Algorithm, secret: &[u8]) -> String {
        encode(&Header::new(alg), &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    #[test]
    fn issued_tokens_verify() {
        let (token, _) = keys().issue("user-1", "STUDENT", 0).unwrap();
        let claims = keys().verify(&token).unwrap();
        assert_eq!((claims.sub.as_str(), claims.role.as_str()), ("user-1", "STUDENT"));
    }

    #[test]
    fn refusals_map_to_contract_codes() {
        let t = now();
        let good = json!({"sub": "u", "role": "STUDENT", "iat": t, "exp": t + 60});
        let cases = [
            (
                sign(good.clone(), Algorithm::HS256, b"another-secret-entirely-0123456789"),
                AuthError::Invalid("bad signature"),
            ),
            (sign(good.clone(), Algorithm::HS384, SECRET), AuthError::Invalid("only HS256 is accepted")),
            (
                sign(json!({"sub": "u", "role": "STUDENT", "iat": t, "exp": t - 31}), Algorithm::HS256, SECRET),
                AuthError::Expired,
            ),
            (
                sign(json!({"sub": "u", "role": "STUDENT", "iat": t, "exp": "never"}), Algorithm::HS256, SECRET),
                AuthError::Invalid("malformed claims"),
            ),
            (
                sign(json!({"sub": "u", "role": "STUDENT", "exp": t + 60}), Algorithm::HS256, SECRET),
                AuthError::Invalid("a required claim is missing"),
            ),
            (
                sign(
                    json!({"sub": "u", "role": "STUDENT", "iat": t, "exp": t + 600, "nbf": t + 300}),
                    Algorithm::HS256,
                    SECRET,
                ),
                AuthError::Invalid("the token is not valid yet (nbf)"),
            ),
        ];
        for (token, want) in cases {
            assert_eq!(keys().verify(&token).unwrap_err().code(), want.code(), "{want:?}");
        }
    }

    #[test]
    fn alg_none_is_refused() {
        use base64_like::encode_url;
        let header = encode_url(br#"{"alg":"none","typ":"JWT"}"#);
        let body =
            encode_url(format!(r#"{{"sub":"u","role":"ADMIN","iat":{0},"exp":{1}}}"#, now(), now() + 60).as_bytes());
        let token = format!("{header}.{body}.");
        assert!(matches!(keys().verify(&token), Err(AuthError::Invalid(_))));
    }

    #[test]
    fn leeway_is_thirty_seconds() {
        let t = now();
        let token =
            sign(json!({"sub": "u", "role": "STUDENT", "iat": t - 100, "exp": t - 20}), Algorithm::HS256, SECRET);
        assert!(keys().verify(&token).is_ok());
    }

    /// Unpadded base64url, enough to forge an unsigned token in a test.
    mod base64_like {
        pub fn encode_url(input: &[u8]) -> String {
            const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in input.chunks(3) {
                let b = [chunk[0], *chunk.get(1).unwrap_or(&0), *chunk.get(2).unwrap_or(&0)];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..=chunk.len() {
                    out.push(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
