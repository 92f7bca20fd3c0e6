//! The passwords of a Database: generated once from the operating system's CSPRNG, stored in the
//! credentials Secret, and from then on only ever read back from it.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;

/// Length of every generated password.
pub const PASSWORD_LEN: usize = 32;

/// Keys of the credentials Secret. Named after the official PostgreSQL image's variables, from when
/// berth relied on its entrypoint; no container reads them as such any more (the init container gets
/// them as `BERTH_*` variables), but the names stay so the Secrets of existing Databases, which are
/// never regenerated, keep reading.
pub const SUPERUSER_KEY: &str = "POSTGRES_USER";
pub const SUPERUSER_PASSWORD_KEY: &str = "POSTGRES_PASSWORD";
pub const DATABASE_KEY: &str = "POSTGRES_DB";
pub const APP_USER_KEY: &str = "APP_USER";
pub const APP_PASSWORD_KEY: &str = "APP_PASSWORD";
/// Annotation of the credentials Secret: the Database's `spec.passwordRotation` the app password was made
/// for. Absent on Secrets from before rotation existed, which is rotation 0.
pub const ROTATION_ANNOTATION: &str = "berth.dev/password-rotation";

/// Who may log in to a tenant's PostgreSQL, and to which database.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    pub superuser: String,
    pub superuser_password: String,
    /// The database inside the server (not the Kubernetes object).
    pub database: String,
    pub app_user: String,
    pub app_password: String,
    /// Which `spec.passwordRotation` `app_password` belongs to.
    pub rotation: i32,
}

/// Passwords never reach logs.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Credentials")
            .field("superuser", &self.superuser)
            .field("database", &self.database)
            .field("app_user", &self.app_user)
            .field("rotation", &self.rotation)
            .finish_non_exhaustive()
    }
}

impl Credentials {
    /// Fresh credentials: new random passwords for the superuser and the app role.
    ///
    /// # Errors
    /// When the operating system's random generator cannot be read.
    pub fn generate(superuser: &str, database: &str, app_user: &str) -> Result<Self, getrandom::Error> {
        Ok(Self {
            superuser: superuser.to_owned(),
            superuser_password: password()?,
            database: database.to_owned(),
            app_user: app_user.to_owned(),
            app_password: password()?,
            rotation: 0,
        })
    }

    /// The same credentials with a new app password, made for `rotation`. The superuser's stays: only
    /// the app role's password travels (to the pool and to apps).
    ///
    /// # Errors
    /// When the operating system's random generator cannot be read.
    pub fn rotate(self, rotation: i32) -> Result<Self, getrandom::Error> {
        Ok(Self {
            app_password: password()?,
            rotation,
            ..self
        })
    }

    /// The Secret's annotations: the rotation, once there has been one.
    #[must_use]
    pub fn annotations(&self) -> Option<BTreeMap<String, String>> {
        (self.rotation != 0)
            .then(|| BTreeMap::from([(ROTATION_ANNOTATION.to_owned(), self.rotation.to_string())]))
    }

    /// The Secret `data` that stores these credentials.
    #[must_use]
    pub fn to_data(&self) -> BTreeMap<String, ByteString> {
        [
            (SUPERUSER_KEY, &self.superuser),
            (SUPERUSER_PASSWORD_KEY, &self.superuser_password),
            (DATABASE_KEY, &self.database),
            (APP_USER_KEY, &self.app_user),
            (APP_PASSWORD_KEY, &self.app_password),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), ByteString(v.clone().into_bytes())))
        .collect()
    }

    /// Reads credentials back from their Secret.
    ///
    /// # Errors
    /// The first key that is missing, empty or not UTF-8: berth never fills it in with a new password,
    /// because the server's volume still holds the old one.
    pub fn from_secret(secret: &Secret) -> Result<Self, String> {
        let data = secret.data.clone().unwrap_or_default();
        let get = |key: &str| -> Result<String, String> {
            data.get(key)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| format!("key {key} is missing, empty or not UTF-8"))
        };
        Ok(Self {
            superuser: get(SUPERUSER_KEY)?,
            superuser_password: get(SUPERUSER_PASSWORD_KEY)?,
            database: get(DATABASE_KEY)?,
            app_user: get(APP_USER_KEY)?,
            app_password: get(APP_PASSWORD_KEY)?,
            rotation: match secret.annotations().get(ROTATION_ANNOTATION) {
                None => 0,
                Some(n) => n
                    .parse()
                    .map_err(|_| format!("annotation {ROTATION_ANNOTATION} is not a number: {n:?}"))?,
            },
        })
    }
}

const ALPHANUMERIC: &[u8; 62] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";

/// A password of [`PASSWORD_LEN`] alphanumeric characters from the OS CSPRNG, uniformly distributed
/// (bytes at or above 248 = 4 × 62 are rejected so no character is more likely than another).
///
/// # Errors
/// When the operating system's random generator cannot be read.
pub fn password() -> Result<String, getrandom::Error> {
    let mut out = String::with_capacity(PASSWORD_LEN);
    let mut buf = [0u8; 64];
    while out.len() < PASSWORD_LEN {
        getrandom::fill(&mut buf)?;
        for b in buf
            .into_iter()
            .filter(|&b| b < 248)
            .take(PASSWORD_LEN - out.len())
        {
            out.push(char::from(ALPHANUMERIC[usize::from(b % 62)]));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_long_alphanumeric_and_distinct() {
        let a = password().unwrap();
        let b = password().unwrap();
        assert_eq!(a.len(), PASSWORD_LEN);
        assert!(a.chars().all(|c| c.is_ascii_alphanumeric()), "{a}");
        assert_ne!(a, b);
    }

    #[test]
    fn credentials_round_trip_through_their_secret() {
        let c = Credentials::generate("su", "shop", "web").unwrap();
        let secret = Secret {
            data: Some(c.to_data()),
            ..Secret::default()
        };
        assert_eq!(Credentials::from_secret(&secret).unwrap(), c);
    }

    #[test]
    fn rotation_changes_the_app_password_only_and_is_read_back() {
        let c = Credentials::generate("su", "shop", "web").unwrap();
        let r = c.clone().rotate(3).unwrap();
        assert_ne!(r.app_password, c.app_password);
        assert_eq!(
            (&r.superuser_password, &r.app_user, r.rotation),
            (&c.superuser_password, &c.app_user, 3)
        );
        let mut secret = Secret {
            data: Some(r.to_data()),
            ..Secret::default()
        };
        secret.metadata.annotations = r.annotations();
        assert_eq!(Credentials::from_secret(&secret).unwrap(), r);
        assert_eq!(c.annotations(), None, "rotation 0 writes no annotation");
    }

    #[test]
    fn a_missing_key_is_reported_not_regenerated() {
        let c = Credentials::generate("su", "shop", "web").unwrap();
        let mut data = c.to_data();
        data.remove(APP_PASSWORD_KEY);
        let err = Credentials::from_secret(&Secret {
            data: Some(data),
            ..Secret::default()
        })
        .unwrap_err();
        assert!(err.contains(APP_PASSWORD_KEY), "{err}");
    }

    #[test]
    fn debug_hides_passwords() {
        let c = Credentials::generate("su", "shop", "web").unwrap();
        let shown = format!("{c:?}");
        assert!(
            !shown.contains(&c.app_password) && !shown.contains(&c.superuser_password),
            "{shown}"
        );
    }
}
