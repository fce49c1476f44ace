//! JWT (HS256) authentication of the WebSocket handshake.
//!
//! Browsers cannot set headers on a WebSocket, so the token travels in the
//! query string (`?token=…`) or as a subprotocol entry `bearer.<token>`
//! (never selected back). A missing, malformed, badly signed, expired or
//! not-yet-valid token is refused after the upgrade with close code
//! [`close::UNAUTHORIZED`](steadfast_core::close::UNAUTHORIZED) (4001):
//! clients with an auth hook fetch a new token once, others stop — nobody
//! retries in a loop.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use ring::hmac;

/// HS256 verification settings.
#[derive(Clone)]
pub struct JwtAuth {
    key: hmac::Key,
    /// Clock skew allowed for `exp` and `nbf`, in seconds (default 30).
    pub leeway_s: u64,
    /// Refuse a token without `exp` (default): one that never expires is a
    /// credential nobody can take back.
    pub require_exp: bool,
    /// When set, `aud` (a string, or an array of them) must contain it.
    pub audience: Option<String>,
    /// When set, `iss` must be it.
    pub issuer: Option<String>,
}

impl std::fmt::Debug for JwtAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtAuth")
            .field("leeway_s", &self.leeway_s)
            .field("require_exp", &self.require_exp)
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish_non_exhaustive()
    }
}

/// Why a token was refused (the close reason says which).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No `token` query parameter and no `bearer.` subprotocol.
    #[error("missing token")]
    Missing,
    /// Not three base64url parts with JSON header and claims.
    #[error("malformed token")]
    Malformed,
    /// `alg` is not HS256.
    #[error("unsupported algorithm")]
    Algorithm,
    /// The signature does not match.
    #[error("bad signature")]
    Signature,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token not yet valid")]
    NotYetValid,
    /// No `exp`, and the server requires one.
    #[error("token without exp")]
    NoExpiry,
    /// `aud` does not name this server's audience.
    #[error("token for another audience")]
    Audience,
    /// `iss` is not the issuer this server trusts.
    #[error("token from another issuer")]
    Issuer,
}

impl AuthError {
    /// Stable code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "ERR_AUTH_MISSING",
            AuthError::Malformed => "ERR_AUTH_MALFORMED",
            AuthError::Algorithm => "ERR_AUTH_ALGORITHM",
            AuthError::Signature => "ERR_AUTH_SIGNATURE",
            AuthError::Expired => "ERR_AUTH_EXPIRED",
            AuthError::NotYetValid => "ERR_AUTH_NOT_YET_VALID",
            AuthError::NoExpiry => "ERR_AUTH_NO_EXPIRY",
            AuthError::Audience => "ERR_AUTH_AUDIENCE",
            AuthError::Issuer => "ERR_AUTH_ISSUER",
        }
    }
}

/// The verified claims the server uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `sub`, if present: sessions are bound to it.
    pub subject: Option<String>,
}

impl JwtAuth {
    /// The shortest secret `steadfast serve` accepts: 32 bytes, the
    /// 256 bits of HMAC-SHA256's output (RFC 7518 §3.2).
    pub const MIN_SECRET_BYTES: usize = 32;

    /// Verify tokens signed with `secret` (HMAC-SHA256); `exp` required,
    /// no audience or issuer check, 30 s of leeway. A secret shorter than
    /// [`MIN_SECRET_BYTES`](Self::MIN_SECRET_BYTES) can be guessed
    /// offline from one token: the server's command line refuses it.
    pub fn hs256(secret: &[u8]) -> JwtAuth {
        JwtAuth {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
            leeway_s: 30,
            require_exp: true,
            audience: None,
            issuer: None,
        }
    }

    /// Sign `claims` (a JSON object) — for tests and development tools.
    pub fn sign(&self, claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{body}");
        let tag = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
    }

    /// Check `token` at `now_s` (Unix seconds).
    pub fn verify(&self, token: &str, now_s: u64) -> Result<Claims, AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(body), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let json = |part: &str| -> Result<serde_json::Value, AuthError> {
            let bytes = URL_SAFE_NO_PAD
                .decode(part)
                .map_err(|_| AuthError::Malformed)?;
            serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
        };
        if json(header)?["alg"] != "HS256" {
            return Err(AuthError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed)?;
        let signed = &token[..header.len() + 1 + body.len()];
        hmac::verify(&self.key, signed.as_bytes(), &signature).map_err(|_| AuthError::Signature)?;
        let claims = json(body)?;
        if !claims.is_object() {
            return Err(AuthError::Malformed);
        }
        // NumericDate: seconds, fractions allowed (RFC 7519 §2).
        let time = |name: &str| -> Result<Option<f64>, AuthError> {
            match &claims[name] {
                serde_json::Value::Null => Ok(None),
                value => value
                    .as_f64()
                    .filter(|t| t.is_finite())
                    .map(Some)
                    .ok_or(AuthError::Malformed),
            }
        };
        let (now, leeway) = (now_s as f64, self.leeway_s as f64);
        match time("exp")? {
            Some(exp) if now >= exp + leeway => return Err(AuthError::Expired),
            None if self.require_exp => return Err(AuthError::NoExpiry),
            _ => {}
        }
        if time("nbf")?.is_some_and(|nbf| now + leeway < nbf) {
            return Err(AuthError::NotYetValid);
        }
        if let Some(issuer) = &self.issuer {
            if claims["iss"].as_str() != Some(issuer.as_str()) {
                return Err(AuthError::Issuer);
            }
        }
        if let Some(audience) = &self.audience {
            let named = match &claims["aud"] {
                serde_json::Value::String(aud) => aud == audience,
                serde_json::Value::Array(auds) => auds.iter().any(|a| a == audience.as_str()),
                _ => false,
            };
            if !named {
                return Err(AuthError::Audience);
            }
        }
        Ok(Claims {
            subject: claims["sub"].as_str().map(str::to_owned),
        })
    }
}

/// The token offered in the handshake: `?token=` first, then `bearer.<token>`.
pub(crate) fn offered_token(query_token: Option<String>, protocols: &[String]) -> Option<String> {
    query_token.filter(|t| !t.is_empty()).or_else(|| {
        protocols
            .iter()
            .find_map(|p| p.strip_prefix("bearer."))
            .map(str::to_owned)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NOW: u64 = 1_800_000_000;

    #[test]
    fn accepts_a_good_token_and_reads_the_subject() {
        let auth = JwtAuth::hs256(b"secret");
        let token = auth.sign(&json!({ "sub": "alice", "exp": NOW + 60 }));
        let claims = auth.verify(&token, NOW).expect("valid");
        assert_eq!(claims.subject.as_deref(), Some("alice"));
    }

    #[test]
    fn refuses_every_kind_of_bad_token() {
        let auth = JwtAuth::hs256(b"secret");
        let other = JwtAuth::hs256(b"other secret");
        let good = auth.sign(&json!({ "sub": "a" }));
        assert_eq!(
            auth.verify(&other.sign(&json!({})), NOW),
            Err(AuthError::Signature)
        );
        assert_eq!(
            auth.verify(&auth.sign(&json!({ "exp": NOW - 31 })), NOW),
            Err(AuthError::Expired)
        );
        // Within the leeway it still passes.
        assert!(auth
            .verify(&auth.sign(&json!({ "exp": NOW - 5 })), NOW)
            .is_ok());
        assert_eq!(
            auth.verify(
                &auth.sign(&json!({ "nbf": NOW + 100, "exp": NOW + 200 })),
                NOW
            ),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            auth.verify(&auth.sign(&json!({ "exp": "soon" })), NOW),
            Err(AuthError::Malformed)
        );
        // alg "none" with the signature stripped.
        let none = format!(
            "{}.{}.",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            good.split('.').nth(1).expect("three parts")
        );
        assert_eq!(auth.verify(&none, NOW), Err(AuthError::Algorithm));
        // A tampered body.
        let mut parts: Vec<&str> = good.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"admin"}"#);
        parts[1] = &forged;
        assert_eq!(
            auth.verify(&parts.join("."), NOW),
            Err(AuthError::Signature)
        );
        for junk in ["", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30.e30"] {
            assert!(auth.verify(junk, NOW).is_err(), "{junk}");
        }
    }

    #[test]
    fn expiry_is_required_times_may_be_fractional_audience_and_issuer_are_checked() {
        let mut auth = JwtAuth::hs256(b"secret");
        assert_eq!(
            auth.verify(&auth.sign(&json!({ "sub": "a" })), NOW),
            Err(AuthError::NoExpiry)
        );
        assert_eq!(
            auth.verify(&auth.sign(&json!({})), NOW),
            Err(AuthError::NoExpiry)
        );
        let fractional = auth.sign(&json!({ "exp": NOW as f64 + 0.5, "nbf": NOW as f64 - 0.5 }));
        assert!(auth.verify(&fractional, NOW).is_ok());
        auth.leeway_s = 0;
        let expired = auth.sign(&json!({ "exp": NOW as f64 - 0.25 }));
        assert_eq!(auth.verify(&expired, NOW), Err(AuthError::Expired));
        auth.require_exp = false;
        assert!(auth.verify(&auth.sign(&json!({})), NOW).is_ok());

        auth.audience = Some("chat".into());
        auth.issuer = Some("https://id.example".into());
        let token = |claims| auth.sign(&claims);
        let good = json!({ "aud": ["other", "chat"], "iss": "https://id.example" });
        assert!(auth.verify(&token(good), NOW).is_ok());
        let one = json!({ "aud": "chat", "iss": "https://id.example" });
        assert!(auth.verify(&token(one), NOW).is_ok());
        let wrong_aud = json!({ "aud": "admin", "iss": "https://id.example" });
        assert_eq!(
            auth.verify(&token(wrong_aud), NOW),
            Err(AuthError::Audience)
        );
        let no_aud = json!({ "iss": "https://id.example" });
        assert_eq!(auth.verify(&token(no_aud), NOW), Err(AuthError::Audience));
        let wrong_iss = json!({ "aud": "chat", "iss": "https://evil.example" });
        assert_eq!(auth.verify(&token(wrong_iss), NOW), Err(AuthError::Issuer));
    }

    #[test]
    fn the_query_wins_over_the_subprotocol() {
        let protocols = vec!["steadfast.v1".to_owned(), "bearer.abc".to_owned()];
        assert_eq!(offered_token(None, &protocols).as_deref(), Some("abc"));
        assert_eq!(
            offered_token(Some("q".into()), &protocols).as_deref(),
            Some("q")
        );
        assert_eq!(offered_token(Some(String::new()), &[]), None);
    }
}
