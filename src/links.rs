//! Client review links: `<public_url>/review/<id>.<signature>`, where the signature is
//! an HMAC-SHA256 of the link's id under the server's key from `COPYDESK_LINK_KEY`.
//! The URL is the whole credential (a person with no account opens it); the row in
//! `review_links` says whether it was used, revoked or has expired. Nothing here does
//! SQL and nothing prints the key.

use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD},
};
use hmac::{Hmac, Mac};
use sha2::Sha256;
use uuid::Uuid;

/// The environment variable the key comes from.
pub const ENV: &str = "COPYDESK_LINK_KEY";

/// The fewest key bytes accepted.
pub const MIN_KEY_BYTES: usize = 32;

/// Why the key could not be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LinkKeyError {
    #[error(
        "{ENV} is not set: review links are signed with it; set it to at least {MIN_KEY_BYTES} random bytes as hex or base64 (for example `openssl rand -hex 32`)"
    )]
    Missing,
    #[error(
        "{ENV} is neither hex nor base64: give at least {MIN_KEY_BYTES} random bytes as hex or base64 (for example `openssl rand -hex 32`)"
    )]
    Unreadable,
    #[error(
        "{ENV} holds {0} bytes; review links need at least {MIN_KEY_BYTES} random bytes (for example `openssl rand -hex 32`)"
    )]
    Short(usize),
}

/// The key review links are signed with.
#[derive(Clone)]
pub struct LinkKey(Vec<u8>);

impl std::fmt::Debug for LinkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LinkKey(redacted)")
    }
}

impl LinkKey {
    /// The key in `COPYDESK_LINK_KEY`.
    pub fn from_env() -> Result<Self, LinkKeyError> {
        match std::env::var(ENV) {
            Ok(v) if !v.trim().is_empty() => Self::parse(&v),
            _ => Err(LinkKeyError::Missing),
        }
    }

    /// A key given as hex or base64 (standard or URL-safe, padded or not).
    pub fn parse(text: &str) -> Result<Self, LinkKeyError> {
        let text = text.trim();
        let bytes = hex(text)
            .or_else(|| STANDARD.decode(text).ok())
            .or_else(|| URL_SAFE.decode(text).ok())
            .or_else(|| URL_SAFE_NO_PAD.decode(text).ok())
            .or_else(|| {
                base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(text)
                    .ok()
            })
            .ok_or(LinkKeyError::Unreadable)?;
        if bytes.len() < MIN_KEY_BYTES {
            return Err(LinkKeyError::Short(bytes.len()));
        }
        Ok(Self(bytes))
    }

    fn mac(&self, id: Uuid) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(b"copydesk review link v1\0");
        mac.update(id.as_bytes());
        mac
    }

    /// The path segment of link `id`: `<id>.<signature>`.
    pub fn sign(&self, id: Uuid) -> String {
        let sig = URL_SAFE_NO_PAD.encode(self.mac(id).finalize().into_bytes());
        format!("{id}.{sig}")
    }

    /// The link id a path segment names, when its signature is this key's (compared
    /// in constant time).
    pub fn verify(&self, segment: &str) -> Option<Uuid> {
        let (id, sig) = segment.split_once('.')?;
        let id = Uuid::parse_str(id).ok()?;
        let sig = URL_SAFE_NO_PAD.decode(sig).ok()?;
        self.mac(id).verify_slice(&sig).ok()?;
        Some(id)
    }
}

fn hex(text: &str) -> Option<Vec<u8>> {
    if text.len() % 2 != 0 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).ok())
        .collect()
}

/// The absolute URL of a signed segment on `public_url`.
pub fn url(public_url: &str, segment: &str) -> String {
    format!("{}/review/{segment}", public_url.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff";

    #[test]
    fn keys_are_hex_or_base64_of_at_least_32_bytes() {
        assert!(LinkKey::parse(HEX).is_ok());
        let b64 = STANDARD.encode([7u8; 32]);
        assert!(LinkKey::parse(&b64).is_ok());
        assert!(LinkKey::parse(&URL_SAFE_NO_PAD.encode([250u8; 40])).is_ok());
        assert_eq!(
            LinkKey::parse("00112233").unwrap_err(),
            LinkKeyError::Short(4)
        );
        assert_eq!(
            LinkKey::parse("not a key!").unwrap_err(),
            LinkKeyError::Unreadable
        );
        assert!(LinkKeyError::Missing.to_string().contains(ENV));
    }

    #[test]
    fn a_signature_verifies_only_its_own_id_under_its_own_key() {
        let key = LinkKey::parse(HEX).unwrap();
        let id = Uuid::now_v7();
        let seg = key.sign(id);
        assert_eq!(key.verify(&seg), Some(id));
        let other = Uuid::now_v7();
        let forged = format!("{other}.{}", seg.split_once('.').unwrap().1);
        assert_eq!(key.verify(&forged), None);
        let other_key = LinkKey::parse(&HEX.replace('0', "1")).unwrap();
        assert_eq!(other_key.verify(&seg), None);
        assert_eq!(key.verify("nonsense"), None);
        assert_eq!(key.verify(&format!("{id}.")), None);
        assert!(!format!("{key:?}").contains("0011"));
    }

    #[test]
    fn urls_join_the_public_address() {
        assert_eq!(url("https://x.test/", "a.b"), "https://x.test/review/a.b");
    }
}
