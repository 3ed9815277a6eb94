//! Access: who may use the HTTP interface. What this module owns:
//!
//! - the roles ([`Role`]): `admin` (everything), `operator` (queues, requests, reports,
//!   metrics), `tenant:<id>` (posts messages as that tenant and reads its own requests),
//! - bearer tokens ([`Token`]): 32 bytes from the operating system's RNG, written
//!   `ab_<base64url>`, shown once when made and kept only as their SHA-256 ([`hash`]),
//! - checking a presented token: its form ([`Token::parse`]), then the stored hash
//!   compared in constant time ([`hashes_equal`]),
//! - the local token of the machine (`<data_dir>/local.token`, [`local_token`]): what
//!   `amtsbote queues` shows `serve`'s `/metrics` with. Whoever can read the data
//!   directory is an administrator of this installation already.
//!
//! The ledger stores the tokens (table `access_tokens`), `web::auth` says which route needs
//! which role, and `amtsbote token create/revoke/list` manages them.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine as _;
use sha2::{Digest, Sha256};

/// What a token may do.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Role {
    /// Everything.
    Admin,
    /// Queues, retry and discard, every request, reports, metrics; posts nothing.
    Operator,
    /// Posts messages as this tenant and reads its own requests; nothing else.
    Tenant(String),
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Role::Admin => f.write_str("admin"),
            Role::Operator => f.write_str("operator"),
            Role::Tenant(id) => write!(f, "tenant:{id}"),
        }
    }
}

/// Why a role, a token or a name cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AccessError {
    #[error("unknown role {0:?} (expected admin, operator or tenant:<id>)")]
    UnknownRole(String),
    #[error("role tenant:{0}: no tenant {0:?} is configured")]
    UnknownTenant(String),
    #[error("token name {0:?}: use 1 to 64 letters, digits, '.', '-' or '_'")]
    BadName(String),
    #[error("the operating system's random number generator failed: {0}")]
    Random(String),
    #[error("{path}: {cause}")]
    LocalToken { path: PathBuf, cause: String },
}

impl FromStr for Role {
    type Err = AccessError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            _ => match s.strip_prefix("tenant:") {
                Some(id) if !id.is_empty() && id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') => Ok(Role::Tenant(id.to_string())),
                _ => Err(AccessError::UnknownRole(s.to_string())),
            },
        }
    }
}

impl Role {
    /// A tenant's role must name a configured tenant.
    pub fn check_against(&self, tenants: &[crate::config::Tenant]) -> Result<(), AccessError> {
        match self {
            Role::Tenant(id) if !tenants.iter().any(|t| &t.id == id) => Err(AccessError::UnknownTenant(id.clone())),
            _ => Ok(()),
        }
    }
}

/// The text every token starts with: a token found in a file or a log is recognisable.
pub const TOKEN_PREFIX: &str = "ab_";
/// Random bytes in a token.
const TOKEN_BYTES: usize = 32;

/// A bearer token's text. The secret itself: `Debug` does not show it.
#[derive(Clone, PartialEq, Eq)]
pub struct Token(String);

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Token(***)")
    }
}

impl Token {
    /// A new token: [`TOKEN_BYTES`] from the operating system's RNG.
    pub fn generate() -> Result<Token, AccessError> {
        let mut bytes = [0u8; TOKEN_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| AccessError::Random(e.to_string()))?;
        Ok(Token(format!("{TOKEN_PREFIX}{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes))))
    }

    /// A token as presented: `ab_` and the base64url of exactly 32 bytes, else `None`.
    /// Only the form is checked here; whether it is known is the ledger's to say.
    pub fn parse(text: &str) -> Option<Token> {
        let encoded = text.strip_prefix(TOKEN_PREFIX)?;
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(encoded).ok()?;
        (bytes.len() == TOKEN_BYTES).then(|| Token(text.to_string()))
    }

    /// The text to hand to the user (once) or to send in `Authorization: Bearer`.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// What the ledger keeps of it ([`hash`]).
    pub fn sha256(&self) -> String {
        hash(&self.0)
    }
}

/// SHA-256 of a token's text, lower-case hex: what `access_tokens.token_sha256` holds.
///
/// A fast hash is enough here (no bcrypt or argon2): a token carries 256 random bits, so
/// its hash cannot be searched back to it the way a password's can.
pub fn hash(token: &str) -> String {
    hex::encode(Sha256::digest(token.as_bytes()))
}

/// Whether two hashes are equal, in time that does not depend on where they differ.
pub fn hashes_equal(a: &str, b: &str) -> bool {
    use subtle::ConstantTimeEq as _;
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

/// A token's name: 1 to 64 letters, digits, `.`, `-`, `_` (it is printed in lists and logs).
pub fn check_name(name: &str) -> Result<(), AccessError> {
    if (1..=64).contains(&name.len()) && name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_')) {
        Ok(())
    } else {
        Err(AccessError::BadName(name.to_string()))
    }
}

/// A name for a token made without one: the role and a few random characters
/// (`admin-3fa9c2d1`, `tenant-demo-07b1e4aa`).
pub fn default_name(role: &Role) -> Result<String, AccessError> {
    let mut bytes = [0u8; 4];
    getrandom::fill(&mut bytes).map_err(|e| AccessError::Random(e.to_string()))?;
    Ok(format!("{}-{}", role.to_string().replace(':', "-"), hex::encode(bytes)))
}

/// The file of the machine's local token under `data_dir`.
pub fn local_token_path(data_dir: &Path) -> PathBuf {
    data_dir.join("local.token")
}

/// The local token `serve` accepts with the rights of an operator: the one in
/// `<data_dir>/local.token`, or a new one written there (readable by its owner only) when
/// the file is missing or holds no token. Kept in the file, not in the ledger: processes
/// sharing a PostgreSQL ledger on other machines do not accept it, and serve processes on
/// one data directory share it.
pub fn local_token(data_dir: &Path) -> Result<Token, AccessError> {
    if let Some(token) = read_local_token(data_dir) {
        return Ok(token);
    }
    let path = local_token_path(data_dir);
    let failed = |cause: std::io::Error| AccessError::LocalToken { path: path.clone(), cause: cause.to_string() };
    let token = Token::generate()?;
    std::fs::create_dir_all(data_dir).map_err(failed)?;
    // Written under a unique name, then renamed: a reader never sees half a token, and two
    // processes starting at once each leave a whole one (the last rename wins; the loser
    // reads the file again below).
    let part = data_dir.join(format!(".local.token.{}.part", std::process::id()));
    {
        use std::io::Write as _;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create(true).truncate(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(&part).map_err(failed)?;
        file.write_all(format!("{}\n", token.expose()).as_bytes()).map_err(failed)?;
        file.sync_all().map_err(failed)?;
    }
    std::fs::rename(&part, &path).map_err(failed)?;
    Ok(read_local_token(data_dir).unwrap_or(token))
}

/// The local token, if `serve` has written one under `data_dir` (for `amtsbote queues`).
pub fn read_local_token(data_dir: &Path) -> Option<Token> {
    let text = std::fs::read_to_string(local_token_path(data_dir)).ok()?;
    Token::parse(text.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_read_and_print_alike() {
        for text in ["admin", "operator", "tenant:demo", "tenant:stadt_lemgo-2"] {
            assert_eq!(text.parse::<Role>().unwrap().to_string(), text);
        }
        for bad in ["", "root", "tenant:", "tenant:a b", "tenant:../x", "Admin"] {
            assert!(bad.parse::<Role>().is_err(), "{bad}");
        }
    }

    #[test]
    fn tokens_are_random_well_formed_and_recognised() {
        let a = Token::generate().unwrap();
        let b = Token::generate().unwrap();
        assert_ne!(a, b);
        assert!(a.expose().starts_with(TOKEN_PREFIX) && a.expose().len() == 3 + 43, "{}", a.expose());
        assert_eq!(Token::parse(a.expose()), Some(a.clone()));
        assert_eq!(format!("{a:?}"), "Token(***)");
        for bad in ["", "ab_", "xx_AAAA", &a.expose()[..40], &format!("{}A", a.expose()), &a.expose().replace("ab_", "AB_")] {
            assert!(Token::parse(bad).is_none(), "{bad}");
        }
    }

    #[test]
    fn hashes_compare_whole() {
        let h = hash("ab_x");
        assert_eq!(h.len(), 64);
        assert!(hashes_equal(&h, &hash("ab_x")));
        assert!(!hashes_equal(&h, &hash("ab_y")));
        assert!(!hashes_equal(&h, &h[..63]));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("prometheus.scrape-1_a").is_ok());
        for bad in ["", "a b", "x\ny", &"n".repeat(65)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let name = default_name(&Role::Tenant("demo".into())).unwrap();
        assert!(name.starts_with("tenant-demo-") && check_name(&name).is_ok(), "{name}");
    }

    #[test]
    fn the_local_token_is_made_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_local_token(dir.path()).is_none());
        let first = local_token(dir.path()).unwrap();
        assert_eq!(local_token(dir.path()).unwrap(), first);
        assert_eq!(read_local_token(dir.path()), Some(first));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(local_token_path(dir.path())).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
    }
}
