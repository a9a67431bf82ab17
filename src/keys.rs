//! Fernet keys and the credentials they protect. Keys come only from
//! `COPYDESK_FERNET_KEYS`, comma-separated: the first encrypts, every one decrypts, so
//! rotation is "put the new key first, run `copydesk keys rotate`
//! (`store::settings::rotate`), then drop the old one". Nothing here prints a key or a
//! plaintext: [`Keys`] and [`Credentials`] have redacted `Debug` output. This module
//! does no SQL: the store keeps the tokens.

use fernet::{Fernet, MultiFernet};
use serde_json::{Map, Value};

/// The environment variable the keys come from.
pub const ENV: &str = "COPYDESK_FERNET_KEYS";

/// Why keys could not be used.
#[derive(Debug, Clone, thiserror::Error)]
pub enum KeyError {
    #[error(
        "{ENV} is not set: credentials are stored encrypted with Fernet keys; make one with `copydesk keys generate` and set {ENV}=<key>"
    )]
    Missing,
    #[error(
        "{ENV}: key {position} is not a Fernet key (32 bytes in URL-safe base64, as `copydesk keys generate` prints)"
    )]
    Invalid { position: usize },
    #[error(
        "{what} cannot be decrypted with any key in {ENV} (encrypted under a key that is not in the list, or the list is wrong)"
    )]
    Undecryptable { what: String },
}

/// The process's Fernet keys.
pub struct Keys {
    all: MultiFernet,
    count: usize,
}

impl std::fmt::Debug for Keys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keys({} keys, redacted)", self.count)
    }
}

impl Keys {
    /// Reads `COPYDESK_FERNET_KEYS`.
    pub fn from_env() -> Result<Self, KeyError> {
        Self::parse(&std::env::var(ENV).unwrap_or_default())
    }

    /// Parses a comma-separated key list; the first key encrypts.
    pub fn parse(list: &str) -> Result<Self, KeyError> {
        let keys: Vec<Fernet> = list
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .enumerate()
            .map(|(i, k)| Fernet::new(k).ok_or(KeyError::Invalid { position: i + 1 }))
            .collect::<Result<_, _>>()?;
        if keys.is_empty() {
            return Err(KeyError::Missing);
        }
        let count = keys.len();
        Ok(Self {
            all: MultiFernet::new(keys),
            count,
        })
    }

    /// A new random key, as `COPYDESK_FERNET_KEYS` takes it.
    pub fn generate() -> String {
        Fernet::generate_key()
    }

    pub fn encrypt(&self, plain: &[u8]) -> Vec<u8> {
        self.all.encrypt(plain).into_bytes()
    }

    /// Decrypts a token; `what` names the secret in the error.
    pub fn decrypt(&self, token: &[u8], what: &str) -> Result<Vec<u8>, KeyError> {
        let undecryptable = || KeyError::Undecryptable {
            what: what.to_owned(),
        };
        let token = std::str::from_utf8(token).map_err(|_| undecryptable())?;
        self.all.decrypt(token).map_err(|_| undecryptable())
    }

    pub fn encrypt_json(&self, value: &Value) -> Vec<u8> {
        self.encrypt(value.to_string().as_bytes())
    }

    pub fn decrypt_credentials(&self, token: &[u8], what: &str) -> Result<Credentials, KeyError> {
        let plain = self.decrypt(token, what)?;
        match serde_json::from_slice(&plain) {
            Ok(Value::Object(map)) => Ok(Credentials(map)),
            _ => Err(KeyError::Undecryptable {
                what: format!("{what} (decrypted, but not a JSON object)"),
            }),
        }
    }
}

/// A decrypted credentials object. Its `Debug` output names the fields, never a value.
#[derive(Clone, Default)]
pub struct Credentials(pub Map<String, Value>);

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let fields: Vec<&str> = self.0.keys().map(String::as_str).collect();
        write!(f, "Credentials({fields:?}, values redacted)")
    }
}

impl Credentials {
    /// A non-empty string field.
    pub fn get(&self, field: &str) -> Option<&str> {
        self.0
            .get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
    }

    /// Every string value long enough to be worth redacting from text we store or log.
    pub fn secret_values(&self) -> Vec<&str> {
        self.0
            .values()
            .filter_map(Value::as_str)
            .filter(|s| s.len() >= 6)
            .collect()
    }

    /// `text` with every secret value replaced by `***` (platform error messages
    /// sometimes echo what they were sent).
    pub fn redact(&self, text: &str) -> String {
        let mut out = text.to_owned();
        for s in self.secret_values() {
            out = out.replace(s, "***");
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_key_encrypts_all_decrypt_and_nothing_prints() {
        let (old, new) = (Keys::generate(), Keys::generate());
        let before = Keys::parse(&old).unwrap();
        let token = before.encrypt(br#"{"access_token":"tok-secret-1"}"#);
        let both = Keys::parse(&format!("{new}, {old}")).unwrap();
        let creds = both.decrypt_credentials(&token, "test").unwrap();
        assert_eq!(creds.get("access_token"), Some("tok-secret-1"));
        assert!(!format!("{creds:?} {both:?}").contains("tok-secret-1"));
        assert!(!format!("{both:?}").contains(&new));
        let again = both.encrypt(b"x");
        assert!(Keys::parse(&new).unwrap().decrypt(&again, "t").is_ok());
        let err = Keys::parse(&new)
            .unwrap()
            .decrypt(&token, "credentials of integration 7")
            .unwrap_err();
        assert!(err.to_string().contains("integration 7"), "{err}");
        assert!(matches!(Keys::parse(""), Err(KeyError::Missing)));
        assert!(matches!(
            Keys::parse(&format!("{new},nope")),
            Err(KeyError::Invalid { position: 2 })
        ));
    }

    #[test]
    fn redaction_removes_every_secret_value() {
        let c = Credentials(
            serde_json::json!({"username": "ed", "application_password": "abcd efgh ijkl"})
                .as_object()
                .unwrap()
                .clone(),
        );
        assert_eq!(c.redact("bad password abcd efgh ijkl"), "bad password ***");
    }
}
