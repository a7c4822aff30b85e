//! Schema migrations, tracked in `PRAGMA user_version`. Each step runs once, in order, in its own
//! transaction; a database newer than this binary is refused rather than guessed at.

use rusqlite::Connection;

/// Every migration, in order; a database at version N has run the first N.
const MIGRATIONS: &[(&str, &str)] = &[
    (
        "0001_events",
        include_str!("../../../migrations/sqlite/0001_events.sql"),
    ),
    (
        "0002_leads",
        include_str!("../../../migrations/sqlite/0002_leads.sql"),
    ),
    (
        "0003_outbox",
        include_str!("../../../migrations/sqlite/0003_outbox.sql"),
    ),
    (
        "0004_lease",
        include_str!("../../../migrations/sqlite/0004_lease.sql"),
    ),
    (
        "0005_lead_inputs",
        include_str!("../../../migrations/sqlite/0005_lead_inputs.sql"),
    ),
];

pub fn run(conn: &mut Connection) -> Result<(), String> {
    let current: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|e| e.to_string())?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(format!(
            "the database is at schema version {current}, newer than this leadgate ({known}); upgrade leadgate"
        ));
    }
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let tx = conn.transaction().map_err(|e| e.to_string())?;
        tx.execute_batch(sql)
            .and_then(|_| tx.pragma_update(None, "user_version", (i + 1) as i64))
            .map_err(|e| format!("migration {name} failed: {e}"))?;
        tx.commit().map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_run_once_and_a_newer_schema_is_refused() {
        let mut c = Connection::open_in_memory().unwrap();
        run(&mut c).unwrap();
        run(&mut c).unwrap();
        let v: i64 = c
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .unwrap();
        assert_eq!(v, MIGRATIONS.len() as i64);
        c.pragma_update(None, "user_version", 999).unwrap();
        assert!(run(&mut c).unwrap_err().contains("newer"));
    }
}
