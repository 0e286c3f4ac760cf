//! API key secrets and function tokens: the only place that makes random secrets, hashes them
//! and signs. `keel_sk_` + 43 base64url characters (32 random bytes) is a key's secret, shown
//! once; the store keeps its SHA-256. `keel_ft_` + base64url(claims JSON) + `.` +
//! base64url(HMAC-SHA256) is a function token.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use keel_core::auth::{ApiKey, Scope, SigningKey, TokenClaims, SECRET_PREFIX, TOKEN_PREFIX};
use keel_core::clock::Millis;
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};

/// 32 bytes from the operating system's CSPRNG.
pub(crate) fn random_bytes() -> [u8; 32] {
    let mut bytes = [0u8; 32];
    SystemRandom::new().fill(&mut bytes).expect("the operating system's random source failed");
    bytes
}

/// The lowercase hex SHA-256 of a secret: what the store keeps and the cache looks keys up by.
/// A secret carries 256 random bits, so a plain hash is enough (no password stretching).
pub(crate) fn hash_secret(secret: &str) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let digest = digest::digest(&digest::SHA256, secret.as_bytes());
    let mut hex = String::with_capacity(64);
    for byte in digest.as_ref() {
        hex.push(char::from(HEX[usize::from(byte >> 4)]));
        hex.push(char::from(HEX[usize::from(byte & 0xf)]));
    }
    hex
}

/// A new API key and its secret (to show once). `now` also makes its id.
pub(crate) fn new_api_key(name: &str, scopes: Vec<Scope>, expires_at: Option<Millis>, now: Millis) -> (ApiKey, String) {
    let secret = format!("{SECRET_PREFIX}{}", URL_SAFE_NO_PAD.encode(random_bytes()));
    let key = ApiKey {
        id: format!("key_{}", keel_core::id::new_id(now)),
        name: name.to_owned(),
        hash: hash_secret(&secret),
        scopes,
        created_at: now,
        expires_at,
        revoked_at: None,
        last_used_at: None,
    };
    (key, secret)
}

/// A new signing key made at `now`.
pub fn new_signing_key(now: Millis) -> SigningKey {
    SigningKey {
        id: format!("sk_{}", keel_core::id::new_id(now)),
        secret: random_bytes().to_vec(),
        created_at: now,
        expires_at: None,
    }
}

/// Signs `claims` (whose `kid` must be `key`'s id) into a function token.
#[cfg(test)]
pub(crate) fn sign(key: &SigningKey, claims: &TokenClaims) -> String {
    let mac = hmac::Key::new(hmac::HMAC_SHA256, &key.secret);
    sign_with(&key.id, &mac, &claims.function, &claims.invocation, claims.exp, &claims.scopes)
}

/// The claims of a token as they are signed, borrowed: the same JSON as [`TokenClaims`].
#[derive(serde::Serialize)]
struct ClaimsRef<'a> {
    kid: &'a str,
    #[serde(rename = "fn")]
    function: &'a str,
    #[serde(rename = "inv")]
    invocation: &'a str,
    exp: Millis,
    scopes: &'a [Scope],
}

/// A function token for `function`'s attempt on `invocation`, expiring at `exp`, holding
/// `scopes`, signed with `mac` (the HMAC key of signing key `kid`).
pub(crate) fn sign_with(
    kid: &str,
    mac: &hmac::Key,
    function: &str,
    invocation: &str,
    exp: Millis,
    scopes: &[Scope],
) -> String {
    let claims = ClaimsRef { kid, function, invocation, exp, scopes };
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).expect("claims serialize"));
    let tag = hmac::sign(mac, payload.as_bytes());
    format!("{TOKEN_PREFIX}{payload}.{}", URL_SAFE_NO_PAD.encode(tag.as_ref()))
}

/// Why a function token was refused (all answered 401; the words go to the log and the detail).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum TokenError {
    #[error("the function token is malformed")]
    Malformed,
    #[error("the function token was signed by a key this node does not know (or that has expired)")]
    UnknownKey,
    #[error("the function token's signature does not match")]
    BadSignature,
    #[error("the function token expired (its attempt's deadline passed)")]
    Expired,
}

/// The claims of `token`, when it is well formed, signed by one of `keys` (looked up by its
/// `kid`), and not expired at `now`. The signature is checked (in constant time) before the
/// claims are trusted.
pub(crate) fn verify(
    token: &str,
    now: Millis,
    key_of: impl Fn(&str) -> Option<SigningKey>,
) -> Result<TokenClaims, TokenError> {
    let body = token.strip_prefix(TOKEN_PREFIX).ok_or(TokenError::Malformed)?;
    let (payload, signature) = body.split_once('.').ok_or(TokenError::Malformed)?;
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| TokenError::Malformed)?;
    let signature = URL_SAFE_NO_PAD.decode(signature).map_err(|_| TokenError::Malformed)?;
    let claims: TokenClaims = serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
    let key = key_of(&claims.kid).filter(|k| k.is_live(now)).ok_or(TokenError::UnknownKey)?;
    hmac::verify(&hmac::Key::new(hmac::HMAC_SHA256, &key.secret), payload.as_bytes(), &signature)
        .map_err(|_| TokenError::BadSignature)?;
    if now >= claims.exp {
        return Err(TokenError::Expired);
    }
    Ok(claims)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(kid: &str, exp: Millis) -> TokenClaims {
        TokenClaims {
            kid: kid.into(),
            function: "purchase".into(),
            invocation: "01J".into(),
            exp,
            scopes: vec!["kv:balances:write".parse().unwrap(), Scope::Egress("payments".into())],
        }
    }

    #[test]
    fn a_secret_is_the_prefix_and_43_base64url_characters_and_only_its_hash_is_kept() {
        let (key, secret) = new_api_key("app", vec![Scope::Read], None, 1_000);
        let body = secret.strip_prefix("keel_sk_").unwrap();
        assert_eq!(body.len(), 43);
        assert!(body.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
        assert_eq!(key.hash, hash_secret(&secret));
        assert_eq!(key.hash.len(), 64);
        assert!(key.id.starts_with("key_"));
        let (_, other) = new_api_key("app", vec![], None, 1_000);
        assert_ne!(secret, other);
    }

    #[test]
    fn a_token_verifies_until_its_deadline_and_not_when_changed() {
        let key = new_signing_key(0);
        let token = sign(&key, &claims(&key.id, 5_000));
        let known = |kid: &str| (kid == key.id).then(|| key.clone());
        assert_eq!(verify(&token, 4_999, known).unwrap(), claims(&key.id, 5_000));
        assert_eq!(verify(&token, 5_000, known), Err(TokenError::Expired));
        // Another function's name with the same signature.
        let forged = token.replacen(
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&key.id, 5_000)).unwrap()),
            &URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(&key.id, 9_000_000)).unwrap()),
            1,
        );
        assert_eq!(verify(&forged, 4_000, known), Err(TokenError::BadSignature));
        assert_eq!(verify(&token, 4_000, |_| None), Err(TokenError::UnknownKey));
        let mut expired_key = key.clone();
        expired_key.expires_at = Some(3_000);
        assert_eq!(verify(&token, 4_000, |_| Some(expired_key.clone())), Err(TokenError::UnknownKey));
        assert_eq!(verify("keel_ft_nope", 0, known), Err(TokenError::Malformed));
        assert_eq!(verify("Bearer x", 0, known), Err(TokenError::Malformed));
    }
}
