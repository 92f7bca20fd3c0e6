//! What berth reads back from the credentials Secret is input, not berth's own output: the tenant's admins
//! may edit that Secret (it is how a lost one is restored), and its values end up in `pgbouncer.ini`, whose
//! lines nothing quotes, and in `userlist.txt`. A newline in a name would add pgbouncer directives of the
//! tenant's choosing (another `[databases]` entry, an `admin_users` line). So every value is checked before
//! anything is built from it; a Secret that fails leaves the pool's last applied configuration in place.

use std::fmt;

use crate::credentials::{
    APP_PASSWORD_KEY, APP_USER_KEY, Credentials, DATABASE_KEY, SUPERUSER_KEY, SUPERUSER_PASSWORD_KEY,
};
use crate::names;

/// Longest name PostgreSQL keeps whole (`NAMEDATALEN` - 1); a longer one is silently truncated, so the
/// pool's name and the server's would differ.
const MAX_IDENTIFIER: usize = 63;

/// The first key of a credentials Secret whose value berth refuses to build from, and why. The reason
/// never contains a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Invalid {
    pub key: &'static str,
    pub problem: String,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key {} {}", self.key, self.problem)
    }
}

/// `Ok` when every value of `c` can go into pgbouncer's files and the server's bootstrap as it is.
///
/// # Errors
/// The first key whose value cannot.
pub fn check(c: &Credentials) -> Result<(), Invalid> {
    let names = [
        (SUPERUSER_KEY, &c.superuser),
        (DATABASE_KEY, &c.database),
        (APP_USER_KEY, &c.app_user),
    ];
    let passwords = [
        (SUPERUSER_PASSWORD_KEY, &c.superuser_password),
        (APP_PASSWORD_KEY, &c.app_password),
    ];
    let invalid = |key, problem| Invalid { key, problem };
    for (key, value) in names {
        identifier(value).map_err(|p| invalid(key, p))?;
    }
    for (key, value) in passwords {
        password(value).map_err(|p| invalid(key, p.to_owned()))?;
    }
    Ok(())
}

/// The condition message (and Warning event note) for `invalid` in Database `db`'s Secret. Constant while
/// the Secret does not change, so the condition is not rewritten at every reconcile.
pub(crate) fn message(db: &str, invalid: &Invalid) -> String {
    format!(
        "credentials Secret {}: {invalid}; berth applies nothing for this Database until the key is fixed, \
         and the pool keeps its last configuration",
        names::credentials(db)
    )
}

/// `^[a-z_][a-z0-9_]{0,62}$`: a PostgreSQL name that needs no quoting in SQL, in `pgbouncer.ini` or in a
/// connection URL, and that PostgreSQL does not fold or truncate. Names are not secret, so the offending
/// character is shown (escaped, so a newline reads as `\n`).
fn identifier(value: &str) -> Result<(), String> {
    const RULE: &str = "must match ^[a-z_][a-z0-9_]{0,62}$";
    let Some(first) = value.chars().next() else {
        return Err(format!("is empty but {RULE}"));
    };
    if !(first.is_ascii_lowercase() || first == '_') {
        return Err(format!("starts with {first:?} but {RULE}"));
    }
    if let Some((i, c)) = value
        .chars()
        .enumerate()
        .find(|&(_, c)| !(c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'))
    {
        return Err(format!("has {c:?} at character {} but {RULE}", i + 1));
    }
    let len = value.len();
    if len > MAX_IDENTIFIER {
        return Err(format!("is {len} characters long but {RULE}"));
    }
    Ok(())
}

/// A password goes into `userlist.txt` in double quotes (with `"` doubled, pgbouncer's own escape, see
/// `pgbouncer::render_userlist`), one user a line. Refused, without ever naming the password:
/// - a control character, which would end the line (or the value) early — a trailing newline, as
///   `echo pw | base64` adds, is the usual one;
/// - a value pgbouncer reads as a hash rather than a password (`md5` and 32 hex digits, or a SCRAM
///   secret): it could no longer log in to PostgreSQL on the client's behalf.
fn password(value: &str) -> Result<(), &'static str> {
    if value.chars().any(char::is_control) {
        return Err(
            "contains a control character (a trailing newline, as `echo` adds before base64, counts); \
             store the password without it",
        );
    }
    let md5 =
        value.len() == 35 && value.starts_with("md5") && value[3..].chars().all(|c| c.is_ascii_hexdigit());
    if md5 || value.starts_with("SCRAM-SHA-256$") {
        return Err("looks like an MD5 or SCRAM hash, which pgbouncer would not read as a password");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers() {
        let max = "a".repeat(63);
        for ok in ["a", "_", "app", "ledger_2", "_x9", max.as_str()] {
            assert_eq!(identifier(ok), Ok(()), "{ok:?}");
        }
        let long = "a".repeat(64);
        for (bad, problem) in [
            ("", "is empty"),
            ("2db", "starts with '2'"),
            ("App", "starts with 'A'"),
            ("app\nadmin_users = app", "has '\\n' at character 4"),
            ("app\r", "has '\\r' at character 4"),
            ("my-db", "has '-' at character 3"),
            ("db name", "has ' ' at character 3"),
            ("db;x", "has ';' at character 3"),
            ("db=x", "has '=' at character 3"),
            ("dé", "has 'é' at character 2"),
            ("\"q\"", "starts with '\"'"),
            (long.as_str(), "is 64 characters long"),
        ] {
            let err = identifier(bad).unwrap_err();
            assert!(err.starts_with(problem), "{bad:?}: {err}");
            assert!(err.ends_with("must match ^[a-z_][a-z0-9_]{0,62}$"), "{err}");
        }
    }

    #[test]
    fn passwords() {
        for ok in [
            "A".repeat(32).as_str(),
            "with space",
            "quote\"inside",
            "semi;colon#hash",
            "üñí©ødé",
            "md5-but-not-a-hash",
            "md5ABCDEFABCDEFABCDEFABCDEFABCDEFAG",
        ] {
            assert_eq!(password(ok), Ok(()), "{ok:?}");
        }
        for bad in [
            "pw\n",
            "p\rw",
            "p\tw",
            "p\0w",
            "p\u{7f}w",
            "p\u{85}w",
            "md5abcdefabcdefabcdefabcdefabcdefab",
            "SCRAM-SHA-256$4096:c2FsdA==$a:b",
        ] {
            assert!(password(bad).is_err(), "{bad:?}");
        }
    }

    fn good() -> Credentials {
        Credentials {
            superuser: "postgres".into(),
            superuser_password: "Secret-Su-pw".into(),
            database: "ledger".into(),
            app_user: "app".into(),
            app_password: "Secret-App-pw".into(),
            rotation: 0,
        }
    }

    #[test]
    fn the_first_bad_key_is_named_and_no_password_is_shown() {
        assert_eq!(check(&good()), Ok(()));
        type Spoil = fn(&mut Credentials);
        let cases: [(Spoil, &str); 5] = [
            (|c| c.superuser = "Postgres".into(), SUPERUSER_KEY),
            (|c| c.database = "ledger\n[pgbouncer]".into(), DATABASE_KEY),
            (|c| c.app_user = "app\"".into(), APP_USER_KEY),
            (|c| c.superuser_password.push('\n'), SUPERUSER_PASSWORD_KEY),
            (|c| c.app_password.push('\n'), APP_PASSWORD_KEY),
        ];
        for (spoil, key) in cases {
            let mut c = good();
            spoil(&mut c);
            let invalid = check(&c).unwrap_err();
            assert_eq!(invalid.key, key);
            let shown = message("ledger", &invalid);
            assert!(
                shown.starts_with(&format!("credentials Secret ledger-credentials: key {key} ")),
                "{shown}"
            );
            assert!(shown.contains("until the key is fixed"), "{shown}");
            for secret in ["Secret-Su-pw", "Secret-App-pw"] {
                assert!(!shown.contains(secret), "{shown}");
            }
        }
    }

    #[test]
    fn generated_credentials_pass() {
        for db in ["a", "ledger", "my-shop-db2", &"x".repeat(names::MAX_NAME_LEN)] {
            let c = crate::origin::generate(db).unwrap();
            assert_eq!(check(&c), Ok(()), "{db}");
        }
    }
}
