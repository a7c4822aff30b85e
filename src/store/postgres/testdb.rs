//! Test support (unit and black-box tests): a fresh database per test on the server named by
//! `LEADGATE_TEST_POSTGRES` (default `postgres://postgres@127.0.0.1:5432/postgres`), dropped when
//! the handle is dropped.
//!
//! Where no server answers, [`TestDb::create`] prints that the test is skipped and returns None,
//! so `cargo test` passes on a machine without PostgreSQL; with `LEADGATE_REQUIRE_POSTGRES=1`
//! (set by `.ci/run`) it panics instead, so CI never skips them silently.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

const DEFAULT_SERVER: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A database that exists for one test.
pub struct TestDb {
    /// The URL leadgate connects to.
    pub url: String,
    pub name: String,
    admin: PgConnectOptions,
}

fn server() -> String {
    std::env::var("LEADGATE_TEST_POSTGRES")
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| DEFAULT_SERVER.into())
}

fn required() -> bool {
    std::env::var("LEADGATE_REQUIRE_POSTGRES").is_ok_and(|v| v == "1")
}

/// Runs `f` on a runtime of its own in a thread of its own, so callers may be sync or async.
fn blocking<T: Send + 'static>(
    f: impl std::future::Future<Output = T> + Send + 'static,
) -> Option<T> {
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .ok()
            .map(|rt| rt.block_on(f))
    })
    .join()
    .ok()
    .flatten()
}

impl TestDb {
    /// Creates `leadgate_t_<random>`; None (after saying so) when the server is unreachable and
    /// PostgreSQL is not required.
    pub fn create(test: &str) -> Option<TestDb> {
        let server = server();
        let admin = match PgConnectOptions::from_str(&server) {
            Ok(o) => o.disable_statement_logging(),
            Err(e) => panic!("LEADGATE_TEST_POSTGRES is not a PostgreSQL URL: {e}"),
        };
        let name = format!(
            "leadgate_t_{}",
            uuid::Uuid::new_v4()
                .simple()
                .to_string()
                .get(..12)
                .unwrap_or("x")
        );
        let (opts, db) = (admin.clone(), name.clone());
        let created = blocking(async move {
            let mut c =
                tokio::time::timeout(Duration::from_secs(5), PgConnection::connect_with(&opts))
                    .await
                    .map_err(|_| "timed out".to_string())?
                    .map_err(|e| e.to_string())?;
            sqlx::query(&format!("CREATE DATABASE {db}"))
                .execute(&mut c)
                .await
                .map_err(|e| e.to_string())?;
            c.close().await.map_err(|e| e.to_string())
        })
        .unwrap_or_else(|| Err("the setup thread failed".into()));
        let at = super::display_name(&server);
        match created {
            Ok(()) => Some(TestDb {
                url: with_database(&server, &name),
                name,
                admin,
            }),
            Err(e) if required() => {
                panic!("PostgreSQL is required (LEADGATE_REQUIRE_POSTGRES=1) but not reachable at {at}: {e}")
            }
            Err(e) => {
                eprintln!("{test}: skipped: PostgreSQL not reachable at {at} ({e})");
                None
            }
        }
    }
}

/// `url` with its database (the path) replaced by `name`; the query (`?sslmode=...`) is kept.
fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, format!("?{q}")),
        None => (url, String::new()),
    };
    let authority = match base.split_once("://") {
        Some((scheme, rest)) => {
            let host = rest.split_once('/').map_or(rest, |(h, _)| h);
            format!("{scheme}://{host}")
        }
        None => base.to_string(),
    };
    format!("{authority}/{name}{query}")
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (opts, db) = (self.admin.clone(), self.name.clone());
        let dropped = blocking(async move {
            let mut c = PgConnection::connect_with(&opts).await?;
            sqlx::query(&format!("DROP DATABASE IF EXISTS {db} WITH (FORCE)"))
                .execute(&mut c)
                .await?;
            c.close().await
        });
        if !matches!(dropped, Some(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}
