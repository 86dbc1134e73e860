//! The one token check, used by ingest (`sources.<name>.token`; the Basic-auth
//! user name for a Segment write key, `sources.<name>.segment.write_key`) and by
//! the admin routes (`server.admin_token`).
//!
//! The scheme is matched case-insensitively (`Bearer`, `bearer`, `BEARER`:
//! HTTP authentication schemes are case-insensitive, RFC 9110 §11.1). Tokens
//! are compared on their SHA-256, in constant time, and every configured
//! token is compared whatever matched before it, so neither the position of a
//! match nor the length of a token leaks through timing.

use sha2::{Digest, Sha256};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq};

/// A configured token, kept only as its SHA-256.
#[derive(Clone)]
pub struct TokenDigest([u8; 32]);

impl TokenDigest {
    pub fn of(token: &str) -> TokenDigest {
        TokenDigest(Sha256::digest(token.as_bytes()).into())
    }
}

impl std::fmt::Debug for TokenDigest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenDigest(..)")
    }
}

/// Why a request's token was not accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("missing `Authorization: Bearer <token>` header")]
    Missing,
    #[error("missing `Authorization: Basic <base64 of write_key:>` header (the Segment write key as the user name)")]
    MissingBasic,
    #[error("unknown token")]
    Unknown,
}

/// The token of an `Authorization` header value `Bearer <token>`, scheme in
/// any case, spaces or tabs around the token ignored. `None` for another
/// scheme or an empty token.
pub fn bearer_token(authorization: &str) -> Option<&str> {
    let (scheme, rest) = authorization.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return None;
    }
    let token = rest.trim_matches([' ', '\t']);
    (!token.is_empty()).then_some(token)
}

/// The user name of an `Authorization` header value `Basic <base64 of
/// user:password>` (RFC 7617), scheme in any case. The password is not
/// returned: Segment's write-key auth sends the key as the user name and an
/// empty password. `None` for another scheme, invalid base64 or UTF-8, or
/// an empty user name.
pub fn basic_user(authorization: &str) -> Option<String> {
    use base64::Engine;
    let (scheme, rest) = authorization.split_once([' ', '\t'])?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let raw = base64::engine::general_purpose::STANDARD
        .decode(rest.trim_matches([' ', '\t']))
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let user = text.split_once(':').map_or(text.as_str(), |(u, _)| u);
    (!user.is_empty()).then(|| user.to_string())
}

/// Which of `known` (by position) the bearer token in `authorization` is.
pub fn check<'a>(
    authorization: Option<&str>,
    known: impl IntoIterator<Item = &'a TokenDigest>,
) -> Result<usize, TokenError> {
    let presented = authorization
        .and_then(bearer_token)
        .ok_or(TokenError::Missing)?;
    check_secret(presented, known)
}

/// Which of `known` (by position) the Basic-auth user name in
/// `authorization` is (a Segment write key). Same comparison as [`check`].
pub fn check_basic_user<'a>(
    authorization: Option<&str>,
    known: impl IntoIterator<Item = &'a TokenDigest>,
) -> Result<usize, TokenError> {
    let presented = authorization
        .and_then(basic_user)
        .ok_or(TokenError::MissingBasic)?;
    check_secret(&presented, known)
}

/// Which of `known` (by position) `presented` is: SHA-256 digests compared
/// in constant time, every one of them whatever matched before.
fn check_secret<'a>(
    presented: &str,
    known: impl IntoIterator<Item = &'a TokenDigest>,
) -> Result<usize, TokenError> {
    let presented = TokenDigest::of(presented);
    let mut found = Choice::from(0);
    let mut index = 0u64;
    for (i, k) in known.into_iter().enumerate() {
        let hit = k.0.ct_eq(&presented.0);
        index.conditional_assign(&(i as u64), hit);
        found |= hit;
    }
    if bool::from(found) {
        Ok(index as usize)
    } else {
        Err(TokenError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheme_is_case_insensitive_and_token_exact() {
        let known = [TokenDigest::of("tok-a"), TokenDigest::of("tok-b")];
        for h in [
            "Bearer tok-b",
            "bearer tok-b",
            "BEARER tok-b",
            "BeArEr  tok-b ",
            "Bearer\ttok-b",
        ] {
            assert_eq!(check(Some(h), &known), Ok(1), "{h:?}");
        }
        assert_eq!(check(Some("Bearer tok-a"), &known), Ok(0));
        for h in ["Bearer tok-c", "Bearer TOK-A", "Bearer tok-a tok-b"] {
            assert_eq!(check(Some(h), &known), Err(TokenError::Unknown), "{h:?}");
        }
        for h in [
            None,
            Some(""),
            Some("Bearer"),
            Some("Bearer   "),
            Some("Basic dG9rLWE="),
            Some("Bearertok-a"),
            Some("tok-a"),
        ] {
            assert_eq!(check(h, &known), Err(TokenError::Missing), "{h:?}");
        }
        assert_eq!(check(Some("Bearer tok-a"), &[]), Err(TokenError::Unknown));
    }

    #[test]
    fn basic_user_is_the_write_key() {
        use base64::Engine;
        let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
        let known = [TokenDigest::of("key-a"), TokenDigest::of("key-b")];
        for h in [
            format!("Basic {}", b64("key-b:")),
            format!("basic {}", b64("key-b:")),
            format!("BASIC  {} ", b64("key-b:ignored-password")),
            format!("Basic {}", b64("key-b")),
        ] {
            assert_eq!(check_basic_user(Some(&h), &known), Ok(1), "{h:?}");
        }
        for h in [
            format!("Basic {}", b64("key-c:")),
            format!("Basic {}", b64("KEY-A:")),
        ] {
            assert_eq!(
                check_basic_user(Some(&h), &known),
                Err(TokenError::Unknown),
                "{h:?}"
            );
        }
        for h in [
            None,
            Some("Bearer key-a".to_string()),
            Some(format!("Basic {}", b64(":key-a"))),
            Some("Basic !!!".to_string()),
            Some("Basic".to_string()),
        ] {
            assert_eq!(
                check_basic_user(h.as_deref(), &known),
                Err(TokenError::MissingBasic),
                "{h:?}"
            );
        }
        // A bearer token is not a Basic user, and the other way round.
        assert_eq!(
            check(Some(&format!("Basic {}", b64("key-a:"))), &known),
            Err(TokenError::Missing)
        );
    }
}
