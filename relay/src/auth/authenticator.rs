//! The authenticator: turns a request (token, Origin) into a [`Grant`] or a typed refusal.
//!
//! Interim version: anonymous access only. JWT verification and the Origin allow-list land
//! in `jwt.rs` / `origin.rs`.

use hyper::HeaderMap;

use super::{Grant, Permissions};
use crate::config::Config;

/// Why a request or token was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// No valid credentials: missing, malformed, badly signed or expired token (401, close
    /// 4001).
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// The Origin is not allowed (403, no upgrade).
    #[error("origin not allowed: {0}")]
    Origin(String),
}

/// Verifies tokens and origins according to the configuration.
#[derive(Debug, Clone)]
pub struct Authenticator {
    anonymous: Permissions,
}

impl Authenticator {
    /// Builds the authenticator from the configuration.
    ///
    /// # Errors
    ///
    /// A message naming the option that is unusable.
    pub fn from_config(config: &Config) -> Result<Self, String> {
        let options = &config.options;
        let has_key = options.jwt_secret.is_some() || options.jwt_public_key.is_some();
        let default = |list: &Vec<String>| {
            if list.is_empty() && !has_key {
                vec!["*".to_owned()]
            } else {
                list.clone()
            }
        };
        let anonymous = Permissions::parse(&default(&options.anon_read), &default(&options.anon_write))?;
        Ok(Self { anonymous })
    }

    /// The grant of a connection without a token.
    pub fn anonymous(&self) -> Grant {
        Grant::anonymous(self.anonymous.clone())
    }

    /// Verifies a bearer token.
    ///
    /// # Errors
    ///
    /// [`AuthError::Unauthorized`] for any token this relay cannot verify.
    pub fn verify(&self, _token: &str) -> Result<Grant, AuthError> {
        Err(AuthError::Unauthorized("no JWT key is configured on this relay".into()))
    }

    /// Authenticates a request: checks its Origin, then its token (the `Authorization: Bearer`
    /// header, or the `access_token` query parameter for EventSource), falling back to
    /// anonymous access.
    ///
    /// # Errors
    ///
    /// [`AuthError`] if the Origin is refused or a token is present but invalid.
    pub fn authenticate(&self, headers: &HeaderMap, query: Option<&str>) -> Result<Grant, AuthError> {
        let _ = (headers, query);
        Ok(self.anonymous())
    }
}
