//! Reliability suite (issue 7): the real binary as a child process, signed Typeform webhooks from
//! several concurrent clients, and the fake HubSpot as the CRM, while things go wrong:
//!
//! - crash: SIGKILL in the middle of a load run (acks arriving, a CRM batch in flight), restart on
//!   the same store: every acknowledged event is stored and reaches the CRM as one contact,
//!   created once;
//! - CRM outage: the fake refuses connections, then answers 503, then recovers: every lead ingested
//!   before and during the outage arrives exactly once, and the retries show in `/metrics`;
//! - 429 storm: consecutive 429s with `Retry-After`: no request arrives before the time the
//!   previous 429 gave, and everything arrives once afterwards.
//!
//! Convergence is waited for by polling with generous deadlines; nothing asserts how fast anything
//! ran, only ordering facts taken from the fake's arrival log. The refusal phase lasts
//! `LEADGATE_OUTAGE_SECS` (default 3 s); `bench/reliability.sh` runs this suite in release mode
//! with the 60 s of the issue. Each test prints one `reliability:` line of what it saw.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_crm::{FakeHubSpot, Fault, Policy};

use crate::ops::{eventually, load_builder, load_email, post_load, samples, value, Sample};
use crate::support::{assert_each_stored_once, AppBuilder, ChildApp};

/// Short retry settings so a test takes seconds: backoff from 100 ms, capped at 1 s, and enough
/// attempts that a minute-long outage never dead-letters anything.
const FAST_RETRY: &str = "[crm.retry]\nmax_attempts = 100000\nmax_age_secs = 86400\nbase_backoff_ms = 100\nmax_backoff_secs = 1\n";

fn builder(dir: &std::path::Path, fake: &FakeHubSpot) -> AppBuilder {
    load_builder(dir, fake).toml(FAST_RETRY)
}

/// How long the CRM refuses connections in the outage test.
fn outage() -> Duration {
    let secs = std::env::var("LEADGATE_OUTAGE_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(3.0);
    Duration::from_secs_f64(secs.max(0.5))
}

async fn metrics_of(app: &ChildApp) -> Vec<Sample> {
    samples(&app.metrics_text().await)
}

fn hubspot_requests(m: &[Sample], status: &str) -> f64 {
    value(
        m,
        "leadgate_crm_requests_total",
        &[("crm", "hubspot"), ("status", status)],
    )
    .unwrap_or(0.0)
}

fn read_only(db: &std::path::Path) -> rusqlite::Connection {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open the store read-only")
}

/// `SELECT COUNT(*) ...` on the store, or None while it is busy or not there yet.
fn count(db: &std::path::Path, sql: &str) -> Option<i64> {
    rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .and_then(|c| c.query_row(sql, [], |r| r.get(0)))
        .ok()
}

/// Nothing left to do: every stored event processed, the outbox empty.
fn settled(db: &std::path::Path) -> bool {
    count(db, "SELECT COUNT(*) FROM events WHERE status = 'received'") == Some(0)
        && count(db, "SELECT COUNT(*) FROM outbox") == Some(0)
}

/// Waits until nothing is left to do and every lead in `leads` is a contact at the fake.
async fn all_delivered(
    db: &std::path::Path,
    fake: &FakeHubSpot,
    leads: &[usize],
    within: Duration,
    what: &str,
) {
    eventually(within, what, || async {
        (settled(db)
            && leads
                .iter()
                .all(|i| fake.contact(&load_email(*i)).is_some()))
        .then_some(())
    })
    .await;
}

/// Posts leads `ids` from `clients` concurrent clients; returns the acknowledged (202) ones.
async fn post_all(app: &ChildApp, ids: std::ops::Range<usize>, clients: usize) -> Vec<usize> {
    let ids: Vec<usize> = ids.collect();
    let mut tasks = Vec::new();
    for part in ids.chunks(ids.len().div_ceil(clients).max(1)) {
        let (c, base, part) = (app.client.clone(), app.base.clone(), part.to_vec());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for i in part {
                if post_load(&c, &base, i).await == Some(202) {
                    acked.push(i);
                }
            }
            acked
        }));
    }
    let mut acked = Vec::new();
    for t in tasks {
        acked.extend(t.await.expect("sender task"));
    }
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crash_sigkill_mid_load_loses_no_acknowledged_lead_and_creates_each_contact_once() {
    const CLIENTS: usize = 6;
    const PER_CLIENT: usize = 5000;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/leadgate.db");
    let fake = FakeHubSpot::start().await;
    // Slow CRM answers, so a batch is in flight when the process is killed.
    fake.set_delay(Duration::from_millis(300));
    let app = builder(dir.path(), &fake).spawn_process(dir.path());

    let acked_so_far = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for w in 0..CLIENTS {
        let (c, base, n) = (
            app.client.clone(),
            app.base.clone(),
            Arc::clone(&acked_so_far),
        );
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..PER_CLIENT {
                let i = w * PER_CLIENT + k;
                match post_load(&c, &base, i).await {
                    Some(202) => {
                        acked.push(i);
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(s) => panic!("webhook {i} answered {s}"),
                    None => break, // the server is gone
                }
            }
            acked
        }));
    }
    // Acks still arriving, the CRM already fed and a batch waiting on it.
    eventually(
        Duration::from_secs(60),
        "load under way with a CRM batch in flight",
        || async {
            let fed = fake.requests() >= 2;
            let in_flight = fake.started() > fake.requests() as u64;
            (acked_so_far.load(Ordering::Relaxed) >= 300 && fed && in_flight).then_some(())
        },
    )
    .await;
    app.signal("KILL");
    let crm_before_kill = fake.contact_count();
    let mut acked = Vec::new();
    for s in senders {
        acked.extend(s.await.unwrap());
    }
    drop(app);
    assert!(
        acked.len() < CLIENTS * PER_CLIENT,
        "the load had finished before the kill"
    );

    // Every acknowledged event is in the store, once.
    assert_each_stored_once(&db, acked.iter().map(|i| format!("load-{i}")));
    let stored = count(&db, "SELECT COUNT(*) FROM events").unwrap_or(0);

    // Restart on the same store: the rest is processed and delivered.
    fake.set_delay(Duration::ZERO);
    let again = builder(dir.path(), &fake).spawn_process(dir.path());
    all_delivered(
        &db,
        &fake,
        &acked,
        Duration::from_secs(120),
        "every acknowledged lead in the CRM and nothing left to do",
    )
    .await;
    for i in &acked {
        let email = load_email(*i);
        assert_eq!(fake.created_for(&email), 1, "{email} created once");
    }
    // No duplicates at all, and no contact that was never stored.
    let sent: std::collections::BTreeSet<String> = fake
        .batches()
        .iter()
        .flatten()
        .filter_map(|input| input["id"].as_str().map(str::to_string))
        .collect();
    {
        let c = read_only(&db);
        for email in &sent {
            assert_eq!(fake.created_for(email), 1, "{email} created once");
            let key = email
                .strip_prefix("load")
                .and_then(|r| r.split_once('@'))
                .map(|(i, _)| format!("load-{i}"))
                .unwrap_or_default();
            let n: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM events WHERE dedupe_key = ?1",
                    [key],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 1, "{email} reached the CRM from a stored event");
        }
    }
    assert_eq!(fake.contact_count(), sent.len());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters"), Some(0));
    let resent = sent.iter().filter(|e| fake.upserts_for(e) > 1).count();
    drop(again);
    eprintln!(
        "reliability: crash | {} acked, {stored} stored, {crm_before_kill} contacts before SIGKILL; \
         after restart {} contacts, each created once ({resent} upserted again after the kill)",
        acked.len(),
        sent.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn crm_outage_refused_then_503_then_recovered_delivers_every_lead_once_with_backoff_in_metrics(
) {
    let refuse_for = outage();
    let fail_for = (refuse_for / 2).max(Duration::from_secs(1));
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/leadgate.db");
    let fake = FakeHubSpot::start().await;
    let app = builder(dir.path(), &fake).spawn_process(dir.path());

    // Before: delivered normally.
    let before = post_all(&app, 0..30, 3).await;
    assert_eq!(before.len(), 30);
    all_delivered(
        &db,
        &fake,
        &before,
        Duration::from_secs(30),
        "the first leads delivered",
    )
    .await;

    // Outage, part 1: connections refused. Leads keep coming in and are acknowledged.
    fake.go_down().await;
    let down_at = Instant::now();
    let started_at_down = fake.started();
    let mut during = Vec::new();
    for wave in 0..3 {
        let from = 100 + wave * 20;
        let acked = post_all(&app, from..from + 20, 2).await;
        assert_eq!(
            acked.len(),
            20,
            "webhooks are acknowledged while the CRM is down"
        );
        during.extend(acked);
        tokio::time::sleep(refuse_for / 4).await;
    }
    // Every waiting update has been tried and scheduled for later.
    eventually(
        Duration::from_secs(30),
        "every queued update tried at least once",
        || async {
            let untried = count(&db, "SELECT COUNT(*) FROM outbox WHERE attempts = 0")?;
            let queued = count(&db, "SELECT COUNT(*) FROM outbox")?;
            (untried == 0 && queued == during.len() as i64).then_some(())
        },
    )
    .await;
    {
        let c = read_only(&db);
        let mut q = c
            .prepare("SELECT email, attempts, last_error FROM outbox")
            .unwrap();
        let rows: Vec<(String, i64, Option<String>)> = q
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        for (email, attempts, err) in rows {
            assert!(attempts >= 1, "{email}");
            let err = err.unwrap_or_default();
            assert!(err.contains("connection failed"), "{email}: {err}");
        }
    }
    let left = refuse_for.saturating_sub(down_at.elapsed());
    tokio::time::sleep(left).await;
    let most_attempts = count(&db, "SELECT MAX(attempts) FROM outbox").unwrap_or(0);
    let m_down = metrics_of(&app).await;
    let refused = hubspot_requests(&m_down, "error");
    assert!(
        refused >= 2.0,
        "refused connections are counted as status=\"error\" and retried: {refused}"
    );
    assert!(
        value(&m_down, "leadgate_outbox_pending", &[]).unwrap_or(0.0) >= 1.0,
        "the outbox depth shows the backlog"
    );
    assert_eq!(
        fake.started(),
        started_at_down,
        "nothing reached the fake while it was down"
    );
    let requests_before_outage = fake.requests();

    // Outage, part 2: listening again, but every request answered 503.
    fake.set_failing(Some(Fault::Status(503)));
    fake.come_up();
    let failing_at = Instant::now();
    let more = post_all(&app, 200..220, 2).await;
    assert_eq!(more.len(), 20);
    during.extend(more);
    eventually(
        fail_for + Duration::from_secs(30),
        "the 503 phase to last its time and see retries",
        || async {
            let n503 = fake.arrivals().iter().filter(|a| a.status == 503).count();
            (failing_at.elapsed() >= fail_for && n503 >= 2).then_some(())
        },
    )
    .await;
    let m_503 = metrics_of(&app).await;
    assert!(hubspot_requests(&m_503, "503") >= 2.0);
    assert!(
        value(&m_503, "leadgate_outbox_pending", &[]).unwrap_or(0.0) >= 1.0,
        "still queued while the CRM answers 503"
    );

    // Recovery: everything arrives, exactly once.
    fake.set_failing(None);
    let recovered_at = Instant::now();
    all_delivered(
        &db,
        &fake,
        &during,
        Duration::from_secs(60),
        "every lead delivered after the outage",
    )
    .await;
    let drained_in = recovered_at.elapsed();
    for i in before.iter().chain(&during) {
        let email = load_email(*i);
        assert_eq!(fake.created_for(&email), 1, "{email} created once");
        assert_eq!(fake.upserts_for(&email), 1, "{email} written once");
    }
    assert_eq!(fake.contact_count(), before.len() + during.len());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters"), Some(0));
    let arrivals = fake.arrivals();
    let n503 = arrivals.iter().filter(|a| a.status == 503).count();
    assert_eq!(
        arrivals.len() - requests_before_outage,
        n503 + arrivals[requests_before_outage..]
            .iter()
            .filter(|a| a.status == 200)
            .count(),
        "after the outage only 503s and successes"
    );

    // The backoff in /metrics: refused and 503 attempts, records retried, the outbox drained.
    let m = metrics_of(&app).await;
    let retried = value(
        &m,
        "leadgate_crm_records_total",
        &[("crm", "hubspot"), ("outcome", "retry")],
    )
    .unwrap_or(0.0);
    assert!(
        retried >= during.len() as f64,
        "every lead queued during the outage was retried: {retried}"
    );
    assert!(hubspot_requests(&m, "error") >= refused);
    assert_eq!(hubspot_requests(&m, "503"), n503 as f64);
    assert!(hubspot_requests(&m, "200") >= 2.0);
    assert_eq!(value(&m, "leadgate_outbox_pending", &[]), Some(0.0));
    assert_eq!(value(&m, "leadgate_dead_letters", &[]), Some(0.0));
    drop(app);
    eprintln!(
        "reliability: outage | refused {:.1} s then 503 for {:.1} s; {} leads before, {} during; \
         {refused} refused requests (a record tried at most {most_attempts} times by then), \
         {n503} answered 503, {retried} record retries; \
         all {} delivered once, {:.1} s after recovery",
        refuse_for.as_secs_f64(),
        fail_for.as_secs_f64(),
        before.len(),
        during.len(),
        before.len() + during.len(),
        drained_in.as_secs_f64()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn storm_of_429s_no_request_arrives_before_retry_after_and_every_lead_arrives_once() {
    // Several consecutive 429s, each with its own Retry-After.
    let retry_after = [1_u64, 2, 1, 1];
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("data/leadgate.db");
    let fake = FakeHubSpot::start().await;
    for s in retry_after {
        fake.rate_limit_next(1, Policy::TenSecondly, Some(s));
    }
    let app = builder(dir.path(), &fake).spawn_process(dir.path());

    let mut acked = post_all(&app, 0..60, 4).await;
    assert_eq!(acked.len(), 60);
    // More leads while the CRM is refusing.
    eventually(Duration::from_secs(30), "the first 429", || async {
        (fake.rate_limited() >= 1).then_some(())
    })
    .await;
    let more = post_all(&app, 60..100, 4).await;
    assert_eq!(more.len(), 40, "webhooks are acknowledged during the storm");
    acked.extend(more);

    all_delivered(
        &db,
        &fake,
        &acked,
        Duration::from_secs(60),
        "every lead delivered after the storm",
    )
    .await;

    let mut arrivals = fake.arrivals();
    arrivals.sort_by_key(|a| a.at);
    assert_eq!(fake.rate_limited(), retry_after.len());
    let statuses: Vec<u16> = arrivals.iter().map(|a| a.status).collect();
    assert!(
        statuses[..retry_after.len()].iter().all(|s| *s == 429),
        "the storm is the first requests: {statuses:?}"
    );
    assert!(statuses[retry_after.len()..].iter().all(|s| *s == 200));
    // Nothing arrives before the time the previous 429 gave.
    let mut margin = Duration::MAX;
    for (k, secs) in retry_after.iter().enumerate() {
        let allowed = arrivals[k].at + Duration::from_secs(*secs);
        for later in &arrivals[k + 1..] {
            assert!(
                later.at >= allowed,
                "a request arrived {:?} before the Retry-After of 429 #{} had passed",
                allowed - later.at,
                k + 1
            );
        }
        margin = margin.min(arrivals[k + 1].at - allowed);
    }
    for i in &acked {
        let email = load_email(*i);
        assert_eq!(fake.created_for(&email), 1, "{email} created once");
        assert_eq!(fake.upserts_for(&email), 1, "{email} written once");
    }
    assert_eq!(fake.contact_count(), acked.len());
    assert_eq!(count(&db, "SELECT COUNT(*) FROM dead_letters"), Some(0));
    let m = metrics_of(&app).await;
    assert_eq!(hubspot_requests(&m, "429"), retry_after.len() as f64);
    assert!(
        value(
            &m,
            "leadgate_crm_pauses_total",
            &[("reason", "rate_limited")]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    drop(app);
    eprintln!(
        "reliability: 429 storm | {} consecutive 429s (Retry-After {:?} s), {} requests in all; \
         earliest request after a 429 came {:.0} ms after its Retry-After; {} leads delivered once",
        retry_after.len(),
        retry_after,
        arrivals.len(),
        margin.as_secs_f64() * 1000.0,
        acked.len()
    );
}
