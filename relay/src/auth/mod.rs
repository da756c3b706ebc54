//! Authentication and authorisation: stream patterns and permissions ([`pattern`]), the
//! [`Grant`] a connection holds, JWT verification ([`jwt`]), the Origin allow-list
//! ([`origin`]), CORS ([`cors`]) and the [`Authenticator`] that puts them together.

pub mod access;
pub mod authenticator;
pub mod claims;
pub mod cors;
pub mod grant;
pub mod jwt;
pub mod origin;
pub mod pattern;

pub use access::{Access, Denied};
pub use authenticator::{bearer_token, AuthError, Authenticator};
pub use grant::Grant;
pub use jwt::{until_expired, JwtAlgorithm, JwtError, JwtVerifier};
pub use origin::OriginPolicy;
pub use pattern::{Pattern, Permissions, Rule};
