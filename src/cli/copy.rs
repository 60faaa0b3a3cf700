//! `roster copy`: an SQLite registry copied into PostgreSQL, for moving from
//! one host to several.

use std::path::Path;

use roster::{PostgresOptions, SqliteOptions};

use super::exit::{Failure, Outcome};
use super::printer::Printer;

/// `roster copy --from FILE --to URL [--replace]`.
pub(crate) fn run(
    out: &mut Printer,
    from: &Path,
    to: &str,
    replace: bool,
    busy_timeout: std::time::Duration,
) -> Outcome {
    let source = SqliteOptions::new()
        .busy_timeout(busy_timeout)
        .create(false)
        .open(from)
        .map_err(|e| Failure::of_file_named(e, "--from"))?;
    let target = PostgresOptions::new()
        .busy_timeout(busy_timeout)
        .open(to)
        .map_err(|e| Failure::of_postgres_named(e, &super::backend::redact(to), "--to"))?;
    let copied = target.copy_from(&source, replace)?;
    if out.json {
        return out.json(&serde_json::json!({
            "from": from.display().to_string(),
            "to": target.url(),
            "agents": copied.agents,
            "claims": copied.claims,
            "last_token": copied.last_token,
        }));
    }
    out.line(format_args!(
        "copied {} agent(s) and {} claim(s) (last token {}) from {} to {}",
        copied.agents,
        copied.claims,
        copied.last_token,
        from.display(),
        target.url()
    ))
}
