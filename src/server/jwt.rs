//! HS256 JSON Web Tokens, the access tokens of the v1 API. Small enough to write out:
//! `base64url(header).base64url(claims).base64url(HMAC-SHA256(key, first two parts))`.
//! The errors are those PyJWT reports, whose wording the reference passes to clients.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Debug, PartialEq, Eq)]
pub enum JwtError {
    Expired,
    Immature,
    BadSignature,
    MissingClaim(&'static str),
    Undecodable,
    /// Well-formed but not acceptable (another algorithm, say).
    Invalid,
}

fn mac(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).expect("HMAC takes keys of any length")
}

/// Signs `claims` (a JSON object) with `key`.
pub fn sign(claims: &Value, key: &[u8]) -> String {
    let header = URL_SAFE_NO_PAD.encode(json!({"alg": "HS256", "typ": "JWT"}).to_string());
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let signing_input = format!("{header}.{payload}");
    let mut signer = mac(key);
    signer.update(signing_input.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(signer.finalize().into_bytes());
    format!("{signing_input}.{signature}")
}

/// Checks the signature (in constant time), then `exp`, `iat` and `sub` like PyJWT with
/// `leeway` seconds of clock skew, and returns the claims.
pub fn verify(token: &str, key: &[u8], leeway: i64, now: i64) -> Result<Value, JwtError> {
    let mut parts = token.split('.');
    let (Some(header_part), Some(payload_part), Some(signature), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Undecodable);
    };
    let decode = |part: &str| URL_SAFE_NO_PAD.decode(part.trim_end_matches('='));
    let header: Value = decode(header_part)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(JwtError::Undecodable)?;
    let claims: Value = decode(payload_part)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .filter(Value::is_object)
        .ok_or(JwtError::Undecodable)?;
    let signature = decode(signature).map_err(|_| JwtError::Undecodable)?;
    if header.get("alg").and_then(Value::as_str) != Some("HS256") {
        return Err(JwtError::Invalid);
    }
    let signing_input = format!("{header_part}.{payload_part}");
    let mut verifier = mac(key);
    verifier.update(signing_input.as_bytes());
    verifier
        .verify_slice(&signature)
        .map_err(|_| JwtError::BadSignature)?;
    for claim in ["exp", "iat", "sub"] {
        if claims.get(claim).is_none() {
            return Err(JwtError::MissingClaim(claim));
        }
    }
    let number = |claim: &str| {
        claims
            .get(claim)
            .and_then(Value::as_f64)
            .ok_or(JwtError::Undecodable)
    };
    if number("exp")? <= (now - leeway) as f64 {
        return Err(JwtError::Expired);
    }
    if number("iat")? > (now + leeway) as f64 {
        return Err(JwtError::Immature);
    }
    if let Some(nbf) = claims.get("nbf").and_then(Value::as_f64) {
        if nbf > (now + leeway) as f64 {
            return Err(JwtError::Immature);
        }
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"signing key";

    fn claims(exp: i64, iat: i64) -> Value {
        json!({"exp": exp, "iat": iat, "sub": "access_token", "permissions": {"client_id": "c"}})
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let token = sign(&claims(1600, 1000), KEY);
        assert_eq!(
            verify(&token, KEY, 5, 1000).unwrap()["permissions"]["client_id"],
            "c"
        );
        assert_eq!(verify(&token, KEY, 5, 1604), Ok(claims(1600, 1000)));
        assert_eq!(verify(&token, KEY, 5, 1606), Err(JwtError::Expired));
        assert_eq!(verify(&token, KEY, 5, 990), Err(JwtError::Immature));
    }

    #[test]
    fn forged_and_broken_tokens_are_refused() {
        let token = sign(&claims(1600, 1000), KEY);
        assert_eq!(
            verify(&token, b"other key", 5, 1000),
            Err(JwtError::BadSignature)
        );
        let mut tampered = token.clone();
        tampered.insert(token.find('.').unwrap() + 2, 'x');
        assert!(verify(&tampered, KEY, 5, 1000).is_err());
        assert_eq!(
            verify("not a token", KEY, 5, 1000),
            Err(JwtError::Undecodable)
        );
        let no_sub = sign(&json!({"exp": 1600, "iat": 1000}), KEY);
        assert_eq!(
            verify(&no_sub, KEY, 5, 1000),
            Err(JwtError::MissingClaim("sub"))
        );
    }
}
