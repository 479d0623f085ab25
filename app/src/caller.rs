//! Who asks: the caller of a use case, whatever the transport.
//!
//! Callers present a JWT signed with HS256 and the server's secret (SPEC
//! §3). [`JwtKeys`] mints and verifies such tokens; a [`Caller`] is a
//! verified token and offers the checks use cases need:
//! [`Caller::require`] (the role column of the endpoint table, see
//! [`crate::access`]), [`Caller::scope`] (tenant isolation: another tenant's
//! account is 404, so existence does not leak; this is the one place that
//! decides it) and [`Caller::own_account`] (the alias routes that take the
//! account from the token). HTTP reads the token from its `Authorization`
//! header, NATS from the message's; both call [`Caller::from_authorization`].

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use events::{AccountId, Actor};
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::error::AppError;

/// Shortest accepted JWT secret, in bytes (HS256's key is 32 bytes).
pub const JWT_SECRET_BYTES_MIN: usize = 32;
/// Clock skew tolerated on `exp`, in seconds.
pub const JWT_LEEWAY_SECONDS: u64 = 30;
/// Longest bearer token accepted, in bytes; ours are about 300.
pub const TOKEN_BYTES_MAX: usize = 4096;
/// Longest `sub` claim accepted, in bytes.
pub const SUBJECT_BYTES_MAX: usize = 255;

/// Who a caller is. Spelled in snake_case on the wire, in `Display`/`FromStr`
/// and on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
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
    /// The token's id, by which it can be revoked
    /// (`POST /v1/admin/tokens/revoke`). Optional for other issuers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
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
            jti: Some(uuid::Uuid::new_v4().to_string()),
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
    #[error("the token's key id is not one this server knows")]
    UnknownKey,
    #[error("the token has been revoked")]
    Revoked,
}

/// The ids (`jti`) of revoked tokens: shared by the keys that verify
/// tokens and the use case that revokes them, reloaded from the store by
/// [`crate::jobs`].
#[derive(Debug, Clone, Default)]
pub struct Revocations(std::sync::Arc<std::sync::RwLock<std::collections::HashSet<String>>>);

impl Revocations {
    pub fn contains(&self, jti: &str) -> bool {
        self.0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .contains(jti)
    }

    pub fn insert(&self, jti: String) {
        self.0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(jti);
    }

    /// Replaces the whole list (what the store holds).
    pub fn replace(&self, all: impl IntoIterator<Item = String>) {
        let mut set = self.0.write().unwrap_or_else(|p| p.into_inner());
        set.clear();
        set.extend(all);
    }
}

impl From<AuthError> for AppError {
    fn from(e: AuthError) -> Self {
        AppError::Unauthorized(e.to_string())
    }
}

/// The HS256 keys of the server's secret. `Debug` is redacted.
///
/// Rotation: more verification secrets can be added by key id
/// ([`JwtKeys::with_key`]). A token whose header names a `kid` is checked
/// with that key alone; a token without one with the signing secret, then
/// with each extra key, so tokens issued before a rotation stay valid
/// until they expire or their secret is removed.
pub struct JwtKeys {
    encoding: EncodingKey,
    decoding: DecodingKey,
    extra: Vec<(String, DecodingKey)>,
    validation: Validation,
    revoked: Revocations,
}

/// Most extra verification keys.
pub const JWT_EXTRA_KEYS_MAX: usize = 16;

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
            extra: Vec::new(),
            validation,
            revoked: Revocations::default(),
        }
    }

    /// Also accepts tokens signed with `secret` under key id `kid`.
    pub fn with_key(mut self, kid: &str, secret: &[u8]) -> Self {
        self.extra
            .push((kid.to_owned(), DecodingKey::from_secret(secret)));
        self
    }

    /// Refuses the tokens whose `jti` is in `revoked`.
    pub fn with_revocations(mut self, revoked: Revocations) -> Self {
        self.revoked = revoked;
        self
    }

    /// The revocation list these keys check.
    pub fn revocations(&self) -> &Revocations {
        &self.revoked
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
        self.verify_with(token, true)
    }

    /// [`JwtKeys::verify`], the account requirement of the role checked
    /// only when `require_account`.
    pub fn verify_with(&self, token: &str, require_account: bool) -> Result<Claims, AuthError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(AuthError::TooLong);
        }
        let kid = jsonwebtoken::decode_header(token).ok().and_then(|h| h.kid);
        let keys: Vec<&DecodingKey> = match &kid {
            Some(kid) => vec![self
                .extra
                .iter()
                .find(|(k, _)| k == kid)
                .map(|(_, key)| key)
                .ok_or(AuthError::UnknownKey)?],
            None => std::iter::once(&self.decoding)
                .chain(self.extra.iter().map(|(_, key)| key))
                .collect(),
        };
        let mut decoded = jsonwebtoken::decode::<Claims>(token, keys[0], &self.validation);
        for key in &keys[1..] {
            match &decoded {
                Err(e) if matches!(e.kind(), ErrorKind::InvalidSignature) => {
                    decoded = jsonwebtoken::decode::<Claims>(token, key, &self.validation);
                }
                _ => break,
            }
        }
        let data = decoded.map_err(|e| match e.kind() {
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
        match data.claims.check() {
            Err(AuthError::AccountRequired { .. }) if !require_account => {}
            checked => checked?,
        }
        if data
            .claims
            .jti
            .as_deref()
            .is_some_and(|jti| self.revoked.contains(jti))
        {
            return Err(AuthError::Revoked);
        }
        Ok(data.claims)
    }
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("JwtKeys(HS256, ***)")
    }
}

/// Which account a request is about: one it names (`/v1/accounts/{id}/…`),
/// or the caller's own (the plan's alias routes, `/v1/billing/…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Account(AccountId),
    Own,
}

/// A caller whose token has been verified: the only ways to obtain one are
/// [`Caller::from_token`] and [`Caller::from_authorization`] (and, inside
/// this crate, [`Caller::system`] for the server's own jobs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    claims: Claims,
}

impl Caller {
    /// Verifies a bare token (no `Bearer ` prefix).
    pub fn from_token(keys: &JwtKeys, token: &str) -> Result<Self, AppError> {
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
    pub fn require(&self, roles: &[Role]) -> Result<(), AppError> {
        if roles.contains(&self.claims.role) {
            Ok(())
        } else {
            Err(AppError::Forbidden(format!(
                "the {} role may not call this endpoint",
                self.claims.role
            )))
        }
    }

    /// `account` if this caller may touch it: a developer any account; a
    /// system_bot its own account, or any when its token names none; every
    /// other role only its own. Another tenant's account is 404, exactly as a
    /// missing one, so that a token cannot probe which accounts exist.
    pub fn scope(&self, account: AccountId) -> Result<AccountId, AppError> {
        let allowed = match (self.claims.role, self.claims.account_id) {
            (Role::Developer, _) | (Role::SystemBot, None) => true,
            (_, Some(own)) => own == account,
            (_, None) => false,
        };
        if allowed {
            Ok(account)
        } else {
            Err(AppError::NotFound("account not found".into()))
        }
    }

    /// [`Caller::require`] then [`Caller::scope`], the usual pair on
    /// `/v1/accounts/{id}/...` routes.
    pub fn authorize(&self, roles: &[Role], account: AccountId) -> Result<AccountId, AppError> {
        self.require(roles)?;
        self.scope(account)
    }

    /// The account named by the token, for the alias routes (`/v1/billing/...`,
    /// `/v1/account/...`) that have no account in their path. A token naming
    /// none (a developer's, or an unscoped system_bot's) gets a 422 pointing
    /// at the canonical route.
    pub fn own_account(&self) -> Result<AccountId, AppError> {
        self.claims.account_id.ok_or_else(|| {
            AppError::invalid_field(
                "account_id",
                format!(
                    "this route takes the account from the token, and this {} token names none: \
                     use an account-scoped token or /v1/accounts/{{account_id}}/...",
                    self.claims.role
                ),
            )
        })
    }

    /// Verifies an `Authorization` header's value (`Bearer <token>`, the
    /// scheme case-insensitive): the one reading of a token both transports
    /// use, so both answer the same 401s.
    pub fn from_authorization(keys: &JwtKeys, value: Option<&str>) -> Result<Self, AppError> {
        let unauthorized = |m: &str| AppError::Unauthorized(m.to_owned());
        let value = value.ok_or_else(|| {
            unauthorized("missing Authorization header: send Authorization: Bearer <token>")
        })?;
        match value.split_once(' ') {
            Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => {
                let token = token.trim();
                if token.is_empty() {
                    Err(unauthorized("the Bearer token is empty"))
                } else {
                    Self::from_token(keys, token)
                }
            }
            _ => Err(unauthorized(
                "the Authorization header must be `Bearer <token>`",
            )),
        }
    }

    /// The server acting on its own behalf (jobs, webhooks): a developer
    /// whose `sub` names the job.
    pub fn system(name: &str) -> Self {
        Self {
            claims: Claims {
                sub: name.to_owned(),
                role: Role::Developer,
                account_id: None,
                exp: i64::MAX,
                iat: 0,
                jti: None,
            },
        }
    }

    /// The account a request is about, if this caller may run a use case
    /// of `roles` on it: [`Caller::authorize`] for a named account,
    /// [`Caller::require`] then [`Caller::own_account`] for the alias
    /// routes.
    pub fn target(&self, roles: &[Role], target: Target) -> Result<AccountId, AppError> {
        match target {
            Target::Account(account) => self.authorize(roles, account),
            Target::Own => {
                self.require(roles)?;
                self.own_account()
            }
        }
    }

    /// [`Caller::target`] for a write with a body, checked in the order
    /// every write checks them: the role, then the body, then (alias
    /// routes) the token's account.
    pub fn target_with_body<T: serde::de::DeserializeOwned>(
        &self,
        roles: &[Role],
        target: Target,
        input: crate::input::Input<T>,
    ) -> Result<(AccountId, T), AppError> {
        let named = match target {
            Target::Account(a) => Some(self.authorize(roles, a)?),
            Target::Own => {
                self.require(roles)?;
                None
            }
        };
        let body = input.parse()?.value;
        let account = match named {
            Some(a) => a,
            None => self.own_account()?,
        };
        Ok((account, body))
    }

    /// This caller acting with `role` instead of its token's: the roster
    /// check's answer (docs/adr/0017).
    pub(crate) fn with_role(mut self, role: Role) -> Self {
        self.claims.role = role;
        self
    }

    /// Verifies a token whatever its role's account requirement: the one
    /// route that takes any signed token (accepting an invitation, which the
    /// invitee's token cannot name an account for yet).
    pub fn from_authorization_any(keys: &JwtKeys, value: Option<&str>) -> Result<Self, AppError> {
        let unauthorized = |m: &str| AppError::Unauthorized(m.to_owned());
        let value = value.ok_or_else(|| {
            unauthorized("missing Authorization header: send Authorization: Bearer <token>")
        })?;
        match value.split_once(' ') {
            Some((scheme, token))
                if scheme.eq_ignore_ascii_case("bearer") && !token.trim().is_empty() =>
            {
                Ok(Self {
                    claims: keys.verify_with(token.trim(), false)?,
                })
            }
            _ => Err(unauthorized(
                "the Authorization header must be `Bearer <token>`",
            )),
        }
    }

    #[cfg(test)]
    pub(crate) fn for_tests(claims: Claims) -> Self {
        Self { claims }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
            jti: None,
        }
    }

    fn caller(role: Role, account_id: Option<AccountId>) -> Caller {
        Caller::for_tests(claims(role, account_id))
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
        let not_found = Err(AppError::NotFound("account not found".into()));
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
            let p = caller(role, claim);
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
        let e = caller(Role::Owner, Some(account(1)))
            .scope(account(2))
            .unwrap_err();
        assert_eq!(e.status(), crate::error::status::NOT_FOUND);
        assert_eq!(e.code(), "not_found");
    }

    #[test]
    fn require_admits_only_the_listed_roles() {
        let roles = [Role::Developer, Role::SystemBot];
        for role in Role::ALL {
            let result = caller(role, Some(account(1))).require(&roles);
            if roles.contains(&role) {
                assert_eq!(result, Ok(()));
            } else {
                let e = result.unwrap_err();
                assert_eq!(e.status(), crate::error::status::FORBIDDEN, "{role}");
                assert!(e.to_string().contains(role.as_str()), "{e}");
            }
        }
    }

    #[test]
    fn authorize_checks_the_role_before_the_account() {
        let viewer = caller(Role::Viewer, Some(account(1)));
        assert_eq!(
            viewer.authorize(&[Role::Viewer], account(1)),
            Ok(account(1))
        );
        assert!(matches!(
            viewer.authorize(&[Role::Owner], account(1)),
            Err(AppError::Forbidden(_))
        ));
        assert!(matches!(
            viewer.authorize(&[Role::Viewer], account(2)),
            Err(AppError::NotFound(_))
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
            assert_eq!(caller(role, Some(account(3))).own_account(), Ok(account(3)));
        }
        for role in [Role::Developer, Role::SystemBot] {
            let e = caller(role, None).own_account().unwrap_err();
            assert_eq!(e.status(), crate::error::status::UNPROCESSABLE_ENTITY);
            assert_eq!(e.body()["error"]["details"]["field"], "account_id");
            assert!(e.to_string().contains("account-scoped token"), "{e}");
        }
    }

    #[test]
    fn the_actor_is_the_tokens_subject_and_role() {
        let actor = caller(Role::SystemBot, None).actor();
        assert_eq!(
            (actor.sub.as_str(), actor.role.as_str()),
            ("user-1", "system_bot")
        );
    }

    #[test]
    fn an_authorization_value_is_read_the_same_way_for_every_transport() {
        let c = claims(Role::Owner, Some(account(1)));
        let token = keys().mint(&c);
        let ok = Caller::from_authorization(&keys(), Some(&format!("Bearer {token}"))).unwrap();
        assert_eq!(ok.claims(), &c);
        // The scheme is case-insensitive (RFC 9110 §11.1).
        assert!(Caller::from_authorization(&keys(), Some(&format!("bearer {token}"))).is_ok());
        for bad in [
            None,
            Some(token.as_str()),
            Some("Bearer "),
            Some("Basic x"),
            Some("Bearer not-a-jwt"),
        ] {
            let e = Caller::from_authorization(&keys(), bad).unwrap_err();
            assert_eq!(e.code(), "unauthorized", "{bad:?}");
        }
    }

    #[test]
    fn a_kid_picks_its_key_and_old_tokens_survive_a_rotation() {
        let rotated = JwtKeys::from_secret(OTHER_SECRET).with_key("old", SECRET);
        // A token of the old secret without a kid: tried with each key.
        let old = keys().mint(&claims(Role::Developer, None));
        assert!(rotated.verify(&old).is_ok());
        // A kid names its key.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("old".into());
        let named = jsonwebtoken::encode(
            &header,
            &claims(Role::Developer, None),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(rotated.verify(&named).is_ok());
        header.kid = Some("nope".into());
        let unknown = jsonwebtoken::encode(
            &header,
            &claims(Role::Developer, None),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(rotated.verify(&unknown), Err(AuthError::UnknownKey));
        // A token of neither secret is still refused.
        let stranger = JwtKeys::from_secret(b"a-third-secret-that-nobody-configured-here")
            .mint(&claims(Role::Developer, None));
        assert_eq!(rotated.verify(&stranger), Err(AuthError::BadSignature));
    }

    #[test]
    fn a_revoked_token_id_is_refused() {
        let revoked = Revocations::default();
        let keys = keys().with_revocations(revoked.clone());
        let c = Claims::new(
            "bot-1",
            Role::SystemBot,
            None,
            now(),
            Duration::from_secs(60),
        )
        .unwrap();
        let jti = c.jti.clone().expect("minted tokens carry an id");
        let token = keys.mint(&c);
        assert!(keys.verify(&token).is_ok());
        revoked.insert(jti);
        assert_eq!(keys.verify(&token), Err(AuthError::Revoked));
    }
}
