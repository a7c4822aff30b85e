//! Delivery benchmark (`bash bench/delivery.sh`): LEADS updates queued in the outbox, the real
//! delivery worker, and a HubSpot-like fake that enforces 100 requests per rolling 10 s and 100
//! records per batch. Prints drain time against the ideal, API calls per lead, requests past the
//! quota (target 0) and 429s received.
//!
//! The ideal: LEADS / 100 batch calls, of which the quota lets 100 through per 10 s; 10,000 leads
//! = 100 calls = one 10 s window.
//!
//! `REPLICAS=3` runs that many workers, each with its own connection pool, on one PostgreSQL
//! database (`LEADGATE_TEST_POSTGRES`, a fresh database for the run) instead of SQLite: they
//! share one lease and one quota, so the drain should take as long as with one worker.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_crm::{FakeHubSpot, HubSpotOptions};
use leadgate::config::{Config, EnvVars};
use leadgate::deliver::Worker;
use leadgate::lead::{Email, FieldName};
use leadgate::outbox::{Change, CrmUpdate};
use leadgate::store::postgres::testdb::TestDb;
use leadgate::store::postgres::PgStore;
use leadgate::store::sqlite::{outbox, SqliteStore};
use leadgate::store::Store;
use serde_json::json;
use tokio_util::sync::CancellationToken;

const WINDOW_MAX: u32 = 100;
const WINDOW: Duration = Duration::from_secs(10);
const BATCH: usize = 100;

fn update(i: usize) -> CrmUpdate {
    let mut fields = BTreeMap::new();
    let f = |n: &str| FieldName::parse(n).expect("known field");
    fields.insert(f("first_name"), json!("Ada"));
    fields.insert(f("last_name"), json!(format!("Lovelace {i}")));
    fields.insert(f("company"), json!("Analytical Engines Ltd"));
    fields.insert(f("job_title"), json!("VP Engineering"));
    let mut stage_values = BTreeMap::new();
    stage_values.insert(
        "lifecyclestage".to_string(),
        "marketingqualifiedlead".to_string(),
    );
    CrmUpdate {
        email: Email::parse(&format!("lead{i}@analytical-engines.io")).expect("valid email"),
        version: 1,
        fields,
        stage: "mql".into(),
        stage_rank: 3,
        stage_values,
        fit_score: 40,
        engagement_score: 20,
        score: 60,
        reason: "MQL: fit 40; engagement 20".into(),
        disqualified: None,
        changes: vec![Change::Created],
        at: None,
    }
}

#[tokio::main]
async fn main() {
    let leads: usize = std::env::var("LEADS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000);
    let fake = FakeHubSpot::start_with(HubSpotOptions {
        window_max: WINDOW_MAX,
        window: WINDOW,
        max_inputs: BATCH,
        daily_max: 1_000_000,
        ..HubSpotOptions::default()
    })
    .await;
    let dir = tempfile::tempdir().expect("temp dir");
    let env: EnvVars = [("HS".to_string(), fake.token())].into_iter().collect();
    let config = Config::from_toml(
        &format!(
            "[crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"\n\
             rate_limit = {{ requests = {WINDOW_MAX}, per_secs = {} }}\nbatch_size = {BATCH}\npoll_interval_ms = 20\n",
            fake.base_url,
            WINDOW.as_secs()
        ),
        "bench.toml",
        dir.path(),
        &env,
    )
    .expect("bench settings are valid");
    let replicas: usize = std::env::var("REPLICAS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let queued = Instant::now();
    let updates: Vec<CrmUpdate> = (0..leads).map(update).collect();
    let (store, replica_stores, _db): (Arc<dyn Store>, Vec<Arc<dyn Store>>, _) = if replicas > 0 {
        let db = TestDb::create("delivery_bench").expect("PostgreSQL for REPLICAS mode");
        let mut stores: Vec<Arc<dyn Store>> = Vec::new();
        for _ in 0..replicas {
            stores.push(Arc::new(PgStore::open(&db.url).await.expect("store opens")));
        }
        for u in updates {
            stores[0].enqueue_update(u).await.expect("enqueue");
        }
        (Arc::clone(&stores[0]), stores, Some(db))
    } else {
        let sqlite =
            Arc::new(SqliteStore::open(&dir.path().join("leadgate.db")).expect("store opens"));
        sqlite
            .write(move |c| {
                for u in &updates {
                    outbox::enqueue(c, u)?;
                }
                Ok(())
            })
            .await
            .expect("enqueue");
        let store: Arc<dyn Store> = sqlite;
        (Arc::clone(&store), vec![store], None)
    };
    let enqueue_time = queued.elapsed();

    let cancel = CancellationToken::new();
    let started = Instant::now();
    let runs: Vec<_> = replica_stores
        .iter()
        .map(|s| {
            let worker = Worker::new(&config.crm, Arc::clone(s), dir.path()).expect("worker");
            tokio::spawn(worker.run(cancel.clone()))
        })
        .collect();
    loop {
        let d = store.outbox_depth().await.expect("depth");
        if d.pending == 0 && d.in_flight == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let drain = started.elapsed();
    cancel.cancel();
    for run in runs {
        let _ = run.await;
    }

    let calls = fake.requests();
    let contacts = fake.contact_count();
    let ideal = WINDOW.as_secs_f64() * ((leads as f64 / BATCH as f64) / WINDOW_MAX as f64).ceil();
    let past_quota = fake.max_in_window().saturating_sub(WINDOW_MAX as usize);
    println!("leadgate delivery benchmark — {leads} leads, fake HubSpot {WINDOW_MAX} requests / {} s, {BATCH} records per batch", WINDOW.as_secs());
    println!(
        "{:<34}{:>12}",
        "store",
        if replicas > 0 {
            format!("postgres, {replicas} workers")
        } else {
            "sqlite, 1 worker".into()
        }
    );
    println!(
        "{:<34}{:>12}",
        "queued in (one transaction)",
        format!("{:.2} s", enqueue_time.as_secs_f64())
    );
    println!(
        "{:<34}{:>12}",
        "drain time",
        format!("{:.2} s", drain.as_secs_f64())
    );
    println!("{:<34}{:>12}", "ideal", format!("{ideal:.2} s"));
    println!(
        "{:<34}{:>12}",
        "ratio to ideal",
        format!("{:.3}", drain.as_secs_f64() / ideal)
    );
    println!("{:<34}{:>12}", "API calls", calls);
    println!(
        "{:<34}{:>12}",
        "API calls per lead",
        format!("{:.4}", calls as f64 / leads as f64)
    );
    println!(
        "{:<34}{:>12}",
        "max requests in any 10 s window",
        fake.max_in_window()
    );
    println!("{:<34}{:>12}", "requests past the quota", past_quota);
    println!("{:<34}{:>12}", "429s received", fake.rate_limited());
    println!("{:<34}{:>12}", "contacts in the fake", contacts);
    let ok = past_quota == 0 && fake.rate_limited() == 0 && contacts == leads;
    println!(
        "targets: 0 past quota, 0 x 429, every lead once: {}",
        if ok { "PASS" } else { "FAIL" }
    );
    if !ok {
        std::process::exit(1);
    }
}
