//! Authentication and authorisation: stream patterns and permissions ([`pattern`]) and the
//! [`Grant`] a connection holds.

pub mod authenticator;
pub mod grant;
pub mod pattern;

pub use authenticator::{AuthError, Authenticator};
pub use grant::Grant;
pub use pattern::{Pattern, Permissions};
