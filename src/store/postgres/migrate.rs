//! Schema migrations for PostgreSQL, tracked in `schema_migrations`. All of them run in one
//! transaction under a transaction-scoped advisory lock, so replicas starting together run them
//! once: the others wait for the lock, then find nothing left to do. (A transaction lock, unlike a
//! session lock, is released by a crash of its holder and works behind PgBouncer's transaction
//! pooling.) A database newer than this binary is refused rather than guessed at.

use sqlx::{PgPool, Row};

/// Every migration, in order; a database at version N has run the first N.
const MIGRATIONS: &[(&str, &str)] = &[(
    "0001_init",
    include_str!("../../../migrations/postgres/0001_init.sql"),
)];

/// The advisory lock key migrations run under ("leadgate" in ASCII).
const LOCK_KEY: i64 = 0x6c65_6164_6761_7465;

/// Brings the schema up to date; returns how many migrations ran.
pub async fn run(pool: &PgPool) -> Result<usize, String> {
    let mut tx = pool.begin().await.map_err(|e| e.to_string())?;
    sqlx::query("SELECT pg_advisory_xact_lock($1)")
        .bind(LOCK_KEY)
        .execute(&mut *tx)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version    BIGINT PRIMARY KEY,
            name       TEXT NOT NULL,
            applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
        )",
    )
    .execute(&mut *tx)
    .await
    .map_err(|e| e.to_string())?;
    let current: i64 = sqlx::query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations")
        .fetch_one(&mut *tx)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(|e| e.to_string())?;
    let known = MIGRATIONS.len() as i64;
    if current > known {
        return Err(format!(
            "the database is at schema version {current}, newer than this leadgate ({known}); upgrade leadgate"
        ));
    }
    let mut ran = 0;
    for (i, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        sqlx::raw_sql(sql)
            .execute(&mut *tx)
            .await
            .map_err(|e| format!("migration {name} failed: {e}"))?;
        sqlx::query("INSERT INTO schema_migrations (version, name) VALUES ($1, $2)")
            .bind(i as i64 + 1)
            .bind(*name)
            .execute(&mut *tx)
            .await
            .map_err(|e| e.to_string())?;
        ran += 1;
    }
    tx.commit().await.map_err(|e| e.to_string())?;
    Ok(ran)
}
