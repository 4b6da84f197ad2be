//! The credentials Secret referenced by `spec.dataImage.credentialsName`.
//!
//! `Debug` never prints the password.

use std::fmt;

#[derive(Clone, PartialEq, Eq)]
pub struct SecretCredentials {
    pub username: String,
    pub password: String,
}

impl fmt::Debug for SecretCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretCredentials")
            .field("username", &self.username)
            .field("password", &"***")
            .finish()
    }
}
