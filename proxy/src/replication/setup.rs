//! `pgstash replication setup`: checks what following the replication
//! stream needs on the upstream, creates the publication when it may, and
//! prints the exact SQL (or managed-service setting) for what it cannot
//! do itself. Exits non-zero while anything is missing.

use std::fmt::Write;

use crate::backend::connect::ConnectTarget;
use crate::backend::control;

/// One line of the report.
struct Check {
    what: String,
    ok: bool,
    /// What was done, or what to do.
    note: String,
}

/// The report, and whether everything is ready.
pub async fn run(target: &ConnectTarget, publication: &str) -> (String, bool) {
    let mut checks = Vec::new();
    match control::connect(target, "pgstash-setup").await {
        Ok(client) => check(&client, &target.user, publication, &mut checks).await,
        Err(e) => checks.push(Check {
            what: format!("connect to {}", target.upstream.display),
            ok: false,
            note: e.to_string(),
        }),
    }
    let ready = checks.iter().all(|c| c.ok);
    let mut out = String::new();
    let _ = writeln!(
        out,
        "pgstash replication setup: database {:?} on {} as {:?}",
        target.database, target.upstream.display, target.user
    );
    for c in &checks {
        let mark = if c.ok { "ok     " } else { "MISSING" };
        let _ = writeln!(out, "  {mark} {}: {}", c.what, c.note);
    }
    let _ = writeln!(
        out,
        "{}",
        if ready {
            "ready: start pgstash with --replication (or [replication] enabled = true)"
        } else {
            "not ready: fix what is MISSING, then run this again"
        }
    );
    (out, ready)
}

async fn check(
    client: &tokio_postgres::Client,
    user: &str,
    publication: &str,
    checks: &mut Vec<Check>,
) {
    let setting = |name: &'static str| async move {
        client
            .query_one(&format!("SHOW {name}"), &[])
            .await
            .map(|row| row.get::<_, String>(0))
    };
    match setting("wal_level").await {
        Ok(level) => checks.push(Check {
            what: format!("wal_level = {level}"),
            ok: level == "logical",
            note: if level == "logical" {
                "changes are decoded".into()
            } else {
                "ALTER SYSTEM SET wal_level = logical; then restart Postgres \
                 (RDS/Aurora: rds.logical_replication = 1 in the parameter group; \
                 Cloud SQL: the flag cloudsql.logical_decoding = on; Supabase: already logical)"
                    .into()
            },
        }),
        Err(e) => checks.push(failed("wal_level", e)),
    }
    let role = client
        .query_one(
            "SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await;
    match role {
        Ok(row) => {
            let can = row.get::<_, bool>(0);
            checks.push(Check {
                what: format!("role {user:?} may replicate"),
                ok: can,
                note: if can {
                    "REPLICATION (or superuser)".into()
                } else {
                    format!(
                        "as a superuser: ALTER ROLE {} REPLICATION; (RDS/Aurora: GRANT rds_replication TO {0};)",
                        quote_ident(user)
                    )
                },
            });
        }
        Err(e) => checks.push(failed("role attributes", e)),
    }
    let slots = client
        .query_one(
            "SELECT current_setting('max_replication_slots')::int - \
             (SELECT count(*) FROM pg_replication_slots)::int, \
             current_setting('max_wal_senders')::int - \
             (SELECT count(*) FROM pg_stat_replication)::int",
            &[],
        )
        .await;
    match slots {
        Ok(row) => {
            let (slots, senders) = (row.get::<_, i32>(0), row.get::<_, i32>(1));
            checks.push(Check {
                what: format!("free replication slots {slots}, free WAL senders {senders}"),
                ok: slots > 0 && senders > 0,
                note: if slots > 0 && senders > 0 {
                    "one of each per followed database and pgstash instance".into()
                } else {
                    "raise max_replication_slots / max_wal_senders (restart needed)".into()
                },
            });
        }
        Err(e) => checks.push(failed("replication slots", e)),
    }
    match setting("synchronous_standby_names").await {
        Ok(names) => {
            let matches = names_pgstash(&names);
            checks.push(Check {
                what: format!("synchronous_standby_names = {names:?}"),
                ok: !matches,
                note: if matches {
                    format!(
                        "names pgstash's replication connection (application_name '{}'), \
                         so commits could wait for pgstash: list your standbys by name",
                        super::stream::APPLICATION_NAME
                    )
                } else {
                    "pgstash is never a synchronous standby".into()
                },
            });
        }
        Err(e) => checks.push(failed("synchronous_standby_names", e)),
    }
    checks.push(ensure_publication(client, publication).await);
}

/// Whether a `synchronous_standby_names` value (`a, b`, `FIRST 1 (a, b)`,
/// `ANY 2 (*)`) names pgstash's replication connection: `*` or its
/// application name (compared as Postgres does, without case).
fn names_pgstash(value: &str) -> bool {
    value
        .split(|c: char| c == ',' || c == '(' || c == ')' || c.is_whitespace())
        .map(|name| name.trim_matches('"'))
        .any(|name| name == "*" || name.eq_ignore_ascii_case(super::stream::APPLICATION_NAME))
}

async fn ensure_publication(client: &tokio_postgres::Client, publication: &str) -> Check {
    let what = format!("publication {publication:?}");
    let existing = client
        .query_opt(
            "SELECT puballtables FROM pg_publication WHERE pubname = $1",
            &[&publication],
        )
        .await;
    let create = format!(
        "CREATE PUBLICATION {} FOR ALL TABLES;",
        quote_ident(publication)
    );
    match existing {
        Ok(Some(row)) => Check {
            what,
            ok: true,
            note: if row.get::<_, bool>(0) {
                "exists, for all tables".into()
            } else {
                "exists, for the tables it lists: writes to others are not seen".into()
            },
        },
        Ok(None) => match client.batch_execute(&create).await {
            Ok(()) => Check {
                what,
                ok: true,
                note: format!("created: {create}"),
            },
            Err(e) => Check {
                what,
                ok: false,
                note: format!(
                    "cannot create it ({}); as a superuser: {create}",
                    e.as_db_error().map(|d| d.message()).unwrap_or("error")
                ),
            },
        },
        Err(e) => failed("publication", e),
    }
}

fn failed(what: &str, e: tokio_postgres::Error) -> Check {
    Check {
        what: what.to_owned(),
        ok: false,
        note: format!("cannot check: {e}"),
    }
}

fn quote_ident(name: &str) -> String {
    crate::backend::params::quote_ident(name)
}

#[cfg(test)]
mod tests {
    use super::names_pgstash;

    #[test]
    fn synchronous_standby_names_that_would_make_pgstash_a_standby() {
        assert!(names_pgstash("*"));
        assert!(names_pgstash("FIRST 1 (replica1, *)"));
        assert!(names_pgstash("ANY 2 (a, \"PGSTASH\")"));
        assert!(names_pgstash("pgstash"));
        assert!(!names_pgstash(""));
        assert!(!names_pgstash("FIRST 1 (replica1, replica2)"));
        assert!(!names_pgstash("pgstash_replica"));
    }
}
