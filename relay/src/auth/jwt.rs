//! JWT verification: turns a bearer token into the permissions, expiry and subject it carries,
//! or a typed refusal. Called by the [`Authenticator`](super::Authenticator) for every
//! connection that presents a token and for every `auth` (token refresh) message.
//!
//! # Rules
//!
//! - The algorithm is fixed by configuration (`HS256`, `RS256` or `EdDSA`); the token's `alg`
//!   header must name exactly that algorithm (case-sensitive), so `none` in any spelling, a
//!   HS256 token signed with an RSA public key (algorithm confusion) or an RS256 token on a
//!   HS256 relay are all refused before any cryptography runs.
//! - One key per relay: `kid`, `jku`, `jwk`, `x5u` and `x5c` headers are ignored (never
//!   fetched, never used to pick a key); a token signed by another key fails its signature. A
//!   `crit` header is refused (RFC 7515 §4.1.11: we understand no extension).
//! - Tokens longer than [`MAX_TOKEN_BYTES`] are refused unparsed.
//! - `exp` is required and has **no leeway**: a token is accepted while `now < exp`, which is
//!   exactly the time a live connection is kept open (closed with 4004 at `exp`, see
//!   [`until_expired`]). `nbf` is honoured with [`NBF_LEEWAY_SECS`] (5 s) of leeway, so an
//!   issuer whose clock runs slightly ahead does not produce tokens that fail at first use.
//! - `aud` (string or array) must contain `--jwt-audience` and `iss` must equal
//!   `--jwt-issuer` when those are configured; otherwise they are not checked.
//! - Claims are only looked at after the signature verified. Error messages never contain the
//!   token.
//!
//! # Claims
//!
//! ```json
//! { "sub": "user-42", "exp": 1767225600, "nbf": 1767222000,
//!   "aud": "tidewire", "iss": "https://auth.example.com",
//!   "tidewire": { "read": ["board:42/*", "todos"], "write": ["board:42/chat"] } }
//! ```
//!
//! Top-level `read` / `write` arrays are accepted too (and united with the `tidewire` ones).
//! Pattern syntax: see [`Pattern`](super::Pattern). An entry may also be
//! `{"stream": pattern, "where": filter}`: only the records the filter matches. Patterns and
//! filters may hold `{sub}` / `{claims.name}` placeholders filled from the token's claims
//! (see [`claims`](super::claims)):
//!
//! ```json
//! { "sub": "u1", "boards": [7, 9],
//!   "tidewire": { "read": ["board:{claims.boards}/*", {"stream": "tasks", "where": {"owner": "{sub}"}}],
//!                 "write": [{"stream": "tasks", "where": {"owner": "{sub}"}}] } }
//! ```

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde_json::{Map, Value};

use std::sync::Arc;

use tidewire_shared::Filter;

use super::{Pattern, Permissions, Rule};
use crate::config::Options;

/// Longest token accepted, in bytes. Longer ones are refused before any parsing.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Leeway on `nbf`, in seconds: a token whose `nbf` is at most this far in the future is
/// already accepted.
pub const NBF_LEEWAY_SECS: u64 = 5;

/// Leeway on `exp`, in seconds: none (see the module docs).
pub const EXP_LEEWAY_SECS: u64 = 0;

/// HMAC secrets shorter than this are accepted with a warning (RFC 7518 §3.2 asks for at least
/// the hash size).
const MIN_SECRET_BYTES: usize = 32;

/// The JWT algorithms a relay can be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret (`--jwt-secret`).
    Hs256,
    /// RSASSA-PKCS1-v1_5 with SHA-256, verified with an RSA public key (`--jwt-public-key`).
    Rs256,
    /// Ed25519, verified with an Ed25519 public key (`--jwt-public-key`).
    EdDsa,
}

impl JwtAlgorithm {
    /// Parses the `--jwt-algorithm` value (`HS256`, `RS256`, `EdDSA`; case-insensitive).
    ///
    /// # Errors
    ///
    /// [`JwtKeyError::UnknownAlgorithm`] for anything else.
    pub fn parse(text: &str) -> Result<Self, JwtKeyError> {
        match text.trim().to_ascii_uppercase().as_str() {
            "HS256" => Ok(Self::Hs256),
            "RS256" => Ok(Self::Rs256),
            "EDDSA" => Ok(Self::EdDsa),
            _ => Err(JwtKeyError::UnknownAlgorithm(text.to_owned())),
        }
    }

    /// The name in the JOSE header (`alg`), exactly as a token must spell it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Rs256 => "RS256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn jsonwebtoken(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Rs256 => Algorithm::RS256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

/// The JWT options cannot work (reported at startup).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JwtKeyError {
    /// `--jwt-algorithm` names no supported algorithm.
    #[error("unknown JWT algorithm {0:?} (expected HS256, RS256 or EdDSA)")]
    UnknownAlgorithm(String),
    /// `--jwt-secret` is empty.
    #[error("--jwt-secret is empty")]
    EmptySecret,
    /// Both a secret and a public key are configured.
    #[error("set either --jwt-secret or --jwt-public-key, not both")]
    BothKeys,
    /// The algorithm does not fit the kind of key configured.
    #[error("--jwt-algorithm {algorithm} needs {needs}")]
    Mismatch {
        /// The configured algorithm.
        algorithm: &'static str,
        /// The option it needs instead.
        needs: &'static str,
    },
    /// A JWT option is set but no key is, so it would have no effect.
    #[error("--{0} needs --jwt-secret or --jwt-public-key")]
    WithoutKey(&'static str),
    /// The public key file cannot be read.
    #[error("cannot read --jwt-public-key {path}: {source}")]
    Read {
        /// The configured path.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The public key file is not a PEM public key of the algorithm's kind.
    #[error("--jwt-public-key is not a PEM {algorithm} public key: {reason}")]
    Pem {
        /// The configured algorithm.
        algorithm: &'static str,
        /// What the PEM parser said.
        reason: String,
    },
}

/// Why a token was refused. Every variant maps to `unauthorized` (HTTP 401, close 4001).
/// Messages never contain the token.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum JwtError {
    /// The token is longer than [`MAX_TOKEN_BYTES`].
    #[error("token is longer than {max} bytes")]
    TooLong {
        /// The limit.
        max: usize,
    },
    /// Not three base64url parts, or a part that does not decode.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// The `alg` header is not the configured algorithm (this covers `none`).
    #[error("token algorithm is not accepted: this relay accepts {expected} only")]
    Algorithm {
        /// The configured algorithm.
        expected: &'static str,
    },
    /// The header has a `crit` parameter.
    #[error("token has a crit header parameter this relay does not understand")]
    Critical,
    /// The signature does not verify with the configured key.
    #[error("token signature does not verify")]
    Signature,
    /// There is no `exp` claim.
    #[error("token has no exp claim")]
    MissingExpiry,
    /// `exp` has passed.
    #[error("token expired")]
    Expired,
    /// `nbf` is in the future.
    #[error("token is not valid yet (nbf)")]
    NotYetValid,
    /// `aud` does not contain the configured audience.
    #[error("token audience does not match")]
    Audience,
    /// `iss` is not the configured issuer.
    #[error("token issuer does not match")]
    Issuer,
    /// A claim has the wrong type or a stream pattern does not parse.
    #[error("invalid token claims: {0}")]
    Claims(String),
    /// Signing failed (only [`sign_hs256`]).
    #[error("cannot sign token: {0}")]
    Sign(String),
}

/// What a verified token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedToken {
    /// The token's read and write patterns (without the anonymous ones).
    pub permissions: Permissions,
    /// The token's `exp`, in seconds since the Unix epoch.
    pub expires_at: u64,
    /// The token's `sub`, if any.
    pub subject: Option<String>,
}

/// Verifies tokens with the one configured key and algorithm.
///
/// `Debug` shows the algorithm, audience and issuer, never the key.
#[derive(Clone)]
pub struct JwtVerifier {
    algorithm: JwtAlgorithm,
    /// The secret or public key; private to this struct so nothing can print it.
    key: DecodingKey,
    /// Signature-only validation: every claim check is done here, against an explicit `now`.
    validation: Validation,
    audience: Option<String>,
    issuer: Option<String>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("algorithm", &self.algorithm)
            .field("key", &"<redacted>")
            .field("audience", &self.audience)
            .field("issuer", &self.issuer)
            .finish()
    }
}

impl JwtVerifier {
    /// A HS256 verifier with this shared secret.
    ///
    /// # Errors
    ///
    /// [`JwtKeyError::EmptySecret`] if the secret is empty.
    pub fn hs256(secret: &[u8]) -> Result<Self, JwtKeyError> {
        if secret.is_empty() {
            return Err(JwtKeyError::EmptySecret);
        }
        if secret.len() < MIN_SECRET_BYTES {
            tracing::warn!(
                bytes = secret.len(),
                "--jwt-secret is shorter than {MIN_SECRET_BYTES} bytes; use a longer random secret"
            );
        }
        Ok(Self::new(
            JwtAlgorithm::Hs256,
            DecodingKey::from_secret(secret),
        ))
    }

    /// A RS256 or EdDSA verifier with this PEM public key (`-----BEGIN PUBLIC KEY-----`).
    ///
    /// # Errors
    ///
    /// [`JwtKeyError::Mismatch`] for HS256 (a public key is never an HMAC secret), and
    /// [`JwtKeyError::Pem`] if the PEM is not a public key of the algorithm's kind.
    pub fn public_key(algorithm: JwtAlgorithm, pem: &[u8]) -> Result<Self, JwtKeyError> {
        let pem_error = |error: jsonwebtoken::errors::Error| JwtKeyError::Pem {
            algorithm: algorithm.as_str(),
            reason: error.to_string(),
        };
        let key = match algorithm {
            JwtAlgorithm::Hs256 => {
                return Err(JwtKeyError::Mismatch {
                    algorithm: algorithm.as_str(),
                    needs: "--jwt-secret (a public key is never used as an HMAC secret)",
                })
            }
            JwtAlgorithm::Rs256 => DecodingKey::from_rsa_pem(pem).map_err(pem_error)?,
            JwtAlgorithm::EdDsa => DecodingKey::from_ed_pem(pem).map_err(pem_error)?,
        };
        Ok(Self::new(algorithm, key))
    }

    fn new(algorithm: JwtAlgorithm, key: DecodingKey) -> Self {
        let mut validation = Validation::new(algorithm.jsonwebtoken());
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        validation.leeway = 0;
        Self {
            algorithm,
            key,
            validation,
            audience: None,
            issuer: None,
        }
    }

    /// Requires `aud` to contain `audience` (`None`: `aud` is not checked).
    #[must_use]
    pub fn with_audience(mut self, audience: Option<String>) -> Self {
        self.audience = audience;
        self
    }

    /// Requires `iss` to equal `issuer` (`None`: `iss` is not checked).
    #[must_use]
    pub fn with_issuer(mut self, issuer: Option<String>) -> Self {
        self.issuer = issuer;
        self
    }

    /// The verifier the options ask for: `None` when no key is configured.
    ///
    /// Defaults: HS256 with `--jwt-secret`, RS256 with `--jwt-public-key`.
    ///
    /// # Errors
    ///
    /// [`JwtKeyError`] naming the option that cannot work: an unknown algorithm, an
    /// algorithm that does not fit the key, both keys, an unreadable or wrong PEM file, or
    /// `--jwt-algorithm` / `--jwt-audience` / `--jwt-issuer` without any key.
    pub fn from_options(options: &Options) -> Result<Option<Self>, JwtKeyError> {
        let algorithm = options
            .jwt_algorithm
            .as_deref()
            .map(JwtAlgorithm::parse)
            .transpose()?;
        let verifier = match (&options.jwt_secret, &options.jwt_public_key) {
            (Some(_), Some(_)) => return Err(JwtKeyError::BothKeys),
            (None, None) => {
                let stray = [
                    ("jwt-algorithm", options.jwt_algorithm.is_some()),
                    ("jwt-audience", options.jwt_audience.is_some()),
                    ("jwt-issuer", options.jwt_issuer.is_some()),
                ];
                return match stray.iter().find(|(_, set)| *set) {
                    Some((option, _)) => Err(JwtKeyError::WithoutKey(option)),
                    None => Ok(None),
                };
            }
            (Some(secret), None) => match algorithm.unwrap_or(JwtAlgorithm::Hs256) {
                JwtAlgorithm::Hs256 => Self::hs256(secret.as_bytes())?,
                other => {
                    return Err(JwtKeyError::Mismatch {
                        algorithm: other.as_str(),
                        needs: "--jwt-public-key",
                    })
                }
            },
            (None, Some(path)) => {
                let pem = std::fs::read(path).map_err(|source| JwtKeyError::Read {
                    path: path.display().to_string(),
                    source,
                })?;
                Self::public_key(algorithm.unwrap_or(JwtAlgorithm::Rs256), &pem)?
            }
        };
        Ok(Some(
            verifier
                .with_audience(options.jwt_audience.clone())
                .with_issuer(options.jwt_issuer.clone()),
        ))
    }

    /// The configured algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.algorithm
    }

    /// Verifies `token` now.
    ///
    /// # Errors
    ///
    /// The first [`JwtError`] the token runs into.
    pub fn verify(&self, token: &str) -> Result<VerifiedToken, JwtError> {
        self.verify_at(token, now_unix())
    }

    /// Verifies `token` as if the time were `now` (seconds since the Unix epoch).
    ///
    /// # Errors
    ///
    /// The first [`JwtError`] the token runs into, checked in this order: size, shape,
    /// header (`alg`, `crit`), signature, then claims (`exp`, `nbf`, `aud`, `iss`, patterns).
    pub fn verify_at(&self, token: &str, now: u64) -> Result<VerifiedToken, JwtError> {
        check_shape(token)?;
        self.check_header(token)?;
        let data = jsonwebtoken::decode::<Value>(token, &self.key, &self.validation)
            .map_err(|error| self.map_decode_error(error.kind()))?;
        let Value::Object(claims) = data.claims else {
            return Err(JwtError::Malformed("payload is not a JSON object"));
        };
        self.check_claims(&claims, now)
    }

    fn check_header(&self, token: &str) -> Result<(), JwtError> {
        // `check_shape` proved there are three non-empty base64url parts.
        let encoded = token.split('.').next().unwrap_or_default();
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| JwtError::Malformed("header is not base64url"))?;
        let header: Map<String, Value> = serde_json::from_slice(&bytes)
            .map_err(|_| JwtError::Malformed("header is not a JSON object"))?;
        if header.get("alg").and_then(Value::as_str) != Some(self.algorithm.as_str()) {
            return Err(JwtError::Algorithm {
                expected: self.algorithm.as_str(),
            });
        }
        if header.contains_key("crit") {
            return Err(JwtError::Critical);
        }
        Ok(())
    }

    fn map_decode_error(&self, kind: &ErrorKind) -> JwtError {
        match kind {
            ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => JwtError::Algorithm {
                expected: self.algorithm.as_str(),
            },
            ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                JwtError::Malformed("a part does not decode")
            }
            ErrorKind::Json(_) => JwtError::Malformed("header or payload is not valid JSON"),
            // Wrong signature, a signature of the wrong length, or a key ring cannot use.
            _ => JwtError::Signature,
        }
    }

    fn check_claims(
        &self,
        claims: &Map<String, Value>,
        now: u64,
    ) -> Result<VerifiedToken, JwtError> {
        let expires_at = numeric_date(claims, "exp")?.ok_or(JwtError::MissingExpiry)?;
        if now >= expires_at.saturating_add(EXP_LEEWAY_SECS) {
            return Err(JwtError::Expired);
        }
        if let Some(not_before) = numeric_date(claims, "nbf")? {
            if not_before > now.saturating_add(NBF_LEEWAY_SECS) {
                return Err(JwtError::NotYetValid);
            }
        }
        if let Some(audience) = &self.audience {
            let matches = match claims.get("aud") {
                Some(Value::String(aud)) => aud == audience,
                Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(audience)),
                _ => false,
            };
            if !matches {
                return Err(JwtError::Audience);
            }
        }
        if let Some(issuer) = &self.issuer {
            if claims.get("iss").and_then(Value::as_str) != Some(issuer.as_str()) {
                return Err(JwtError::Issuer);
            }
        }
        let subject = match claims.get("sub") {
            None | Some(Value::Null) => None,
            Some(Value::String(subject)) => Some(subject.clone()),
            Some(_) => return Err(JwtError::Claims("sub is not a string".into())),
        };
        Ok(VerifiedToken {
            permissions: permissions(claims)?,
            expires_at,
            subject,
        })
    }
}

/// Size and shape: three non-empty base64url parts (no padding).
fn check_shape(token: &str) -> Result<(), JwtError> {
    if token.len() > MAX_TOKEN_BYTES {
        return Err(JwtError::TooLong {
            max: MAX_TOKEN_BYTES,
        });
    }
    let parts: Vec<&str> = token.split('.').collect();
    match parts.as_slice() {
        [header, payload, signature] => {
            if header.is_empty() || payload.is_empty() {
                return Err(JwtError::Malformed("empty header or payload"));
            }
            if signature.is_empty() {
                return Err(JwtError::Malformed("empty signature"));
            }
            let base64url = |part: &&str| {
                part.bytes()
                    .all(|byte| byte.is_ascii_alphanumeric() || byte == b'-' || byte == b'_')
            };
            if parts.iter().all(base64url) {
                Ok(())
            } else {
                Err(JwtError::Malformed("a part is not base64url"))
            }
        }
        _ => Err(JwtError::Malformed("expected three dot-separated parts")),
    }
}

/// A NumericDate claim (RFC 7519 §2): a non-negative number of seconds; fractions are cut.
fn numeric_date(claims: &Map<String, Value>, name: &'static str) -> Result<Option<u64>, JwtError> {
    match claims.get(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(number)) => match (number.as_u64(), number.as_f64()) {
            (Some(seconds), _) => Ok(Some(seconds)),
            // `as` saturates: 1e300 becomes u64::MAX, which is fine for a date.
            (None, Some(seconds)) if seconds.is_finite() && seconds >= 0.0 => {
                Ok(Some(seconds as u64))
            }
            _ => Err(JwtError::Claims(format!("{name} is not a NumericDate"))),
        },
        Some(_) => Err(JwtError::Claims(format!("{name} is not a NumericDate"))),
    }
}

/// The read and write patterns of `tidewire.read/write` and top-level `read/write`.
fn permissions(claims: &Map<String, Value>) -> Result<Permissions, JwtError> {
    let namespaced = match claims.get("tidewire") {
        None | Some(Value::Null) => None,
        Some(Value::Object(object)) => Some(object),
        Some(_) => return Err(JwtError::Claims("tidewire is not an object".into())),
    };
    let mut permissions = Permissions::default();
    for source in namespaced.into_iter().chain(std::iter::once(claims)) {
        permissions.read.extend(rule_list(source, "read", claims)?);
        permissions
            .write
            .extend(rule_list(source, "write", claims)?);
    }
    Ok(permissions)
}

/// The rules of one `read` or `write` list: each a stream pattern, or
/// `{"stream": pattern, "where": filter}`, with claim placeholders filled (see
/// [`claims`](super::claims)). A rule whose claims cannot fill it grants nothing.
fn rule_list(
    object: &Map<String, Value>,
    name: &'static str,
    claims: &Map<String, Value>,
) -> Result<Vec<Rule>, JwtError> {
    let not_a_list = || {
        JwtError::Claims(format!(
            "{name} is not an array of stream patterns or {{\"stream\", \"where\"}} objects"
        ))
    };
    let items = match object.get(name) {
        None | Some(Value::Null) => return Ok(Vec::new()),
        Some(Value::Array(items)) => items,
        Some(_) => return Err(not_a_list()),
    };
    let mut rules = Vec::new();
    for (index, item) in items.iter().enumerate() {
        let (template, filter) = match item {
            Value::String(template) => (template.as_str(), None),
            Value::Object(rule) => {
                let template = rule
                    .get("stream")
                    .and_then(Value::as_str)
                    .ok_or_else(not_a_list)?;
                if rule.keys().any(|key| key != "stream" && key != "where") {
                    return Err(not_a_list());
                }
                (
                    template,
                    rule.get("where").filter(|filter| !filter.is_null()),
                )
            }
            _ => return Err(not_a_list()),
        };
        let bad =
            |error: &dyn std::fmt::Display| JwtError::Claims(format!("{name}[{index}]: {error}"));
        let patterns = match super::claims::pattern(template, claims)
            .map_err(|error| bad(&error))?
        {
            Ok(patterns) => patterns,
            Err(unfilled) => {
                tracing::info!(rule = %format!("{name}[{index}]"), %unfilled, "grant rule grants nothing");
                continue;
            }
        };
        let filter = match filter {
            None => None,
            Some(template) => {
                match super::claims::filter(template, claims).map_err(|error| bad(&error))? {
                    Ok(value) => Some(Arc::new(
                        Filter::parse(&value).map_err(|error| bad(&error))?,
                    )),
                    Err(unfilled) => {
                        tracing::info!(rule = %format!("{name}[{index}]"), %unfilled, "grant rule grants nothing");
                        continue;
                    }
                }
            }
        };
        for pattern in patterns {
            rules.push(Rule {
                pattern: Pattern::parse(&pattern)
                    .map_err(|error| bad(&format!("bad stream pattern: {error}")))?,
                filter: filter.clone(),
            });
        }
    }
    Ok(rules)
}

/// Seconds since the Unix epoch (0 if the clock is before 1970).
pub fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Time left before `expires_at` (seconds since the Unix epoch, a grant's
/// [`expires_at`](super::Grant::expires_at)); `None` when it never expires, zero when it has.
pub fn time_left(expires_at: Option<u64>) -> Option<Duration> {
    let expires_at = UNIX_EPOCH.checked_add(Duration::from_secs(expires_at?))?;
    Some(
        expires_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
    )
}

/// Completes when a grant that ends at `expires_at` has expired; never for `None`.
///
/// Transports `select!` on it next to the socket and close with 4004 (`token_expired`) when it
/// fires. Recreate it after an `auth` message replaced the grant.
///
/// ```no_run
/// # async fn demo(grant: tidewire_relay::auth::Grant) {
/// tokio::select! {
///     () = tidewire_relay::auth::until_expired(grant.expires_at) => { /* close 4004 */ }
///     // ... the socket, the session ...
/// }
/// # }
/// ```
pub async fn until_expired(expires_at: Option<u64>) {
    match time_left(expires_at) {
        // A deadline too far away to represent is the same as none.
        Some(left) => match tokio::time::Instant::now().checked_add(left) {
            Some(deadline) => tokio::time::sleep_until(deadline).await,
            None => std::future::pending().await,
        },
        None => std::future::pending().await,
    }
}

/// Signs `claims` with HS256 and `secret`: for tests and development tooling (the relay itself
/// only verifies).
///
/// # Errors
///
/// [`JwtError::Sign`] if the claims cannot be encoded.
pub fn sign_hs256(secret: &[u8], claims: &Value) -> Result<String, JwtError> {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .map_err(|error| JwtError::Sign(error.to_string()))
}

/// Test keys and token forging, shared with the authenticator's tests.
#[cfg(test)]
pub(crate) mod testing {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine as _;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use serde_json::{json, Value};

    /// The fixed "now" of the tables (2023-11-14).
    pub(crate) const NOW: u64 = 1_700_000_000;
    /// The HS256 test secret.
    pub(crate) const SECRET: &[u8] = b"test-only-secret-0123456789abcdef";
    /// Test-only key pairs (tests/fixtures/keys/README.md).
    pub(crate) const RSA_PUBLIC: &[u8] =
        include_bytes!("../../../tests/fixtures/keys/test-only-rsa-public.pem");
    pub(crate) const RSA_PRIVATE: &[u8] =
        include_bytes!("../../../tests/fixtures/keys/test-only-rsa-private.pem");
    pub(crate) const RSA_OTHER_PRIVATE: &[u8] =
        include_bytes!("../../../tests/fixtures/keys/test-only-rsa-other-private.pem");
    pub(crate) const ED_PUBLIC: &[u8] =
        include_bytes!("../../../tests/fixtures/keys/test-only-ed25519-public.pem");
    pub(crate) const ED_PRIVATE: &[u8] =
        include_bytes!("../../../tests/fixtures/keys/test-only-ed25519-private.pem");

    pub(crate) fn b64(text: &str) -> String {
        URL_SAFE_NO_PAD.encode(text)
    }

    /// `header.payload.signature` from raw JSON texts and a raw signature part.
    pub(crate) fn forge(header: &str, payload: &str, signature: &str) -> String {
        format!("{}.{}.{signature}", b64(header), b64(payload))
    }

    /// Signs any header and claims with `key` under `algorithm` (the header is not checked).
    pub(crate) fn sign_raw(
        header: &Value,
        claims: &Value,
        key: &EncodingKey,
        algorithm: Algorithm,
    ) -> String {
        let message = format!("{}.{}", b64(&header.to_string()), b64(&claims.to_string()));
        let signature =
            jsonwebtoken::crypto::sign(message.as_bytes(), key, algorithm).expect("test key signs");
        format!("{message}.{signature}")
    }

    pub(crate) fn hs256(claims: &Value) -> String {
        sign_raw(
            &json!({"alg": "HS256", "typ": "JWT"}),
            claims,
            &EncodingKey::from_secret(SECRET),
            Algorithm::HS256,
        )
    }

    pub(crate) fn rs256(claims: &Value) -> String {
        let key = EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("test rsa key");
        sign_raw(
            &json!({"alg": "RS256", "typ": "JWT"}),
            claims,
            &key,
            Algorithm::RS256,
        )
    }

    pub(crate) fn eddsa(claims: &Value) -> String {
        let key = EncodingKey::from_ed_pem(ED_PRIVATE).expect("test ed25519 key");
        sign_raw(
            &json!({"alg": "EdDSA", "typ": "JWT"}),
            claims,
            &key,
            Algorithm::EdDSA,
        )
    }

    /// Claims valid at [`NOW`]: reads stream `a` and `room:*`, writes `a`.
    pub(crate) fn claims() -> Value {
        json!({"sub": "user-1", "exp": NOW + 60, "tidewire": {"read": ["a", "room:*"], "write": ["a"]}})
    }

    /// [`claims`] with `changes` merged in (a `null` removes the claim).
    pub(crate) fn claims_with(changes: Value) -> Value {
        let mut claims = claims();
        if let (Some(object), Value::Object(changes)) = (claims.as_object_mut(), changes) {
            for (name, value) in changes {
                if value.is_null() {
                    object.remove(&name);
                } else {
                    object.insert(name, value);
                }
            }
        }
        claims
    }
}

#[cfg(test)]
mod tests;
