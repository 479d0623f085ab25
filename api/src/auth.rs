//! Authentication and authorization of API callers (SPEC §3, §5, §7).
//!
//! Callers send `Authorization: Bearer <JWT>` signed with HS256 and the
//! server's secret. [`JwtKeys`] mints and verifies such tokens; the
//! [`Principal`] extractor turns a request's token into verified [`Claims`]
//! and offers the checks handlers need: [`Principal::require`] (the role
//! column of the endpoint table), [`Principal::scope`] (tenant isolation:
//! another tenant's account is 404, so existence does not leak) and
//! [`Principal::own_account`] (the alias routes that take the account from the
//! token). [`load_secret`] resolves the secret: `LEDGER_JWT_SECRET`, else a
//! random one generated once into the data directory.

use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{FromRef, FromRequestParts};
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use axum::http::HeaderMap;
use events::{AccountId, Actor};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use tracing::{info, warn};

use crate::config::Config;
use crate::error::ApiError;

/// Shortest accepted JWT secret, in bytes (HS256's key is 32 bytes).
pub const JWT_SECRET_BYTES_MIN: usize = 32;
/// Random bytes in a generated secret (stored hex-encoded, so the stored
/// secret is twice as long).
pub const JWT_SECRET_GENERATED_BYTES: usize = 32;
/// Longest secret file read, in bytes: a secret, not a data file.
pub const JWT_SECRET_FILE_BYTES_MAX: u64 = 4096;
/// Name of the generated secret's file inside the data directory.
pub const JWT_SECRET_FILE_NAME: &str = "jwt-secret";
/// Clock skew tolerated on `exp`, in seconds.
pub const JWT_LEEWAY_SECONDS: u64 = 30;
/// Longest bearer token accepted, in bytes; ours are about 300.
pub const TOKEN_BYTES_MAX: usize = 4096;
/// Longest `sub` claim accepted, in bytes.
pub const SUBJECT_BYTES_MAX: usize = 255;
/// Longest lifetime `ledger-server token` mints, in seconds (365 days).
pub const TOKEN_TTL_SECONDS_MAX: u64 = 365 * 24 * 60 * 60;

/// Who a caller is. Spelled in snake_case on the wire, in `Display`/`FromStr`
/// and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
#[value(rename_all = "snake_case")]
pub enum Role {
    /// The cross-tenant superuser (the SaaS back end, finance tooling).
    Developer,
    Owner,
    Admin,
    Editor,
    Viewer,
    /// AI workers; scoped to one account when the token names one.
    SystemBot,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Developer,
        Role::Owner,
        Role::Admin,
        Role::Editor,
        Role::Viewer,
        Role::SystemBot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Developer => "developer",
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Editor => "editor",
            Role::Viewer => "viewer",
            Role::SystemBot => "system_bot",
        }
    }

    /// Dashboard roles belong to one tenant, so their tokens must name it.
    pub fn requires_account(self) -> bool {
        matches!(
            self,
            Role::Owner | Role::Admin | Role::Editor | Role::Viewer
        )
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown role {0:?}: expected developer, owner, admin, editor, viewer or system_bot")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownRole(s.to_owned()))
    }
}

/// The claims of an API token.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub role: Role,
    /// Required for owner/admin/editor/viewer, optional for system_bot (which
    /// it then scopes); a developer is cross-tenant whatever it says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub account_id: Option<AccountId>,
    /// Expiry, seconds since the Unix epoch.
    pub exp: i64,
    /// Issue time, seconds since the Unix epoch. SPEC §3 does not require it
    /// of other issuers, so a token without it reads as 0.
    #[serde(default)]
    pub iat: i64,
}

impl Claims {
    /// Claims issued at `now` (Unix seconds) that expire `ttl` later, checked
    /// like a verified token's.
    pub fn new(
        sub: impl Into<String>,
        role: Role,
        account_id: Option<AccountId>,
        now: i64,
        ttl: Duration,
    ) -> Result<Self, AuthError> {
        let ttl = i64::try_from(ttl.as_secs()).map_err(|_| AuthError::Malformed("ttl".into()))?;
        let exp = now
            .checked_add(ttl)
            .ok_or_else(|| AuthError::Malformed("exp overflows".into()))?;
        let claims = Self {
            sub: sub.into(),
            role,
            account_id,
            exp,
            iat: now,
        };
        claims.check()?;
        Ok(claims)
    }

    /// The rules the JWT library does not know: a subject, and an account for
    /// the dashboard roles.
    fn check(&self) -> Result<(), AuthError> {
        if self.sub.is_empty() || self.sub.len() > SUBJECT_BYTES_MAX {
            return Err(AuthError::Malformed(format!(
                "sub must be 1 to {SUBJECT_BYTES_MAX} bytes"
            )));
        }
        if self.role.requires_account() && self.account_id.is_none() {
            return Err(AuthError::AccountRequired { role: self.role });
        }
        Ok(())
    }
}

/// Why a token was refused. Every variant is a 401.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("the token has expired")]
    Expired,
    #[error("the token must be signed with HS256")]
    WrongAlgorithm,
    #[error("the token's signature is not valid")]
    BadSignature,
    #[error("the token is malformed: {0}")]
    Malformed(String),
    #[error("the token is longer than {TOKEN_BYTES_MAX} bytes")]
    TooLong,
    #[error("a {role} token must carry an account_id claim")]
    AccountRequired { role: Role },
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        ApiError::Unauthorized(e.to_string())
    }
}

/// The HS256 keys of the server's secret. `Debug` is redacted.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl JwtKeys {
    /// Keys for `secret`, which [`load_secret`] has checked to be at least
    /// [`JWT_SECRET_BYTES_MIN`] bytes.
    pub fn from_secret(secret: &[u8]) -> Self {
        debug_assert!(secret.len() >= JWT_SECRET_BYTES_MIN);
        // Only HS256 is accepted: the header's `alg` is checked against this
        // list before any key is used, which refuses `none`, HS384/HS512 and
        // the RS/ES families (the classic algorithm-confusion attacks).
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = JWT_LEEWAY_SECONDS;
        validation.validate_exp = true;
        validation.set_required_spec_claims(&["exp"]);
        Self {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// Signs `claims` with HS256. Does not check them, so tests can mint the
    /// tokens [`JwtKeys::verify`] must refuse; use [`Claims::new`] for real ones.
    pub fn mint(&self, claims: &Claims) -> String {
        // Serializing these plain claims and an HMAC over them cannot fail;
        // an error here is a bug in this module, not an operating condition.
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), claims, &self.encoding)
            .expect("HS256 signing of plain claims cannot fail")
    }

    /// The claims of a valid token: HS256, signed with this secret, not
    /// expired (beyond [`JWT_LEEWAY_SECONDS`]), well formed, and naming an
    /// account when its role needs one.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(AuthError::TooLong);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidAlgorithm | ErrorKind::InvalidAlgorithmName => {
                    AuthError::WrongAlgorithm
                }
                ErrorKind::InvalidSignature => AuthError::BadSignature,
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Malformed(format!("the {claim} claim is missing"))
                }
                // `alg: none` lands here: it is not an algorithm the
                // library can even parse.
                ErrorKind::Json(e) => AuthError::Malformed(e.to_string()),
                _ => AuthError::Malformed("not a JWT".into()),
            })?;
        data.claims.check()?;
        Ok(data.claims)
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKeys(HS256, ***)")
    }
}

/// A caller whose token has been verified: the only way to obtain one outside
/// this module is the extractor (or [`Principal::from_token`] for transports
/// other than HTTP, such as NATS message headers).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    claims: Claims,
}

impl Principal {
    /// Verifies a bare token (no `Bearer ` prefix).
    pub fn from_token(keys: &JwtKeys, token: &str) -> Result<Self, ApiError> {
        Ok(Self {
            claims: keys.verify(token)?,
        })
    }

    pub fn claims(&self) -> &Claims {
        &self.claims
    }

    pub fn role(&self) -> Role {
        self.claims.role
    }

    pub fn sub(&self) -> &str {
        &self.claims.sub
    }

    pub fn account_id(&self) -> Option<AccountId> {
        self.claims.account_id
    }

    /// The actor recorded in the metadata of the events this caller causes.
    pub fn actor(&self) -> Actor {
        Actor {
            sub: self.claims.sub.clone(),
            role: self.claims.role.to_string(),
        }
    }

    /// 403 unless the caller's role is one of `roles` (the endpoint table's
    /// role column).
    pub fn require(&self, roles: &[Role]) -> Result<(), ApiError> {
        if roles.contains(&self.claims.role) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "the {} role may not call this endpoint",
                self.claims.role
            )))
        }
    }

    /// `account` if this caller may touch it: a developer any account; a
    /// system_bot its own account, or any when its token names none; every
    /// other role only its own. Another tenant's account is 404, exactly as a
    /// missing one, so that a token cannot probe which accounts exist.
    pub fn scope(&self, account: AccountId) -> Result<AccountId, ApiError> {
        let allowed = match (self.claims.role, self.claims.account_id) {
            (Role::Developer, _) | (Role::SystemBot, None) => true,
            (_, Some(own)) => own == account,
            (_, None) => false,
        };
        if allowed {
            Ok(account)
        } else {
            Err(ApiError::NotFound("account not found".into()))
        }
    }

    /// [`Principal::require`] then [`Principal::scope`], the usual pair on
    /// `/v1/accounts/{id}/...` routes.
    pub fn authorize(&self, roles: &[Role], account: AccountId) -> Result<AccountId, ApiError> {
        self.require(roles)?;
        self.scope(account)
    }

    /// The account named by the token, for the alias routes (`/v1/billing/...`,
    /// `/v1/account/...`) that have no account in their path. A token naming
    /// none (a developer's, or an unscoped system_bot's) gets a 422 pointing
    /// at the canonical route.
    pub fn own_account(&self) -> Result<AccountId, ApiError> {
        self.claims.account_id.ok_or_else(|| {
            ApiError::invalid_field(
                "account_id",
                format!(
                    "this route takes the account from the token, and this {} token names none: \
                     use an account-scoped token or /v1/accounts/{{account_id}}/...",
                    self.claims.role
                ),
            )
        })
    }

    #[cfg(test)]
    fn for_tests(claims: Claims) -> Self {
        Self { claims }
    }
}

impl<S> FromRequestParts<S> for Principal
where
    Arc<JwtKeys>: FromRef<S>,
    S: Send + Sync,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let token = bearer_token(&parts.headers)?;
        let keys = Arc::<JwtKeys>::from_ref(state);
        Self::from_token(&keys, token)
    }
}

/// The token of the request's single `Authorization: Bearer` header.
fn bearer_token(headers: &HeaderMap) -> Result<&str, ApiError> {
    let unauthorized = |m: &str| ApiError::Unauthorized(m.to_owned());
    let mut values = headers.get_all(AUTHORIZATION).iter();
    let value = values.next().ok_or_else(|| {
        unauthorized("missing Authorization header: send Authorization: Bearer <token>")
    })?;
    if values.next().is_some() {
        return Err(unauthorized("send exactly one Authorization header"));
    }
    let value = value
        .to_str()
        .map_err(|_| unauthorized("the Authorization header is not ASCII"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
            let token = token.trim();
            if token.is_empty() {
                Err(unauthorized("the Bearer token is empty"))
            } else {
                Ok(token)
            }
        }
        _ => Err(unauthorized(
            "the Authorization header must be `Bearer <token>`",
        )),
    }
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
}

/// The server's JWT secret: `LEDGER_JWT_SECRET` (`--jwt-secret`) when set,
/// else the content of `<data dir>/jwt-secret`, which is generated once
/// (32 random bytes, hex-encoded, mode 0600) and reused afterwards, so that
/// tokens minted by `ledger-server token` verify in `ledger-server serve`.
///
/// The file's content, trimmed of surrounding whitespace, is the secret
/// exactly as `LEDGER_JWT_SECRET` would give it: setting the variable to the
/// file's content signs the same tokens.
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
    const OTHER_SECRET: &[u8] = b"another-hs256-secret-of-more-than-32-bytes";

    fn keys() -> JwtKeys {
        JwtKeys::from_secret(SECRET)
    }

    fn now() -> i64 {
        chrono::Utc::now().timestamp()
    }

    fn account(n: u128) -> AccountId {
        AccountId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn claims(role: Role, account_id: Option<AccountId>) -> Claims {
        Claims {
            sub: "user-1".into(),
            role,
            account_id,
            exp: now() + 3600,
            iat: now(),
        }
    }

    fn principal(role: Role, account_id: Option<AccountId>) -> Principal {
        Principal::for_tests(claims(role, account_id))
    }

    // --- tokens ---

    #[test]
    fn a_minted_token_verifies_to_the_same_claims() {
        for role in Role::ALL {
            let c = claims(role, Some(account(1)));
            assert_eq!(keys().verify(&keys().mint(&c)), Ok(c));
        }
        let bot = claims(Role::SystemBot, None);
        assert_eq!(keys().verify(&keys().mint(&bot)), Ok(bot));
    }

    #[test]
    fn claims_are_spelled_as_the_spec_says_on_the_wire() {
        let c = claims(Role::SystemBot, Some(account(7)));
        let json = serde_json::to_value(&c).unwrap();
        assert_eq!(json["role"], "system_bot");
        assert_eq!(json["account_id"], account(7).to_string());
        assert!(serde_json::to_value(claims(Role::Developer, None))
            .unwrap()
            .get("account_id")
            .is_none());
    }

    #[test]
    fn a_token_expired_beyond_the_leeway_is_refused() {
        let mut c = claims(Role::Developer, None);
        c.exp = now() - 3600;
        assert_eq!(keys().verify(&keys().mint(&c)), Err(AuthError::Expired));
        // Leeway is at most 30 s: 40 s late is too late.
        c.exp = now() - 40;
        assert_eq!(keys().verify(&keys().mint(&c)), Err(AuthError::Expired));
    }

    #[test]
    fn a_token_a_few_seconds_past_exp_is_accepted_as_clock_skew() {
        let mut c = claims(Role::Developer, None);
        c.exp = now() - 5;
        assert_eq!(keys().verify(&keys().mint(&c)), Ok(c));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = JwtKeys::from_secret(OTHER_SECRET).mint(&claims(Role::Developer, None));
        assert_eq!(keys().verify(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn a_token_whose_payload_was_swapped_is_refused() {
        let bot = keys().mint(&claims(Role::SystemBot, Some(account(1))));
        let dev = keys().mint(&claims(Role::Developer, None));
        let bot_parts: Vec<&str> = bot.split('.').collect();
        let dev_payload = dev.split('.').nth(1).unwrap();
        let forged = format!("{}.{}.{}", bot_parts[0], dev_payload, bot_parts[2]);
        assert_eq!(keys().verify(&forged), Err(AuthError::BadSignature));
    }

    #[test]
    fn a_token_signed_with_hs512_is_refused_even_with_the_right_secret() {
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(Role::Developer, None),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(keys().verify(&token), Err(AuthError::WrongAlgorithm));
    }

    #[test]
    fn a_token_with_alg_none_is_refused() {
        // base64url of {"alg":"none","typ":"JWT"}, with a valid payload and no
        // signature: the classic unsigned token.
        let header = "eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0";
        let payload = keys()
            .mint(&claims(Role::Developer, None))
            .split('.')
            .nth(1)
            .unwrap()
            .to_owned();
        for token in [
            format!("{header}.{payload}."),
            format!("{header}.{payload}"),
        ] {
            let refused = keys().verify(&token);
            assert!(
                matches!(refused, Err(AuthError::Malformed(_))),
                "{token}: {refused:?}"
            );
        }
    }

    #[test]
    fn garbage_is_refused_as_malformed() {
        let too_long = "a".repeat(TOKEN_BYTES_MAX + 1);
        for token in ["", "abc", "a.b.c", "....", "eyJ.eyJ.sig", "Bearer x"] {
            assert!(
                matches!(keys().verify(token), Err(AuthError::Malformed(_))),
                "{token:?} was not refused as malformed"
            );
        }
        assert_eq!(keys().verify(&too_long), Err(AuthError::TooLong));
    }

    #[test]
    fn a_token_with_an_unknown_role_is_refused() {
        #[derive(Serialize)]
        struct Raw {
            sub: &'static str,
            role: &'static str,
            exp: i64,
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &Raw {
                sub: "x",
                role: "root",
                exp: now() + 60,
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(
            keys().verify(&token),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn a_dashboard_token_without_an_account_is_refused() {
        for role in [Role::Owner, Role::Admin, Role::Editor, Role::Viewer] {
            let token = keys().mint(&claims(role, None));
            assert_eq!(
                keys().verify(&token),
                Err(AuthError::AccountRequired { role })
            );
        }
    }

    #[test]
    fn developer_and_system_bot_tokens_need_no_account() {
        for role in [Role::Developer, Role::SystemBot] {
            assert!(keys().verify(&keys().mint(&claims(role, None))).is_ok());
        }
    }

    #[test]
    fn a_token_without_a_subject_is_refused() {
        let mut c = claims(Role::Developer, None);
        c.sub.clear();
        assert!(matches!(
            keys().verify(&keys().mint(&c)),
            Err(AuthError::Malformed(_))
        ));
    }

    #[test]
    fn claims_new_sets_iat_and_exp_and_refuses_a_dashboard_role_without_account() {
        let c = Claims::new("cli", Role::SystemBot, None, 1_000, Duration::from_secs(60)).unwrap();
        assert_eq!((c.iat, c.exp), (1_000, 1_060));
        assert_eq!(
            Claims::new("cli", Role::Owner, None, 1_000, Duration::from_secs(60)),
            Err(AuthError::AccountRequired { role: Role::Owner })
        );
    }

    #[test]
    fn roles_round_trip_through_display_and_from_str() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>(), Ok(role));
            assert_eq!(
                serde_json::to_value(role).unwrap(),
                serde_json::Value::String(role.to_string())
            );
        }
        assert_eq!("system_bot".parse::<Role>(), Ok(Role::SystemBot));
        assert!("SystemBot".parse::<Role>().is_err());
    }

    #[test]
    fn keys_never_show_the_secret_in_debug_output() {
        let shown = format!("{:?}", keys());
        assert!(!shown.contains("hs256-test-secret"), "{shown}");
    }

    // --- authorization ---

    #[test]
    fn the_scope_matrix_holds_for_every_role() {
        let own = account(1);
        let other = account(2);
        let not_found = Err(ApiError::NotFound("account not found".into()));
        // (role, account claim, may touch own, may touch other)
        let cases = [
            (Role::Developer, None, true, true),
            (Role::Developer, Some(own), true, true),
            (Role::SystemBot, None, true, true),
            (Role::SystemBot, Some(own), true, false),
            (Role::Owner, Some(own), true, false),
            (Role::Admin, Some(own), true, false),
            (Role::Editor, Some(own), true, false),
            (Role::Viewer, Some(own), true, false),
        ];
        for (role, claim, may_own, may_other) in cases {
            let p = principal(role, claim);
            for (target, allowed) in [(own, may_own), (other, may_other)] {
                let expected = if allowed {
                    Ok(target)
                } else {
                    not_found.clone()
                };
                assert_eq!(p.scope(target), expected, "{role} {claim:?} -> {target}");
            }
        }
    }

    #[test]
    fn another_tenants_account_is_not_found_rather_than_forbidden() {
        let e = principal(Role::Owner, Some(account(1)))
            .scope(account(2))
            .unwrap_err();
        assert_eq!(e.status(), axum::http::StatusCode::NOT_FOUND);
        assert_eq!(e.code(), "not_found");
    }

    #[test]
    fn require_admits_only_the_listed_roles() {
        let roles = [Role::Developer, Role::SystemBot];
        for role in Role::ALL {
            let result = principal(role, Some(account(1))).require(&roles);
            if roles.contains(&role) {
                assert_eq!(result, Ok(()));
            } else {
                let e = result.unwrap_err();
                assert_eq!(e.status(), axum::http::StatusCode::FORBIDDEN, "{role}");
                assert!(e.to_string().contains(role.as_str()), "{e}");
            }
        }
    }

    #[test]
    fn authorize_checks_the_role_before_the_account() {
        let viewer = principal(Role::Viewer, Some(account(1)));
        assert_eq!(
            viewer.authorize(&[Role::Viewer], account(1)),
            Ok(account(1))
        );
        assert!(matches!(
            viewer.authorize(&[Role::Owner], account(1)),
            Err(ApiError::Forbidden(_))
        ));
        assert!(matches!(
            viewer.authorize(&[Role::Viewer], account(2)),
            Err(ApiError::NotFound(_))
        ));
    }

    #[test]
    fn own_account_is_the_token_account_or_a_422_for_unscoped_tokens() {
        for role in [
            Role::Owner,
            Role::Admin,
            Role::Editor,
            Role::Viewer,
            Role::SystemBot,
        ] {
            assert_eq!(
                principal(role, Some(account(3))).own_account(),
                Ok(account(3))
            );
        }
        for role in [Role::Developer, Role::SystemBot] {
            let e = principal(role, None).own_account().unwrap_err();
            assert_eq!(e.status(), axum::http::StatusCode::UNPROCESSABLE_ENTITY);
            assert_eq!(e.body()["error"]["details"]["field"], "account_id");
            assert!(e.to_string().contains("account-scoped token"), "{e}");
        }
    }

    #[test]
    fn the_actor_is_the_tokens_subject_and_role() {
        let actor = principal(Role::SystemBot, None).actor();
        assert_eq!(
            (actor.sub.as_str(), actor.role.as_str()),
            ("user-1", "system_bot")
        );
    }

    // --- the extractor ---

    async fn extract(authorization: &[&str]) -> Result<Principal, ApiError> {
        let mut request = Request::builder().uri("/v1/x");
        for value in authorization {
            request = request.header(AUTHORIZATION, *value);
        }
        let (mut parts, ()) = request.body(()).unwrap().into_parts();
        let state = Arc::new(keys());
        Principal::from_request_parts(&mut parts, &state).await
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
