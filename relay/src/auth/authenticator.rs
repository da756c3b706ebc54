//! The authenticator: turns a request (Origin, bearer token) into a [`Grant`] or a typed
//! refusal. Built once per relay from the configuration and shared as `hub.auth`.
//!
//! - Transports call [`Authenticator::authenticate`] before upgrading (WebSocket) or streaming
//!   (SSE): the Origin is checked first ([`OriginPolicy`]), then the token
//!   ([`JwtVerifier`]). Map [`AuthError::Origin`] to 403 without upgrade and
//!   [`AuthError::Unauthorized`] to 401 (or close 4001); [`AuthError::into_response`] builds
//!   the HTTP answer.
//! - The session calls [`Authenticator::verify`] for the `auth` message (token refresh).
//! - A live connection is closed with 4004 when [`Grant::expires_at`] passes
//!   ([`until_expired`](super::until_expired)).
//!
//! The token comes from `Authorization: Bearer <token>` or the query parameter `access_token`
//! (or `token`), for EventSource and browser WebSockets, which cannot set headers. An empty
//! query parameter counts as absent. A present but invalid token is refused: there is no
//! silent fallback to anonymous access. The connection's grant is the token's permissions
//! united with the anonymous ones. Tokens are never logged, and `Debug` never shows the key.

use hyper::header::AUTHORIZATION;
use hyper::HeaderMap;
use tidewire_shared::{CloseCode, ErrorCode};

use super::jwt::{now_unix, JwtVerifier};
use super::origin::OriginPolicy;
use super::{cors, Grant, Permissions};
use crate::config::Config;

/// Query parameters that may carry the token.
const TOKEN_PARAMETERS: [&str; 2] = ["access_token", "token"];

/// Why a request or token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No valid credentials: malformed, badly signed or expired token, or a token on a relay
    /// without a JWT key (401, close 4001).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The Origin is not allowed (403, no upgrade).
    #[error("origin not allowed: {0}")]
    Origin(String),
}

impl AuthError {
    /// The error code for `error` messages and HTTP bodies: `unauthorized` or `forbidden`.
    pub fn code(&self) -> ErrorCode {
        match self {
            AuthError::Unauthorized(_) => ErrorCode::Unauthorized,
            AuthError::Origin(_) => ErrorCode::Forbidden,
        }
    }

    /// The WebSocket close code, for refusals after the upgrade (for example a refreshed
    /// token that does not verify).
    pub fn close_code(&self) -> CloseCode {
        match self {
            AuthError::Unauthorized(_) => CloseCode::Unauthorized,
            AuthError::Origin(_) => CloseCode::PolicyViolation,
        }
    }
}

/// Verifies tokens and origins according to the configuration.
#[derive(Debug, Clone)]
pub struct Authenticator {
    /// What a connection without a token may do (`--anon-read`, `--anon-write`).
    anonymous: Permissions,
    /// `None` when no JWT key is configured: every token is then refused.
    jwt: Option<JwtVerifier>,
    /// `--allowed-origins`.
    origins: OriginPolicy,
}

impl Authenticator {
    /// Builds the authenticator from the configuration.
    ///
    /// Anonymous defaults: nothing when a JWT key is configured, everything (`*`) when none is.
    ///
    /// # Errors
    ///
    /// A message naming the option that is unusable (JWT options, a pattern, an origin).
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let options = &config.options;
        let jwt = JwtVerifier::from_options(options).map_err(|error| error.to_string())?;
        let default = |list: &Vec<String>| {
            if list.iter().all(|pattern| pattern.trim().is_empty()) && jwt.is_none() {
                vec!["*".to_owned()]
            } else {
                list.clone()
            }
        };
        let anonymous =
            Permissions::parse(&default(&options.anon_read), &default(&options.anon_write))
                .map_err(|error| format!("invalid option --anon-read/--anon-write: {error}"))?;
        let origins = OriginPolicy::from_list(&options.allowed_origins)
            .map_err(|error| format!("invalid option --allowed-origins: {error}"))?;
        if let Some(verifier) = &jwt {
            tracing::info!(
                algorithm = verifier.algorithm().as_str(),
                "JWT authentication enabled"
            );
        }
        Ok(Self::new(anonymous, jwt, origins))
    }

    /// An authenticator from its parts (embedding and tests).
    pub fn new(anonymous: Permissions, jwt: Option<JwtVerifier>, origins: OriginPolicy) -> Self {
        Self {
            anonymous,
            jwt,
            origins,
        }
    }

    /// The grant of a connection without a token.
    pub fn anonymous(&self) -> Grant {
        Grant::anonymous(self.anonymous.clone())
    }

    /// Whether a JWT key is configured.
    pub fn has_key(&self) -> bool {
        self.jwt.is_some()
    }

    /// The Origin allow-list.
    pub fn origins(&self) -> &OriginPolicy {
        &self.origins
    }

    /// Verifies a bearer token: its grant is the token's permissions plus the anonymous ones,
    /// until its `exp`.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unauthorized`] for any token this relay cannot verify.
    pub fn verify(&self, token: &str) -> Result<Grant, AuthError> {
        self.verify_at(token, now_unix())
    }

    /// [`verify`](Self::verify) as if the time were `now` (seconds since the Unix epoch).
    ///
    /// # Errors
    ///
    /// [`AuthError::Unauthorized`] for any token this relay cannot verify.
    pub fn verify_at(&self, token: &str, now: u64) -> Result<Grant, AuthError> {
        let Some(jwt) = &self.jwt else {
            return Err(AuthError::Unauthorized(
                "no JWT key is configured on this relay".into(),
            ));
        };
        match jwt.verify_at(token, now) {
            Ok(verified) => Ok(Grant {
                permissions: verified.permissions.union(&self.anonymous),
                expires_at: Some(verified.expires_at),
                subject: verified.subject,
            }),
            Err(error) => {
                tracing::debug!(reason = %error, "token refused");
                Err(AuthError::Unauthorized(error.to_string()))
            }
        }
    }

    /// Authenticates a request: checks its Origin, then its token (`Authorization: Bearer`,
    /// or the `access_token` / `token` query parameter), else grants anonymous access.
    ///
    /// # Errors
    ///
    /// [`AuthError::Origin`] if the Origin is refused (checked first), and
    /// [`AuthError::Unauthorized`] if a token is present but invalid, the `Authorization`
    /// header is not a bearer token, or two different tokens are sent.
    pub fn authenticate(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
    ) -> Result<Grant, AuthError> {
        self.authenticate_at(headers, query, now_unix())
    }

    /// [`authenticate`](Self::authenticate) as if the time were `now`.
    ///
    /// # Errors
    ///
    /// As [`authenticate`](Self::authenticate).
    pub fn authenticate_at(
        &self,
        headers: &HeaderMap,
        query: Option<&str>,
        now: u64,
    ) -> Result<Grant, AuthError> {
        self.origins.check(headers)?;
        match bearer_token(headers, query)? {
            Some(token) => self.verify_at(&token, now),
            None => Ok(self.anonymous()),
        }
    }

    /// CORS headers for a request (see [`cors::cors_headers`]).
    pub fn cors_headers(&self, request_headers: &HeaderMap) -> Option<HeaderMap> {
        cors::cors_headers(&self.origins, request_headers)
    }

    /// Adds CORS headers and `Vary: Origin` to a response (see [`cors::apply`]).
    pub fn apply_cors(&self, request_headers: &HeaderMap, response_headers: &mut HeaderMap) {
        cors::apply(&self.origins, request_headers, response_headers);
    }

    /// The decision on an `OPTIONS` request (see [`cors::preflight`]).
    pub fn preflight(&self, request_headers: &HeaderMap) -> cors::Preflight {
        cors::preflight(&self.origins, request_headers)
    }
}

/// The token a request carries, from `Authorization: Bearer` or the `access_token` / `token`
/// query parameter (percent-decoded). `None` if there is none; the same token sent twice is
/// fine.
///
/// # Errors
///
/// [`AuthError::Unauthorized`] if the `Authorization` header is not `Bearer <token>`, a
/// parameter does not percent-decode, or two different tokens are sent.
pub fn bearer_token(headers: &HeaderMap, query: Option<&str>) -> Result<Option<String>, AuthError> {
    let refuse = |reason: &str| AuthError::Unauthorized(reason.to_owned());
    let mut tokens: Vec<String> = Vec::new();
    for value in headers.get_all(AUTHORIZATION) {
        let text = value
            .to_str()
            .map_err(|_| refuse("the Authorization header is not ASCII"))?;
        let (scheme, rest) = text
            .trim()
            .split_once([' ', '\t'])
            .unwrap_or((text.trim(), ""));
        let token = rest.trim();
        if !scheme.eq_ignore_ascii_case("bearer") || token.is_empty() {
            return Err(refuse("the Authorization header is not `Bearer <token>`"));
        }
        tokens.push(token.to_owned());
    }
    for (name, value) in crate::query::form_pairs(query.unwrap_or_default()) {
        if TOKEN_PARAMETERS.contains(&name.as_str()) {
            let token =
                value.map_err(|_| refuse("the token parameter is not percent-encoded UTF-8"))?;
            if !token.is_empty() {
                tokens.push(token);
            }
        }
    }
    let Some(first) = tokens.first() else {
        return Ok(None);
    };
    if tokens.iter().any(|token| token != first) {
        return Err(refuse(
            "more than one token was sent (Authorization, access_token, token)",
        ));
    }
    Ok(Some(first.clone()))
}

#[cfg(test)]
mod tests {
    use hyper::header::{HOST, ORIGIN};
    use hyper::http::HeaderValue;
    use jsonwebtoken::{Algorithm, EncodingKey};
    use serde_json::json;
    use tidewire_shared::StreamName;

    use super::super::jwt::testing::*;
    use super::super::jwt::JwtAlgorithm;
    use super::*;

    /// A HS256 relay whose anonymous users may read `public:*`, with the same-host origin rule.
    fn keyed() -> Authenticator {
        let anonymous = Permissions::parse(&["public:*".into()], &[]).expect("patterns");
        let jwt = JwtVerifier::hs256(SECRET).expect("secret");
        Authenticator::new(anonymous, Some(jwt), OriginPolicy::default())
    }

    fn rsa() -> Authenticator {
        let jwt = JwtVerifier::public_key(JwtAlgorithm::Rs256, RSA_PUBLIC).expect("rsa key");
        Authenticator::new(Permissions::default(), Some(jwt), OriginPolicy::default())
    }

    /// No key: everything open to anonymous users, every token refused.
    fn open() -> Authenticator {
        Authenticator::new(Permissions::open(), None, OriginPolicy::default())
    }

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum Expect {
        /// Anonymous grant.
        Anonymous,
        /// The token's grant (subject `user-1`).
        Token,
        Unauthorized,
        Origin,
    }

    struct Row {
        name: &'static str,
        auth: Authenticator,
        headers: Vec<(hyper::header::HeaderName, String)>,
        query: Option<String>,
        expect: Expect,
        /// Streams and whether the grant may read them.
        reads: &'static [(&'static str, bool)],
    }

    fn row(name: &'static str, auth: Authenticator, expect: Expect) -> Row {
        Row {
            name,
            auth,
            headers: Vec::new(),
            query: None,
            expect,
            reads: &[],
        }
    }

    impl Row {
        fn header(mut self, name: hyper::header::HeaderName, value: impl Into<String>) -> Self {
            self.headers.push((name, value.into()));
            self
        }
        fn bearer(self, token: &str) -> Self {
            self.header(AUTHORIZATION, format!("Bearer {token}"))
        }
        fn query(mut self, query: impl Into<String>) -> Self {
            self.query = Some(query.into());
            self
        }
        fn reads(mut self, reads: &'static [(&'static str, bool)]) -> Self {
            self.reads = reads;
            self
        }
    }

    /// One row per request shape, each with its expected outcome.
    #[test]
    fn authenticate_table() {
        let token = hs256(&claims());
        let expired = hs256(&claims_with(json!({"exp": NOW - 1})));
        let confused = sign_raw(
            &json!({"alg": "HS256"}),
            &claims(),
            &EncodingKey::from_secret(RSA_PUBLIC),
            Algorithm::HS256,
        );
        let encoded: String = token.replace('.', "%2E");
        #[rustfmt::skip]
        let rows = vec![
            row("no token: anonymous", keyed(), Expect::Anonymous).reads(&[("public:x", true), ("a", false)]),
            row("token in the header", keyed(), Expect::Token).bearer(&token)
                .reads(&[("a", true), ("room:1", true), ("public:x", true)]),
            row("token for stream A used on stream B", keyed(), Expect::Token).bearer(&token)
                .reads(&[("a", true), ("b", false), ("ab", false)]),
            row("token in access_token", keyed(), Expect::Token).query(format!("stream=a&access_token={token}")).reads(&[("a", true)]),
            row("token in token", keyed(), Expect::Token).query(format!("token={token}&stream=b")),
            row("percent-encoded token", keyed(), Expect::Token).query(format!("access_token={encoded}")),
            row("bearer in lowercase", keyed(), Expect::Token).header(AUTHORIZATION, format!("bearer  {token}")),
            row("same token in header and query", keyed(), Expect::Token).bearer(&token).query(format!("access_token={token}")),
            row("different tokens in header and query", keyed(), Expect::Unauthorized).bearer(&token).query(format!("access_token={expired}")),
            row("two Authorization headers", keyed(), Expect::Unauthorized).bearer(&token).bearer(&expired),
            row("empty access_token is absent", keyed(), Expect::Anonymous).query("access_token=&stream=a"),
            row("Basic credentials", keyed(), Expect::Unauthorized).header(AUTHORIZATION, "Basic dXNlcjpwYXNz"),
            row("Bearer without a token", keyed(), Expect::Unauthorized).header(AUTHORIZATION, "Bearer "),
            row("invalid token in the header (no fallback)", keyed(), Expect::Unauthorized).bearer("garbage"),
            row("invalid token in the query (no fallback)", keyed(), Expect::Unauthorized).query("stream=x&access_token=bad"),
            row("bad percent escape", keyed(), Expect::Unauthorized).query("access_token=%zz"),
            row("expired token", keyed(), Expect::Unauthorized).bearer(&expired),
            row("HS256 with the RSA public key on an RS256 relay", rsa(), Expect::Unauthorized).query(format!("access_token={confused}")),
            row("valid RS256 on an RS256 relay", rsa(), Expect::Token).bearer(&rs256(&claims())).reads(&[("a", true), ("public:x", false)]),
            row("token on a relay without a key", open(), Expect::Unauthorized).bearer(&token),
            row("no token on a relay without a key", open(), Expect::Anonymous).reads(&[("anything", true)]),
            row("disallowed origin, valid token", keyed(), Expect::Origin).header(ORIGIN, "https://evil.example").bearer(&token),
            row("disallowed origin, bad token (origin first)", keyed(), Expect::Origin).header(ORIGIN, "https://evil.example").bearer("bad"),
            row("localhost origin with a token", keyed(), Expect::Token).header(ORIGIN, "http://localhost:5173").bearer(&token),
            row("own-host origin", keyed(), Expect::Anonymous).header(ORIGIN, "https://relay.example").header(HOST, "relay.example"),
            row("null origin", keyed(), Expect::Origin).header(ORIGIN, "null"),
        ];
        assert!(rows.len() >= 25, "{} rows", rows.len());
        let mut failures = Vec::new();
        for row in &rows {
            let mut headers = HeaderMap::new();
            for (name, value) in &row.headers {
                headers.append(name, HeaderValue::from_str(value).expect("ascii header"));
            }
            let outcome = row
                .auth
                .authenticate_at(&headers, row.query.as_deref(), NOW);
            let got = match &outcome {
                Ok(grant) if grant.subject.as_deref() == Some("user-1") => Expect::Token,
                Ok(_) => Expect::Anonymous,
                Err(AuthError::Unauthorized(_)) => Expect::Unauthorized,
                Err(AuthError::Origin(_)) => Expect::Origin,
            };
            if got != row.expect {
                failures.push(format!(
                    "{}: expected {:?}, got {outcome:?}",
                    row.name, row.expect
                ));
                continue;
            }
            if let Ok(grant) = &outcome {
                if got == Expect::Token && grant.expires_at != Some(NOW + 60) {
                    failures.push(format!("{}: expires_at {:?}", row.name, grant.expires_at));
                }
                for (stream, readable) in row.reads {
                    let name = StreamName::new(stream).expect("valid stream");
                    if grant.permissions.can_read(&name) != *readable {
                        failures.push(format!(
                            "{}: can_read({stream}) should be {readable}",
                            row.name
                        ));
                    }
                }
            }
        }
        assert!(
            failures.is_empty(),
            "{} of {} rows failed:\n{}",
            failures.len(),
            rows.len(),
            failures.join("\n")
        );
    }

    #[test]
    fn verify_unites_with_anonymous_and_refuses_bad_tokens() {
        let auth = keyed();
        let grant = auth.verify_at(&hs256(&claims()), NOW).expect("valid");
        assert_eq!(grant.subject.as_deref(), Some("user-1"));
        assert!(grant
            .permissions
            .can_read(&StreamName::new("public:news").expect("valid")));
        assert!(matches!(
            auth.verify_at("x.y.z", NOW),
            Err(AuthError::Unauthorized(_))
        ));
        assert!(matches!(
            open().verify("anything"),
            Err(AuthError::Unauthorized(_))
        ));
    }

    #[test]
    fn debug_hides_the_secret() {
        let text = format!("{:?}", keyed());
        assert!(!text.contains("test-only-secret"), "{text}");
    }

    #[test]
    fn errors_map_to_codes() {
        let unauthorized = AuthError::Unauthorized("token expired".into());
        assert_eq!(unauthorized.code(), ErrorCode::Unauthorized);
        assert_eq!(unauthorized.close_code(), CloseCode::Unauthorized);
        let forbidden = AuthError::Origin("https://evil.example".into());
        assert_eq!(forbidden.code(), ErrorCode::Forbidden);
        assert_eq!(forbidden.close_code(), CloseCode::PolicyViolation);
    }

    #[test]
    fn config_defaults() {
        let mut config = Config::for_tests("postgres://unused");
        config.options.allowed_origins.clear();
        config.options.anon_read.clear();
        config.options.anon_write.clear();
        config.options.jwt_secret = None;
        config.options.jwt_public_key = None;
        let open = Authenticator::from_config(&config).expect("valid");
        assert!(!open.has_key());
        assert_eq!(open.anonymous().permissions, Permissions::open());
        config.options.jwt_secret = Some("s3cret-s3cret-s3cret-s3cret-s3cret".into());
        let closed = Authenticator::from_config(&config).expect("valid");
        assert!(closed.has_key());
        assert_eq!(closed.anonymous().permissions, Permissions::default());
        config.options.allowed_origins = vec!["not an origin".into()];
        assert!(Authenticator::from_config(&config).is_err());
    }
}
