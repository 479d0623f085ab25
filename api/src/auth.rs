//! Authentication of HTTP callers and the server's JWT secret (SPEC §3,
//! §5, §7).
//!
//! Tokens, claims, roles and the checks on a caller live in
//! [`app::caller`], shared by every transport; this module is HTTP's side:
//! the [`Principal`] extractor reads the request's single
//! `Authorization: Bearer` header into a verified [`Caller`].
//! [`load_secret`] resolves the secret: `LEDGER_JWT_SECRET`, else a random
//! one generated once into the data directory. [`parse_ttl`] reads
//! `ledger-server token --ttl`.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use tracing::{info, warn};

pub use app::caller::{
    AuthError, Caller, Claims, JwtKeys, Role, Target, UnknownRole, JWT_LEEWAY_SECONDS,
    JWT_SECRET_BYTES_MIN, SUBJECT_BYTES_MAX, TOKEN_BYTES_MAX,
};

use crate::config::Config;
use crate::error::ApiError;
use crate::AppState;

/// Random bytes in a generated secret (stored hex-encoded, so the stored
/// secret is twice as long).
pub const JWT_SECRET_GENERATED_BYTES: usize = 32;
/// Longest secret file read, in bytes: a secret, not a data file.
pub const JWT_SECRET_FILE_BYTES_MAX: u64 = 4096;
/// Name of the generated secret's file inside the data directory.
pub const JWT_SECRET_FILE_NAME: &str = "jwt-secret";
/// Longest lifetime `ledger-server token` mints, in seconds (365 days).
pub const TOKEN_TTL_SECONDS_MAX: u64 = 365 * 24 * 60 * 60;

/// The verified caller of an HTTP request (an extractor): a request without
/// exactly one valid `Authorization: Bearer` header is 401 before any
/// handler runs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal(pub Caller);

impl std::ops::Deref for Principal {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let caller = verified_caller(parts, &state.jwt)?;
        // The roster check: an account's member, with the roster's role.
        Ok(Self(app::team::admit(&state.app, caller).await?))
    }
}

/// The caller of the request's one `Authorization: Bearer` header: the
/// rate limiter's answer for this exact header when it has one, else the
/// token verified here.
fn verified_caller(parts: &Parts, keys: &JwtKeys) -> Result<Caller, ApiError> {
    let authorization = single_authorization(parts)?;
    let verified = parts
        .extensions
        .get::<Verified>()
        .filter(|v| Some(v.authorization.as_str()) == authorization)
        .map(|v| v.caller.clone());
    match verified {
        Some(caller) => Ok(caller),
        None => Ok(Caller::from_authorization(keys, authorization)?),
    }
}

/// The caller of the one route any signed token may call, whatever its
/// role's account requirement and without the roster check: accepting an
/// invitation (`POST /v1/team/invitations/accept`), which the invitee
/// calls before they belong to the account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AnySigned(pub Caller);

impl std::ops::Deref for AnySigned {
    type Target = Caller;
    fn deref(&self) -> &Caller {
        &self.0
    }
}

impl FromRequestParts<AppState> for AnySigned {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let authorization = single_authorization(parts)?;
        Ok(Self(Caller::from_authorization_any(
            &state.jwt,
            authorization,
        )?))
    }
}

/// A caller the rate limiter already verified from this exact
/// `Authorization` header, kept in the request's extensions so that the
/// token's signature is checked once per request.
#[derive(Debug, Clone)]
pub struct Verified {
    pub authorization: String,
    pub caller: Caller,
}

/// The request's one `Authorization` header, as text; 401 for two, or one
/// that is not ASCII.
fn single_authorization(parts: &Parts) -> Result<Option<&str>, ApiError> {
    let mut values = parts.headers.get_all(AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(ApiError::Unauthorized(
            "send exactly one Authorization header".into(),
        ));
    }
    value
        .to_str()
        .map(Some)
        .map_err(|_| ApiError::Unauthorized("the Authorization header is not ASCII".into()))
}

/// Why a `--ttl` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TtlError {
    #[error("{0:?} is not a duration: write a whole number and a unit (s, m, h or d), like 90s, 30m, 1h or 7d")]
    Malformed(String),
    #[error("the TTL must be longer than zero")]
    Zero,
    #[error("{0:?} is longer than the maximum of 365 days")]
    TooLong(String),
}

/// Parses a token lifetime: `90s`, `30m`, `1h`, `7d`; more than zero and at
/// most [`TOKEN_TTL_SECONDS_MAX`].
pub fn parse_ttl(input: &str) -> Result<Duration, TtlError> {
    let malformed = || TtlError::Malformed(input.to_owned());
    let s = input.trim();
    let unit = s.chars().last().ok_or_else(malformed)?;
    let number = &s[..s.len() - unit.len_utf8()];
    let unit_seconds: u64 = match unit {
        's' => 1,
        'm' => 60,
        'h' => 60 * 60,
        'd' => 24 * 60 * 60,
        _ => return Err(malformed()),
    };
    if number.is_empty() || !number.bytes().all(|b| b.is_ascii_digit()) {
        return Err(malformed());
    }
    // All digits, so a parse failure can only be a number too large for u64.
    let count: u64 = number
        .parse()
        .map_err(|_| TtlError::TooLong(input.to_owned()))?;
    let seconds = count
        .checked_mul(unit_seconds)
        .ok_or_else(|| TtlError::TooLong(input.to_owned()))?;
    if seconds == 0 {
        return Err(TtlError::Zero);
    }
    if seconds > TOKEN_TTL_SECONDS_MAX {
        return Err(TtlError::TooLong(input.to_owned()));
    }
    Ok(Duration::from_secs(seconds))
}

/// Why the JWT secret could not be had. No variant holds the secret.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    #[error(
        "LEDGER_JWT_SECRET (--jwt-secret) is {len} bytes; it must be at least \
         {JWT_SECRET_BYTES_MIN} bytes, for example the output of `openssl rand -hex 32`"
    )]
    TooShort { len: usize },
    #[error(
        "the JWT secret in {path} is {len} bytes; it must be between {JWT_SECRET_BYTES_MIN} and \
         {JWT_SECRET_FILE_BYTES_MAX} bytes. Set LEDGER_JWT_SECRET, or delete the file to generate \
         a new secret (tokens signed with the old one then stop working)"
    )]
    BadFile { path: PathBuf, len: u64 },
    #[error("creating the data directory {path}: {source}")]
    DataDir { path: PathBuf, source: io::Error },
    #[error("reading the JWT secret from {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("writing a new JWT secret to {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("the operating system's random source failed: {0}")]
    Random(getrandom::Error),
    #[error("LEDGER_JWT_KEYS (--jwt-keys): {0}")]
    Keys(String),
}

/// The server's JWT secret: `LEDGER_JWT_SECRET` (`--jwt-secret`) when set,
/// else the content of `<data dir>/jwt-secret`, which is generated once
/// (32 random bytes, hex-encoded, mode 0600) and reused afterwards, so that
/// tokens minted by `ledger-server token` verify in `ledger-server serve`.
///
/// The file's content, trimmed of surrounding whitespace, is the secret
/// exactly as `LEDGER_JWT_SECRET` would give it: setting the variable to the
/// file's content signs the same tokens.
/// The verification keys of the configuration: the signing secret, the
/// extra `kid=secret` pairs of `LEDGER_JWT_KEYS` (each at least
/// [`JWT_SECRET_BYTES_MIN`] bytes, at most [`app::caller::JWT_EXTRA_KEYS_MAX`]
/// of them), and the revocation list.
pub fn load_keys(
    config: &Config,
    revocations: app::caller::Revocations,
) -> Result<JwtKeys, SecretError> {
    let mut keys = JwtKeys::from_secret(&load_secret(config)?).with_revocations(revocations);
    let Some(extra) = &config.jwt_keys else {
        return Ok(keys);
    };
    let pairs: Vec<&str> = extra
        .expose()
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .collect();
    if pairs.len() > app::caller::JWT_EXTRA_KEYS_MAX {
        return Err(SecretError::Keys(format!(
            "at most {} keys",
            app::caller::JWT_EXTRA_KEYS_MAX
        )));
    }
    for pair in pairs {
        let Some((kid, secret)) = pair.split_once('=') else {
            return Err(SecretError::Keys("each entry must be kid=secret".into()));
        };
        let kid = kid.trim();
        if kid.is_empty() || secret.len() < JWT_SECRET_BYTES_MIN {
            return Err(SecretError::Keys(format!(
                "key {kid:?}: a key id and a secret of at least {JWT_SECRET_BYTES_MIN} bytes"
            )));
        }
        keys = keys.with_key(kid, secret.as_bytes());
    }
    Ok(keys)
}

pub fn load_secret(config: &Config) -> Result<Vec<u8>, SecretError> {
    if let Some(secret) = &config.jwt_secret {
        let secret = secret.expose().as_bytes();
        if secret.len() < JWT_SECRET_BYTES_MIN {
            return Err(SecretError::TooShort { len: secret.len() });
        }
        return Ok(secret.to_vec());
    }
    let dir = config.data_dir();
    fs::create_dir_all(&dir).map_err(|source| SecretError::DataDir {
        path: dir.clone(),
        source,
    })?;
    let path = dir.join(JWT_SECRET_FILE_NAME);
    match read_secret_file(&path) {
        Err(SecretError::Read { source, .. }) if source.kind() == io::ErrorKind::NotFound => {}
        found => return found,
    }
    match create_secret_file(&dir, &path)? {
        Some(secret) => {
            info!(path = %path.display(), "generated a new JWT secret");
            Ok(secret)
        }
        // Another process created it first; everybody uses that one.
        None => read_secret_file(&path),
    }
}

fn read_secret_file(path: &Path) -> Result<Vec<u8>, SecretError> {
    let read_error = |source| SecretError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    let mode = file.metadata().map_err(read_error)?.permissions().mode();
    if mode & 0o077 != 0 {
        warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "the JWT secret file is readable by other users; chmod 600 it"
        );
    }
    let mut content = Vec::new();
    file.take(JWT_SECRET_FILE_BYTES_MAX + 1)
        .read_to_end(&mut content)
        .map_err(read_error)?;
    let secret = content.trim_ascii();
    let len = u64::try_from(secret.len()).unwrap_or(u64::MAX);
    let whole_file_read =
        u64::try_from(content.len()).unwrap_or(u64::MAX) <= JWT_SECRET_FILE_BYTES_MAX;
    if secret.len() < JWT_SECRET_BYTES_MIN || !whole_file_read {
        return Err(SecretError::BadFile {
            path: path.to_owned(),
            len,
        });
    }
    Ok(secret.to_vec())
}

/// Writes a new random secret to `path` unless the file exists: `Some` with
/// the secret when this call created it, `None` when another process won.
///
/// The secret is written and synced under a unique temporary name (created
/// with `create_new` and mode 0600), then published with `link`, which fails
/// when `path` exists. So two processes starting together agree on one
/// secret, and no reader ever sees a half-written file. A crash before the
/// clean-up can leave a `.jwt-secret.*.tmp` file behind, never a partial
/// `jwt-secret`.
fn create_secret_file(dir: &Path, path: &Path) -> Result<Option<Vec<u8>>, SecretError> {
    let mut random = [0u8; JWT_SECRET_GENERATED_BYTES];
    getrandom::fill(&mut random).map_err(SecretError::Random)?;
    let secret = hex::encode(random).into_bytes();

    let tmp = dir.join(format!(
        ".{JWT_SECRET_FILE_NAME}.{}.tmp",
        uuid::Uuid::new_v4().simple()
    ));
    let write_error = |source| SecretError::Write {
        path: path.to_owned(),
        source,
    };
    let written = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .and_then(|mut file| {
            file.write_all(&secret)?;
            file.sync_all()
        });
    if let Err(e) = written {
        let _ = fs::remove_file(&tmp);
        return Err(write_error(e));
    }
    let linked = fs::hard_link(&tmp, path);
    // The temporary name is only a staging area; losing it is harmless.
    let _ = fs::remove_file(&tmp);
    match linked {
        Ok(()) => {
            // Persist the new directory entry too, so that a crash cannot
            // forget the secret after tokens were minted with it.
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(write_error)?;
            Ok(Some(secret))
        }
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(None),
        Err(e) => Err(write_error(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Cli;
    use axum::http::Request;
    use clap::Parser;

    const SECRET: &[u8] = b"an-hs256-test-secret-of-more-than-32-bytes";

    fn keys() -> JwtKeys {
        JwtKeys::from_secret(SECRET)
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn account(n: u128) -> events::AccountId {
        events::AccountId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn claims(role: Role, account_id: Option<events::AccountId>) -> Claims {
        Claims {
            sub: "user-1".into(),
            role,
            account_id,
            exp: now() + 3600,
            iat: now(),
            jti: None,
        }
    }

    // --- the extractor ---

    async fn extract(authorization: &[&str]) -> Result<Caller, ApiError> {
        let mut request = Request::builder().uri("/v1/x");
        for value in authorization {
            request = request.header(AUTHORIZATION, *value);
        }
        let (parts, ()) = request.body(()).unwrap().into_parts();
        verified_caller(&parts, &keys())
    }

    #[tokio::test]
    async fn the_extractor_accepts_a_valid_bearer_token() {
        let c = claims(Role::Owner, Some(account(1)));
        let token = keys().mint(&c);
        let p = extract(&[&format!("Bearer {token}")]).await.unwrap();
        assert_eq!(p.claims(), &c);
        // The scheme is case-insensitive (RFC 9110 §11.1).
        assert!(extract(&[&format!("bearer {token}")]).await.is_ok());
    }

    #[tokio::test]
    async fn the_extractor_answers_401_for_a_missing_or_bad_header() {
        let token = keys().mint(&claims(Role::Developer, None));
        let expired = keys().mint(&Claims {
            exp: now() - 3600,
            ..claims(Role::Developer, None)
        });
        let cases: Vec<Vec<String>> = vec![
            vec![],
            vec![token.clone()],
            vec![format!("Basic {token}")],
            vec!["Bearer ".into()],
            vec!["Bearer not-a-jwt".into()],
            vec![format!("Bearer {expired}")],
            vec![format!("Bearer {token}"), format!("Bearer {token}")],
        ];
        for headers in cases {
            let headers: Vec<&str> = headers.iter().map(String::as_str).collect();
            let e = extract(&headers).await.unwrap_err();
            assert_eq!(
                e.status(),
                axum::http::StatusCode::UNAUTHORIZED,
                "{headers:?}"
            );
            assert_eq!(e.code(), "unauthorized");
        }
        let e = extract(&[&format!("Bearer {expired}")]).await.unwrap_err();
        assert_eq!(e, ApiError::Unauthorized("the token has expired".into()));
    }

    // --- TTL ---

    #[test]
    fn ttls_take_a_whole_number_and_a_unit() {
        let cases = [
            ("90s", 90),
            ("30m", 30 * 60),
            ("1h", 3600),
            ("7d", 7 * 86_400),
            ("365d", 365 * 86_400),
            (" 2h ", 7200),
        ];
        for (input, seconds) in cases {
            assert_eq!(
                parse_ttl(input),
                Ok(Duration::from_secs(seconds)),
                "{input}"
            );
        }
    }

    #[test]
    fn ttls_of_zero_garbage_or_beyond_a_year_are_refused() {
        assert_eq!(parse_ttl("0s"), Err(TtlError::Zero));
        assert_eq!(parse_ttl("0d"), Err(TtlError::Zero));
        for input in [
            "", "h", "1", "1w", "-1h", "+1h", "1.5h", "1 h", "1hh", "abc", "1é",
        ] {
            assert_eq!(
                parse_ttl(input),
                Err(TtlError::Malformed(input.to_owned())),
                "{input:?}"
            );
        }
        for input in [
            "366d",
            "8785h",
            "99999999999999999999999s",
            "18446744073709551615d",
        ] {
            assert_eq!(parse_ttl(input), Err(TtlError::TooLong(input.to_owned())));
        }
        assert!(TtlError::Malformed("x".into())
            .to_string()
            .contains("90s, 30m, 1h or 7d"));
    }

    // --- the secret ---

    fn config(args: &[&str]) -> Config {
        let mut argv = vec!["ledger-server"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().config
    }

    #[test]
    fn the_secret_file_is_created_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("nested/data");
        let c = config(&["--data-dir", data.to_str().unwrap()]);
        let first = load_secret(&c).unwrap();
        let file = data.join(JWT_SECRET_FILE_NAME);
        let mode = fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(first.len(), 2 * JWT_SECRET_GENERATED_BYTES);
        assert!(first.iter().all(u8::is_ascii_hexdigit));
        assert_eq!(fs::read(&file).unwrap(), first);
        // The second call reads what the first one wrote.
        assert_eq!(load_secret(&c).unwrap(), first);
        // And no staging file is left behind.
        assert_eq!(fs::read_dir(&data).unwrap().count(), 1);
    }

    #[test]
    fn two_data_dirs_get_two_different_secrets() {
        let a = tempfile::tempdir().unwrap();
        let b = tempfile::tempdir().unwrap();
        let secret = |d: &tempfile::TempDir| {
            load_secret(&config(&["--data-dir", d.path().to_str().unwrap()])).unwrap()
        };
        assert_ne!(secret(&a), secret(&b));
    }

    #[test]
    fn processes_starting_together_agree_on_one_secret() {
        let dir = tempfile::tempdir().unwrap();
        let c = config(&["--data-dir", dir.path().to_str().unwrap()]);
        let secrets: Vec<Vec<u8>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..8)
                .map(|_| s.spawn(|| load_secret(&c).unwrap()))
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        assert!(secrets.windows(2).all(|w| w[0] == w[1]));
    }

    #[test]
    fn the_secret_file_sits_beside_the_sqlite_database_by_default() {
        let dir = tempfile::tempdir().unwrap();
        let url = format!("sqlite://{}/db/ledger.db", dir.path().display());
        load_secret(&config(&["--database-url", &url])).unwrap();
        assert!(dir.path().join("db").join(JWT_SECRET_FILE_NAME).exists());
    }

    #[test]
    fn a_configured_secret_wins_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "s".repeat(JWT_SECRET_BYTES_MIN);
        let c = config(&[
            "--data-dir",
            dir.path().to_str().unwrap(),
            "--jwt-secret",
            &secret,
        ]);
        assert_eq!(load_secret(&c).unwrap(), secret.as_bytes());
        assert!(!dir.path().join(JWT_SECRET_FILE_NAME).exists());
    }

    #[test]
    fn a_configured_secret_shorter_than_32_bytes_is_refused() {
        let short = "s".repeat(JWT_SECRET_BYTES_MIN - 1);
        let e = load_secret(&config(&["--jwt-secret", &short])).unwrap_err();
        assert!(matches!(e, SecretError::TooShort { len: 31 }), "{e:?}");
        let message = e.to_string();
        assert!(message.contains("at least 32 bytes"), "{message}");
        assert!(!message.contains(&short), "the secret leaked: {message}");
    }

    #[test]
    fn a_truncated_secret_file_is_refused_with_a_way_out() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join(JWT_SECRET_FILE_NAME), "short\n").unwrap();
        let e = load_secret(&config(&["--data-dir", dir.path().to_str().unwrap()])).unwrap_err();
        assert!(matches!(e, SecretError::BadFile { len: 5, .. }), "{e:?}");
        assert!(e.to_string().contains("delete the file"), "{e}");
    }

    #[test]
    fn a_hand_written_secret_file_is_used_without_its_newline() {
        let dir = tempfile::tempdir().unwrap();
        let secret = "h".repeat(40);
        fs::write(dir.path().join(JWT_SECRET_FILE_NAME), format!("{secret}\n")).unwrap();
        let loaded = load_secret(&config(&["--data-dir", dir.path().to_str().unwrap()])).unwrap();
        assert_eq!(loaded, secret.as_bytes());
    }
}
