//! Bearer tokens: HS256 JWTs with `sub`, `tenant`, `role`, `exp` (and `iat`).
//!
//! The tenant and role of every request come from a verified token and from nowhere
//! else. The signing secret comes from `WORKFLOWOPS_JWT_SECRET`, or from the file
//! `jwt-secret` in the data directory, generated (32 random bytes, mode 0600) the first
//! time the service or `workflowops token` needs it.

use std::path::{Path, PathBuf};
use std::time::Duration;

use aggregates::kernel::command::Role;
use aggregates::kernel::ids::TenantId;
use chrono::Utc;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// File name of the generated signing secret inside the data directory.
pub const SECRET_FILE: &str = "jwt-secret";

/// Shortest signing secret accepted (bytes): HS256 wants at least its output size.
pub const MIN_SECRET_BYTES: usize = 32;

/// The claims of a workflowops token.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    pub sub: String,
    pub tenant: String,
    pub role: String,
    pub exp: i64,
    pub iat: i64,
    /// Set only on a one-time console sign-in ticket ([`TICKET_PURPOSE`]), which is
    /// never accepted as a bearer token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub purpose: Option<String>,
    /// A ticket's id (each is redeemed once).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<String>,
    /// A ticket's session length in seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_ttl: Option<i64>,
}

/// The `purpose` of a console sign-in ticket.
pub const TICKET_PURPOSE: &str = "console-sign-in";
/// How long a sign-in ticket may wait to be used.
pub const TICKET_TTL: Duration = Duration::from_secs(10 * 60);

/// What a redeemed sign-in ticket grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ticket {
    pub principal: Principal,
    /// Its id: redeem it once.
    pub id: String,
    /// When it expires (Unix seconds): its id need not be remembered after.
    pub expires: i64,
    pub session_ttl: Duration,
}

/// Who is calling: what a verified token says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub subject: String,
    pub tenant: TenantId,
    pub role: Role,
}

/// Why a request is not authenticated (`UNAUTHENTICATED`). The messages say what to
/// fix and never echo the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token (send `Authorization: Bearer <token>`)")]
    Missing,
    #[error("malformed Authorization header (expected `Bearer <token>`)")]
    Malformed,
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// Why a token cannot be minted.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("invalid tenant: {0}")]
    Tenant(String),
    #[error("role must be viewer, developer or admin (got {0:?})")]
    Role(String),
    #[error("subject must not be empty")]
    Subject,
    #[error("could not sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs and verifies tokens with one secret.
#[derive(Clone)]
pub struct Auth {
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
}

impl std::fmt::Debug for Auth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Auth { .. }")
    }
}

impl Auth {
    pub fn new(secret: &[u8]) -> Auth {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.set_required_spec_claims(&["exp", "sub"]);
        Auth {
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation,
        }
    }

    /// A token for `subject` of `tenant` with `role`, valid for `ttl`.
    pub fn mint(
        &self,
        tenant: &str,
        role: &str,
        subject: &str,
        ttl: Duration,
    ) -> Result<String, MintError> {
        TenantId::parse(tenant).map_err(|e| MintError::Tenant(e.to_string()))?;
        let role = token_role(role).ok_or_else(|| MintError::Role(role.to_string()))?;
        if subject.trim().is_empty() {
            return Err(MintError::Subject);
        }
        let now = Utc::now().timestamp();
        let claims = Claims {
            sub: subject.to_string(),
            tenant: tenant.to_string(),
            role: role_name(role).to_string(),
            iat: now,
            exp: now.saturating_add(ttl.as_secs().min(i64::MAX as u64) as i64),
            purpose: None,
            jti: None,
            session_ttl: None,
        };
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// A one-time console sign-in ticket for `subject` of `tenant` with `role`,
    /// usable for [`TICKET_TTL`]; the session it opens lasts `session_ttl`. It is
    /// not a bearer token: [`Auth::verify`] refuses it.
    pub fn mint_ticket(
        &self,
        tenant: &str,
        role: &str,
        subject: &str,
        session_ttl: Duration,
    ) -> Result<String, MintError> {
        let token = self.mint(tenant, role, subject, TICKET_TTL)?;
        let mut claims = self
            .claims(&token)
            .map_err(|e| MintError::Tenant(e.to_string()))?;
        claims.purpose = Some(TICKET_PURPOSE.to_string());
        claims.jti = Some(uuid::Uuid::new_v4().to_string());
        claims.session_ttl = Some(session_ttl.as_secs().min(i64::MAX as u64) as i64);
        Ok(jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &self.encoding,
        )?)
    }

    /// Verifies a sign-in ticket (signature, expiry, purpose). The caller redeems
    /// its id once.
    pub fn verify_ticket(&self, ticket: &str) -> Result<Ticket, AuthError> {
        let claims = self.claims(ticket)?;
        let (Some(TICKET_PURPOSE), Some(id), Some(ttl)) = (
            claims.purpose.as_deref(),
            claims.jti.clone(),
            claims.session_ttl,
        ) else {
            return Err(AuthError::Invalid("not a sign-in ticket".into()));
        };
        let expires = claims.exp;
        let principal = principal_of(claims)?;
        Ok(Ticket {
            principal,
            id,
            expires,
            session_ttl: Duration::from_secs(ttl.max(0) as u64),
        })
    }

    /// Verifies a token's signature, algorithm and expiry, and reads its claims.
    pub fn verify(&self, token: &str) -> Result<Principal, AuthError> {
        let claims = self.claims(token)?;
        if claims.purpose.is_some() {
            return Err(AuthError::Invalid(
                "a sign-in ticket is not a bearer token".into(),
            ));
        }
        principal_of(claims)
    }

    fn claims(&self, token: &str) -> Result<Claims, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm must be HS256".into()),
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Invalid(format!("missing claim {claim:?}"))
                }
                ErrorKind::Json(_) => AuthError::Invalid("unreadable claims".into()),
                _ => AuthError::Invalid("not a token".into()),
            })?;
        Ok(data.claims)
    }

    /// Verifies the token of an `Authorization` header value.
    pub fn verify_header(&self, header: Option<&str>) -> Result<Principal, AuthError> {
        let header = header.ok_or(AuthError::Missing)?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .map(str::trim)
            .filter(|t| !t.is_empty())
            .ok_or(AuthError::Malformed)?;
        self.verify(token)
    }
}

/// The principal a verified token's claims name.
fn principal_of(claims: Claims) -> Result<Principal, AuthError> {
    let tenant = TenantId::parse(&claims.tenant)
        .map_err(|_| AuthError::Invalid("invalid tenant claim".into()))?;
    let role =
        token_role(&claims.role).ok_or_else(|| AuthError::Invalid("invalid role claim".into()))?;
    if claims.sub.trim().is_empty() {
        return Err(AuthError::Invalid("empty subject".into()));
    }
    Ok(Principal {
        subject: claims.sub,
        tenant,
        role,
    })
}

/// Roles a token may carry: `system` is for the service's own jobs, never a token.
fn token_role(name: &str) -> Option<Role> {
    match name {
        "viewer" => Some(Role::Viewer),
        "developer" => Some(Role::Developer),
        "admin" => Some(Role::Admin),
        _ => None,
    }
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Developer => "developer",
        Role::Admin => "admin",
        Role::System => "system",
    }
}

/// Where the signing secret came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretSource {
    Environment,
    File(PathBuf),
    /// Generated now and kept in this file.
    Generated(PathBuf),
}

/// Loads the signing secret: `configured` (from the environment) if set, else the
/// data directory's file, generated when missing.
pub fn load_secret(
    configured: Option<&str>,
    data_dir: &Path,
) -> anyhow::Result<(Vec<u8>, SecretSource)> {
    load_key(configured, "WORKFLOWOPS_JWT_SECRET", data_dir, SECRET_FILE)
}

/// A service key: `configured` (the value of `variable`) if set, else the data
/// directory's `file` (hex), generated (0600) when missing. At least
/// [`MIN_SECRET_BYTES`] bytes either way.
pub fn load_key(
    configured: Option<&str>,
    variable: &str,
    data_dir: &Path,
    file: &str,
) -> anyhow::Result<(Vec<u8>, SecretSource)> {
    if let Some(secret) = configured.filter(|s| !s.is_empty()) {
        anyhow::ensure!(
            secret.len() >= MIN_SECRET_BYTES,
            "{variable} must be at least {MIN_SECRET_BYTES} bytes"
        );
        return Ok((secret.as_bytes().to_vec(), SecretSource::Environment));
    }
    let path = data_dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(text) => {
            let secret = hex::decode(text.trim())
                .map_err(|_| anyhow::anyhow!("{} is not a hex-encoded secret", path.display()))?;
            anyhow::ensure!(
                secret.len() >= MIN_SECRET_BYTES,
                "{} holds a secret shorter than {MIN_SECRET_BYTES} bytes",
                path.display()
            );
            Ok((secret, SecretSource::File(path)))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::create_dir_all(data_dir)?;
            let mut secret = vec![0u8; MIN_SECRET_BYTES];
            getrandom::getrandom(&mut secret)
                .map_err(|e| anyhow::anyhow!("no randomness for {file}: {e}"))?;
            write_private(&path, &hex::encode(&secret))?;
            Ok((secret, SecretSource::Generated(path)))
        }
        Err(e) => Err(anyhow::anyhow!("cannot read {}: {e}", path.display())),
    }
}

/// Creates `path` readable by its owner only; fails if it already exists (two
/// processes starting at once: the loser reads the winner's secret next start).
fn write_private(path: &Path, contents: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path)?;
    file.write_all(contents.as_bytes())?;
    file.write_all(b"\n")?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    #[test]
    fn minted_tokens_verify_with_their_claims() {
        let auth = Auth::new(SECRET);
        let token = auth
            .mint("acme", "developer", "dev@acme", Duration::from_secs(60))
            .unwrap();
        let who = auth.verify(&token).unwrap();
        assert_eq!(who.subject, "dev@acme");
        assert_eq!(who.tenant.as_str(), "acme");
        assert_eq!(who.role, Role::Developer);
        assert_eq!(
            auth.verify_header(Some(&format!("Bearer {token}"))),
            Ok(who)
        );
    }

    #[test]
    fn bad_tokens_are_refused_with_a_reason() {
        let auth = Auth::new(SECRET);
        let other = Auth::new(b"another secret, also 32 bytes long!");
        let token = other
            .mint("acme", "admin", "mallory", Duration::from_secs(60))
            .unwrap();
        assert_eq!(
            auth.verify(&token),
            Err(AuthError::Invalid("bad signature".into()))
        );
        assert_eq!(auth.verify_header(None), Err(AuthError::Missing));
        assert_eq!(
            auth.verify_header(Some("Basic abc")),
            Err(AuthError::Malformed)
        );
        assert!(matches!(auth.verify("x.y.z"), Err(AuthError::Invalid(_))));

        // Expired (no leeway).
        let now = Utc::now().timestamp();
        let expired = Claims {
            sub: "a".into(),
            tenant: "acme".into(),
            role: "admin".into(),
            iat: now - 120,
            exp: now - 60,
            ..Default::default()
        };
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &expired,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(auth.verify(&token), Err(AuthError::Expired));

        // Another algorithm, a `system` role, a bad tenant.
        let claims = Claims {
            exp: now + 60,
            ..expired
        };
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(matches!(auth.verify(&hs512), Err(AuthError::Invalid(_))));
        for (role, tenant) in [("system", "acme"), ("admin", "Not A Tenant!")] {
            let forged = Claims {
                role: role.into(),
                tenant: tenant.into(),
                ..claims.clone()
            };
            let token = jsonwebtoken::encode(
                &Header::new(Algorithm::HS256),
                &forged,
                &EncodingKey::from_secret(SECRET),
            )
            .unwrap();
            assert!(matches!(auth.verify(&token), Err(AuthError::Invalid(_))));
        }
        // An unsigned token.
        let unsigned = format!(
            "{}.{}.",
            hex_free_b64(r#"{"alg":"none","typ":"JWT"}"#),
            hex_free_b64(&serde_json::to_string(&claims).unwrap())
        );
        assert!(matches!(auth.verify(&unsigned), Err(AuthError::Invalid(_))));
    }

    fn hex_free_b64(text: &str) -> String {
        // base64url without padding, enough for the test.
        const TABLE: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let bytes = text.as_bytes();
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n =
                chunk.iter().fold(0u32, |acc, b| (acc << 8) | *b as u32) << (8 * (3 - chunk.len()));
            for i in 0..=chunk.len() {
                out.push(TABLE[((n >> (18 - 6 * i)) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn minting_refuses_system_roles_and_bad_tenants() {
        let auth = Auth::new(SECRET);
        let day = Duration::from_secs(86_400);
        assert!(matches!(
            auth.mint("acme", "system", "x", day),
            Err(MintError::Role(_))
        ));
        assert!(matches!(
            auth.mint("", "admin", "x", day),
            Err(MintError::Tenant(_))
        ));
        assert!(matches!(
            auth.mint("acme", "admin", " ", day),
            Err(MintError::Subject)
        ));
    }

    #[test]
    fn the_secret_is_generated_once_and_kept_private() {
        let dir = tempfile::tempdir().unwrap();
        let (first, source) = load_secret(None, dir.path()).unwrap();
        assert!(matches!(source, SecretSource::Generated(_)));
        assert_eq!(first.len(), MIN_SECRET_BYTES);
        let (again, source) = load_secret(None, dir.path()).unwrap();
        assert_eq!(again, first);
        assert!(matches!(source, SecretSource::File(_)));
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(SECRET_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let (env, source) = load_secret(Some(&"s".repeat(40)), dir.path()).unwrap();
        assert_eq!(env, "s".repeat(40).into_bytes());
        assert_eq!(source, SecretSource::Environment);
        assert!(load_secret(Some("short"), dir.path()).is_err());
    }
}
