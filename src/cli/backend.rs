//! Where the registry is, and the registry every command works on.
//!
//! `--db` (or `$ROSTER_DB`) is read once into a [`Target`]: a PostgreSQL
//! URL when it starts with `postgres://` or `postgresql://`, a file path
//! otherwise. [`Target::open`] gives a [`roster::Registry`], the library's
//! registry over either backend: an `AgentRegistry` for everything the
//! trait does, with methods for the few things each backend does its own
//! way (the clock that stamps a registration, ad-hoc SQL, the name shown to
//! people).

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::time::Duration;

pub(crate) use roster::Registry;
use roster::{Error, PostgresOptions, SqlAccess, SqlOptions, SqlRows, SqliteOptions};

use super::exit::Failure;

/// Where `--db` points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Target {
    /// An SQLite file.
    File(PathBuf),
    /// A PostgreSQL database, as the URL was given (password included:
    /// show it only through [`Target::shown`]).
    Postgres(String),
    /// A PostgreSQL URL that is not UTF-8, as it may be shown (invalid
    /// bytes replaced, password hidden): refused when opened.
    BadUrl(String),
}

/// Whether a command creates the registry when there is none.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Create {
    /// Commands that write something of their own (an agent, a statement).
    Yes,
    /// Commands that only read, or that need an agent to exist: a mistyped
    /// `--db` is "no registry at PATH", not a new empty file (or a new set
    /// of tables).
    No,
}

impl Target {
    /// The target `--db` names; `default` when it was not given.
    pub(crate) fn of(db: Option<&OsStr>, default: &str) -> Self {
        let db = db.unwrap_or_else(|| OsStr::new(default));
        let bytes = db.as_bytes();
        if !bytes.starts_with(b"postgres://") && !bytes.starts_with(b"postgresql://") {
            return Self::File(PathBuf::from(db));
        }
        match db.to_str() {
            Some(url) => Self::Postgres(url.to_owned()),
            // Never a file: its name would be shown, password and all.
            None => Self::BadUrl(redact(&String::from_utf8_lossy(bytes))),
        }
    }

    /// The target as messages show it: the path, or the URL with its
    /// password replaced by `***`.
    pub(crate) fn shown(&self) -> String {
        match self {
            Self::File(path) => path.display().to_string(),
            Self::Postgres(url) => redact(url),
            Self::BadUrl(shown) => shown.clone(),
        }
    }

    /// Opens the registry, waiting up to `busy_timeout` for other
    /// processes (SQLite's lock, PostgreSQL's row locks and pool).
    pub(crate) fn open(&self, create: Create, busy_timeout: Duration) -> Result<Registry, Failure> {
        let create = matches!(create, Create::Yes);
        match self {
            Self::File(path) => Ok(Registry::Sqlite(
                SqliteOptions::new()
                    .busy_timeout(busy_timeout)
                    .create(create)
                    .open(path)?,
            )),
            Self::Postgres(url) => PostgresOptions::new()
                .busy_timeout(busy_timeout)
                .create(create)
                // One command makes one call at a time (the watcher and a
                // top's feed thread one more).
                .pool_size(2)
                .open(url)
                .map(Registry::Postgres)
                .map_err(|e| Failure::of_postgres(e, &redact(url))),
            Self::BadUrl(shown) => Err(Failure::of_postgres(
                Error::Invalid {
                    field: "url",
                    reason: "it is not UTF-8: write other bytes percent-encoded (%FF)".to_owned(),
                },
                shown,
            )),
        }
    }
}

/// `url` with the password taken out: `postgres://user:***@host/db`, and
/// `password=***` in its parameters (however the key is escaped:
/// `pass%77ord` is a password to the driver too).
pub(crate) fn redact(url: &str) -> String {
    if !url.contains("://") {
        return redact_key_values(url);
    }
    // First the parameters, so that an `@` in a password parameter cannot
    // pass for the end of the user part. Any `?` or `&` may start one: a
    // value cut short hides more, never less.
    let mut shown = String::with_capacity(url.len());
    let mut rest = url;
    while let Some(start) = rest.find(['?', '&']) {
        shown.push_str(&rest[..=start]);
        rest = &rest[start + 1..];
        let end = rest.find('&').unwrap_or(rest.len());
        if let Some((key, _)) = rest[..end].split_once('=')
            && decoded(key).eq_ignore_ascii_case("password")
        {
            shown.push_str(key);
            shown.push_str("=***");
            rest = &rest[end..];
        }
    }
    shown.push_str(rest);
    let Some((scheme, rest)) = shown.split_once("://") else {
        return shown;
    };
    // The last `@` ends the user and password, whatever they hold (a
    // password with `/`, `?` or `@` unescaped is still hidden).
    match rest.rfind('@') {
        Some(at) => match rest[..at].split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***{}", &rest[at..]),
            None => shown.clone(),
        },
        None => shown.clone(),
    }
}

/// A libpq `key=value` string with the value of `password` replaced by
/// `***`; one that cannot be read is not shown at all.
fn redact_key_values(text: &str) -> String {
    let mut shown = String::with_capacity(text.len());
    let mut rest = text;
    loop {
        let trimmed = rest.trim_start();
        shown.push_str(&rest[..rest.len() - trimmed.len()]);
        rest = trimmed;
        if rest.is_empty() {
            return shown;
        }
        let Some(eq) = rest.find('=') else {
            return "(a connection string that cannot be read; not shown)".to_owned();
        };
        let key = rest[..eq].trim_end();
        let after = &rest[eq + 1..];
        let value = after.trim_start();
        let gap = &after[..after.len() - value.len()];
        // The value: quoted with `'` (`\` escapes), or up to a blank.
        let end = if value.starts_with('\'') {
            let mut chars = value.char_indices().skip(1);
            loop {
                match chars.next() {
                    Some((_, '\\')) => {
                        chars.next();
                    }
                    Some((i, '\'')) => break i + 1,
                    Some(_) => {}
                    None => {
                        return "(a connection string that cannot be read; not shown)".to_owned();
                    }
                }
            }
        } else {
            let mut escaped = false;
            let mut end = value.len();
            for (i, c) in value.char_indices() {
                if escaped {
                    escaped = false;
                } else if c == '\\' {
                    escaped = true;
                } else if c.is_whitespace() {
                    end = i;
                    break;
                }
            }
            end
        };
        shown.push_str(&rest[..eq + 1]);
        shown.push_str(gap);
        if key.eq_ignore_ascii_case("password") {
            shown.push_str("***");
        } else {
            shown.push_str(&value[..end]);
        }
        rest = &value[end..];
    }
}

/// `text` with its `%XX` escapes decoded (bytes that do not decode are
/// kept as they are).
fn decoded(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = (bytes[i] == b'%')
            .then(|| text.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match hex {
            Some(byte) => {
                out.push(byte);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Runs one read-only statement of roster's own and returns its rows
/// (within the default time limit of ad-hoc SQL), on a pooled connection:
/// `top` and `metrics` run theirs again and again.
pub(crate) fn query(registry: &Registry, sql: &str) -> Result<SqlRows, Error> {
    let mut rows = Vec::new();
    let options = SqlOptions::new(SqlAccess::ReadOnly).pooled();
    let summary = registry.query_each(sql, &options, |_, row| {
        rows.push(row.to_vec());
        Ok(())
    })?;
    Ok(SqlRows {
        columns: summary.columns,
        rows,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_postgres_and_the_rest_are_files() {
        for url in [
            "postgres://h/db",
            "postgresql://u:p@h:5432/db?sslmode=require",
        ] {
            assert_eq!(
                Target::of(Some(OsStr::new(url)), "roster.db"),
                Target::Postgres(url.to_owned())
            );
        }
        for path in [
            "roster.db",
            "./postgres://x",
            "postgres.db",
            "/var/lib/r.db",
        ] {
            assert_eq!(
                Target::of(Some(OsStr::new(path)), "roster.db"),
                Target::File(PathBuf::from(path))
            );
        }
        assert_eq!(
            Target::of(None, "roster.db"),
            Target::File(PathBuf::from("roster.db"))
        );
        // A URL that is not UTF-8 is still a URL, never a file.
        assert_eq!(
            Target::of(
                Some(OsStr::from_bytes(b"postgres://u:secret@h/db\xff")),
                "roster.db"
            ),
            Target::BadUrl("postgres://u:***@h/db\u{fffd}".to_owned())
        );
    }

    #[test]
    fn passwords_never_show() {
        for (url, shown) in [
            (
                "postgres://roster:s3cret@db.example:5432/roster",
                "postgres://roster:***@db.example:5432/roster",
            ),
            (
                "postgresql://u:p/a?ss@h/db?sslmode=require&password=x",
                "postgresql://u:***@h/db?sslmode=require&password=***",
            ),
            (
                "postgres://h/db?password=x@y&sslmode=disable",
                "postgres://h/db?password=***&sslmode=disable",
            ),
            (
                "postgres://h/db?PASSWORD=x:y@z",
                "postgres://h/db?PASSWORD=***",
            ),
            ("postgres://roster@h/db", "postgres://roster@h/db"),
            ("postgres://h/db?password=x", "postgres://h/db?password=***"),
            ("postgres://h", "postgres://h"),
            (
                "postgres://h/db?pass%77ord=x&%70ASSWORD=y&sslmode=disable",
                "postgres://h/db?pass%77ord=***&%70ASSWORD=***&sslmode=disable",
            ),
            (
                "postgres://u:p@ss:/%w@h/db?password=x%zz",
                "postgres://u:***@h/db?password=***",
            ),
            (
                "host=h password=se cret=x port=1",
                "host=h password=*** cret=x port=1",
            ),
            (
                "host=h password = 'a b\\' c' dbname=d",
                "host=h password = *** dbname=d",
            ),
            (
                "password='open",
                "(a connection string that cannot be read; not shown)",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            assert_eq!(Target::Postgres(url.to_owned()).shown(), shown);
        }
    }
}
