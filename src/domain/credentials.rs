//! Credential formats: Application ID, Secret and API key; their hashes at rest.

use rand::distr::{Alphanumeric, SampleString};
use rand::rngs::SysRng;
use rand_core::UnwrapErr;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use subtle::ConstantTimeEq;

pub const APP_ID_PREFIX: &str = "app_";
pub const SECRET_PREFIX: &str = "kgs_";
pub const API_KEY_PREFIX: &str = "kg_";
pub const KEY_ID_PREFIX: &str = "key_";
pub const SECRET_ID_PREFIX: &str = "sec_";

/// 22 base62 characters carry 131 bits: unguessable, yet short enough to read.
const APP_ID_CHARS: usize = 22;
/// 44 base62 characters carry 262 bits (≥ 256).
const SECRET_CHARS: usize = 44;
/// Ids of a key or Secret are public handles, unique, not secrets.
const CREDENTIAL_ID_CHARS: usize = 16;
/// 30 base62 characters carry 178 bits (≥ 160).
const KEY_RANDOM_CHARS: usize = 30;
/// 62^6 > 2^32, so six characters hold any CRC32.
const KEY_CHECKSUM_CHARS: usize = 6;
pub const SECRET_LEN: usize = SECRET_PREFIX.len() + SECRET_CHARS;
pub const API_KEY_LEN: usize = API_KEY_PREFIX.len() + KEY_RANDOM_CHARS + KEY_CHECKSUM_CHARS;
/// How much of a secret may be shown to tell keys apart: the prefix and 4
/// random characters (24 bits), far too little to help a guess.
const DISPLAY_RANDOM_CHARS: usize = 4;

const BASE62: &[u8; 62] = b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";

/// Random base62 text from the operating system's generator. `UnwrapErr`
/// panics only if the kernel cannot supply randomness at all, which no input
/// can cause and no caller could recover from.
fn random_base62(len: usize) -> String {
    Alphanumeric.sample_string(&mut UnwrapErr(SysRng), len)
}

fn base62_fixed(mut value: u32, width: usize) -> String {
    let mut out = vec![b'0'; width];
    for slot in out.iter_mut().rev() {
        *slot = BASE62[(value % 62) as usize];
        value /= 62;
    }
    // Only base62 bytes were written.
    String::from_utf8_lossy(&out).into_owned()
}

fn checksum(body: &str) -> String {
    base62_fixed(crc32fast::hash(body.as_bytes()), KEY_CHECKSUM_CHARS)
}

/// The public identifier of an application (`app_…`).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct ApplicationId(String);

impl ApplicationId {
    pub fn generate() -> Self {
        Self(format!("{APP_ID_PREFIX}{}", random_base62(APP_ID_CHARS)))
    }

    pub fn parse(value: &str) -> Result<Self, CredentialFormatError> {
        let rest = value
            .strip_prefix(APP_ID_PREFIX)
            .ok_or(CredentialFormatError::MissingPrefix(APP_ID_PREFIX))?;
        if rest.len() != APP_ID_CHARS {
            return Err(CredentialFormatError::WrongLength);
        }
        if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return Err(CredentialFormatError::InvalidCharacter);
        }
        Ok(Self(value.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ApplicationId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl TryFrom<String> for ApplicationId {
    type Error = CredentialFormatError;
    fn try_from(value: String) -> Result<Self, Self::Error> {
        Self::parse(&value)
    }
}

impl From<ApplicationId> for String {
    fn from(id: ApplicationId) -> String {
        id.0
    }
}

/// A new public id for a stored key (`key_…`) or Secret (`sec_…`): what the
/// verify API and `/app show` name it by, since the hash is not for showing.
pub fn credential_id(prefix: &str) -> String {
    format!("{prefix}{}", random_base62(CREDENTIAL_ID_CHARS))
}

/// Why a string is not a well-formed credential.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CredentialFormatError {
    #[error("does not start with `{0}`")]
    MissingPrefix(&'static str),
    #[error("has the wrong length")]
    WrongLength,
    #[error("contains a character that is not a letter or digit")]
    InvalidCharacter,
    #[error("fails its checksum: mistyped or not issued by keygate")]
    BadChecksum,
}

/// The SHA-256 of a secret or key, hex-encoded: the only form kept at rest.
#[derive(Clone, PartialEq, Eq)]
pub struct CredentialHash(String);

impl CredentialHash {
    fn of(clear: &str) -> Self {
        Self(hex::encode(Sha256::digest(clear.as_bytes())))
    }

    /// Wraps a hash read back from the database.
    pub fn from_stored(hex: String) -> Self {
        Self(hex)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// Constant time, so a timing side channel tells nothing about how much of
    /// a candidate matched.
    pub fn matches(&self, other: &CredentialHash) -> bool {
        self.0.as_bytes().ct_eq(other.0.as_bytes()).into()
    }
}

impl fmt::Debug for CredentialHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // A hash is not the secret, but an unsalted hash of a leaked log line
        // is still worth nothing to print.
        f.write_str("CredentialHash([redacted])")
    }
}

/// Holders of a clear credential: they print only their display prefix.
macro_rules! clear_credential {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        pub struct $name(SecretString);

        impl $name {
            /// The clear value, for delivery to the requester and nothing else.
            pub fn expose(&self) -> &str {
                self.0.expose_secret()
            }

            pub fn hash(&self) -> CredentialHash {
                CredentialHash::of(self.expose())
            }

            /// The start of the value, safe to store and show to tell credentials apart.
            pub fn display_prefix(&self) -> String {
                let clear = self.expose();
                let end = clear
                    .find('_')
                    .map_or(0, |i| i + 1 + DISPLAY_RANDOM_CHARS)
                    .min(clear.len());
                clear[..end].to_owned()
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}({}…[redacted])", stringify!($name), self.display_prefix())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "{}…[redacted]", self.display_prefix())
            }
        }
    };
}

clear_credential! {
    /// An application's Secret (`kgs_…`), in clear: it exists only between
    /// issue and delivery.
    ClientSecret
}

clear_credential! {
    /// An API key (`kg_…` ending in a CRC32 checksum), in clear.
    ApiKey
}

impl ClientSecret {
    pub fn generate() -> Self {
        Self(format!("{SECRET_PREFIX}{}", random_base62(SECRET_CHARS)).into())
    }
}

/// Checks a presented Secret's shape without touching the database.
pub fn parse_client_secret(value: &str) -> Result<ClientSecret, CredentialFormatError> {
    let rest = value
        .strip_prefix(SECRET_PREFIX)
        .ok_or(CredentialFormatError::MissingPrefix(SECRET_PREFIX))?;
    if value.len() != SECRET_LEN {
        return Err(CredentialFormatError::WrongLength);
    }
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CredentialFormatError::InvalidCharacter);
    }
    Ok(ClientSecret(value.to_owned().into()))
}

impl ApiKey {
    pub fn generate() -> Self {
        let body = format!("{API_KEY_PREFIX}{}", random_base62(KEY_RANDOM_CHARS));
        let sum = checksum(&body);
        Self(format!("{body}{sum}").into())
    }
}

/// Checks a presented key's shape and checksum without touching the database,
/// so a scanner or the verify API can reject typos and forgeries cheaply.
pub fn parse_api_key(value: &str) -> Result<ApiKey, CredentialFormatError> {
    if !value.starts_with(API_KEY_PREFIX) {
        return Err(CredentialFormatError::MissingPrefix(API_KEY_PREFIX));
    }
    if value.len() != API_KEY_LEN {
        return Err(CredentialFormatError::WrongLength);
    }
    let rest = &value[API_KEY_PREFIX.len()..];
    if !rest.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(CredentialFormatError::InvalidCharacter);
    }
    let (body, sum) = value.split_at(API_KEY_LEN - KEY_CHECKSUM_CHARS);
    if checksum(body).as_bytes().ct_eq(sum.as_bytes()).into() {
        Ok(ApiKey(value.to_owned().into()))
    } else {
        Err(CredentialFormatError::BadChecksum)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_have_their_prefixes_and_lengths() {
        let id = ApplicationId::generate();
        assert!(id.as_str().starts_with("app_"));
        assert_eq!(ApplicationId::parse(id.as_str()), Ok(id.clone()));
        let secret = ClientSecret::generate();
        assert!(secret.expose().starts_with("kgs_"));
        assert_eq!(secret.expose().len(), 4 + 44);
        let key = ApiKey::generate();
        assert!(key.expose().starts_with("kg_"));
        assert_eq!(key.expose().len(), API_KEY_LEN);
        assert!(parse_api_key(key.expose()).is_ok());
        assert!(parse_client_secret(secret.expose()).is_ok());
        assert!(credential_id(KEY_ID_PREFIX).starts_with("key_"));
        assert_ne!(credential_id(KEY_ID_PREFIX), credential_id(KEY_ID_PREFIX));
    }

    #[test]
    fn malformed_secrets_say_why() {
        let secret = ClientSecret::generate();
        let clear = secret.expose();
        assert_eq!(
            parse_client_secret(&clear.replacen("kgs_", "kgx_", 1)).unwrap_err(),
            CredentialFormatError::MissingPrefix("kgs_")
        );
        assert_eq!(
            parse_client_secret(&clear[..clear.len() - 1]).unwrap_err(),
            CredentialFormatError::WrongLength
        );
        let mut bad = clear.to_owned();
        bad.replace_range(6..7, "-");
        assert_eq!(
            parse_client_secret(&bad).unwrap_err(),
            CredentialFormatError::InvalidCharacter
        );
    }

    #[test]
    fn random_parts_carry_enough_entropy() {
        let bits = |chars: usize| chars as f64 * 62f64.log2();
        assert!(bits(SECRET_CHARS) >= 256.0);
        assert!(bits(KEY_RANDOM_CHARS) >= 160.0);
        assert!(bits(APP_ID_CHARS) >= 128.0);
        // Two draws from a real generator never collide.
        assert_ne!(ApiKey::generate().expose(), ApiKey::generate().expose());
        assert_ne!(
            ClientSecret::generate().expose(),
            ClientSecret::generate().expose()
        );
    }

    #[test]
    fn any_single_changed_character_fails_the_checksum() {
        let key = ApiKey::generate();
        let clear = key.expose().to_owned();
        for i in API_KEY_PREFIX.len()..clear.len() {
            let mut bytes = clear.clone().into_bytes();
            bytes[i] = if bytes[i] == b'a' { b'b' } else { b'a' };
            let typo = String::from_utf8(bytes).unwrap();
            assert_eq!(
                parse_api_key(&typo).unwrap_err(),
                CredentialFormatError::BadChecksum,
                "position {i}"
            );
        }
    }

    #[test]
    fn malformed_keys_say_why() {
        let key = ApiKey::generate();
        let clear = key.expose();
        assert_eq!(
            parse_api_key(&clear.replacen("kg_", "kx_", 1)).unwrap_err(),
            CredentialFormatError::MissingPrefix("kg_")
        );
        assert_eq!(
            parse_api_key(&clear[..clear.len() - 1]).unwrap_err(),
            CredentialFormatError::WrongLength
        );
        let mut bad = clear.to_owned();
        bad.replace_range(5..6, "-");
        assert_eq!(
            parse_api_key(&bad).unwrap_err(),
            CredentialFormatError::InvalidCharacter
        );
        assert!(parse_api_key("").is_err());
        assert!(parse_api_key("kg_é").is_err());
    }

    #[test]
    fn clear_values_never_print() {
        let secret = ClientSecret::generate();
        let key = ApiKey::generate();
        for shown in [
            format!("{secret:?}"),
            format!("{secret}"),
            format!("{key:?}"),
            format!("{key}"),
            format!("{:?}", key.hash()),
        ] {
            assert!(!shown.contains(secret.expose()), "{shown}");
            assert!(!shown.contains(key.expose()), "{shown}");
            assert!(shown.contains("redacted"), "{shown}");
        }
        assert_eq!(key.display_prefix().len(), 3 + 4);
        assert!(key.expose().starts_with(&key.display_prefix()));
    }

    #[test]
    fn hashes_are_sha256_hex_and_compare_equal_only_to_themselves() {
        let key = ApiKey::generate();
        let h = key.hash();
        assert_eq!(h.as_str().len(), 64);
        assert!(h.matches(&CredentialHash::from_stored(h.as_str().to_owned())));
        assert!(!h.matches(&ApiKey::generate().hash()));
        assert!(!h.as_str().contains(key.expose()));
    }

    #[test]
    fn checksum_encoding_is_fixed_width() {
        assert_eq!(base62_fixed(0, 6), "000000");
        assert_eq!(base62_fixed(61, 6), "00000z");
        assert_eq!(base62_fixed(u32::MAX, 6), "4gfFC3");
    }
}
