//! Several `leadgate serve` processes on one PostgreSQL database (issue 12), against the fake
//! HubSpot enforcing its quota:
//!
//! - three replicas take webhooks spread over all of them (duplicates sent to two replicas at
//!   once, one lead's events split across replicas); the delivering replica is SIGKILLed
//!   mid-drain and restarted later: every acknowledged event is stored once, every lead reaches
//!   the CRM once with its newest state, no request goes past the quota, and the takeover time
//!   is printed;
//! - every replica's database connections are terminated (`pg_terminate_backend`) mid-load;
//! - the deliverer is SIGSTOPped past its lease and continued: it sends nothing more;
//! - the database goes away under a running replica (a proxy that cuts it off), turns read-only,
//!   or is unreachable at start.
//!
//! Each test gets its own database and says "skipped" where no PostgreSQL answers (unless
//! `LEADGATE_REQUIRE_POSTGRES=1`). Each replica has its own CRM token, so the fake's arrival log
//! tells who sent what. Nothing asserts how fast anything ran; takeover times are printed.

use std::collections::BTreeSet;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_crm::{FakeHubSpot, HubSpotOptions};
use leadgate::store::postgres::testdb::TestDb;
use leadgate::store::postgres::PgStore;
use sqlx::PgPool;
use tempfile::TempDir;

use crate::ops::{eventually, post_typeform, samples, typeform_signed, value};
use crate::support::{AppBuilder, ChildApp};

/// A lead per event; `company` and the provider's time come from the payload, so a lead's later
/// event carries its newer state.
const MAPPING: &str = "[[lead]]\nemail = \"$.email\"\nat = \"$.at\"\n[lead.fields]\ncompany = \"$.company\"\nlead_source = { value = \"replicas\" }\n";

/// The CRM quota the fake enforces and leadgate is told: 20 requests per 2 s rolling window.
const QUOTA: (u32, u64) = (20, 2);
/// A short lease so takeovers happen within seconds.
const LEASE_SECS: &str = "3";

struct Cluster {
    db: TestDb,
    pool: PgPool,
    fake: FakeHubSpot,
    dirs: Vec<TempDir>,
    apps: Vec<Option<ChildApp>>,
}

fn token(replica: usize) -> String {
    format!("hs-replica-{replica}")
}

fn email(i: usize) -> String {
    format!("r{i}@replica-corp.io")
}

fn builder(dir: &Path, fake: &FakeHubSpot, url: &str, replica: usize) -> AppBuilder {
    let mapping = dir.join("replicas.toml");
    std::fs::write(&mapping, MAPPING).unwrap();
    AppBuilder::new()
        .store(url)
        .toml(&format!(
            "[[sources]]\nname = \"typeform\"\nscheme = \"typeform\"\nsecret_env = \"TF\"\nmapping = \"{}\"\n",
            mapping.display()
        ))
        .toml(&format!(
            "[crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"\npoll_interval_ms = 50\nbatch_size = 5\nrate_limit = {{ requests = {}, per_secs = {} }}\nqueue_on = [\"created\", \"fields_changed\"]\n",
            fake.base_url, QUOTA.0, QUOTA.1
        ))
        .toml("[crm.retry]\nmax_attempts = 100000\nmax_age_secs = 86400\nbase_backoff_ms = 100\nmax_backoff_secs = 1\n")
        .env("TF", "tf-secret")
        .env("HS", &token(replica))
        // The lease holder's name starts with it, so tests can tell who holds the lease.
        .env("HOSTNAME", &format!("replica-{replica}"))
        .env("LEADGATE_CRM__LEASE_TTL_SECS", LEASE_SECS)
}

impl Cluster {
    /// None: no PostgreSQL here (the test says it was skipped).
    async fn start(test: &str, replicas: usize) -> Option<Cluster> {
        let db = TestDb::create(test)?;
        let fake = FakeHubSpot::start_with(HubSpotOptions {
            window_max: QUOTA.0,
            window: Duration::from_secs(QUOTA.1),
            ..HubSpotOptions::default()
        })
        .await;
        // Migrate once up front, then start the replicas together (they migrate again: no-op).
        let store = PgStore::open(&db.url)
            .await
            .expect("the test database opens");
        let pool = store.pool().clone();
        let mut c = Cluster {
            db,
            pool,
            fake,
            dirs: Vec::new(),
            apps: Vec::new(),
        };
        for r in 0..replicas {
            c.fake.accept_token(&token(r));
            c.dirs.push(tempfile::tempdir().unwrap());
            c.apps.push(None);
        }
        // One after the other: free ports are picked by binding and releasing, and replicas
        // starting at once could pick the same one.
        for r in 0..replicas {
            let b = builder(c.dirs[r].path(), &c.fake, &c.db.url, r);
            let dir = c.dirs[r].path().to_path_buf();
            c.apps[r] = Some(
                b.log_level("info")
                    .spawn_process_logged(&dir, &dir.join("log")),
            );
        }
        Some(c)
    }

    fn app(&self, r: usize) -> &ChildApp {
        self.apps[r].as_ref().expect("replica running")
    }

    fn restart(&mut self, r: usize) {
        let b = builder(self.dirs[r].path(), &self.fake, &self.db.url, r);
        let dir = self.dirs[r].path();
        self.apps[r] = Some(
            b.log_level("info")
                .spawn_process_logged(dir, &dir.join("log.restarted")),
        );
    }

    /// The replica whose `leadgate_delivery_leader{crm="hubspot"}` is 1, once exactly one is.
    /// The replica holding the unexpired delivery lease (holders are named after the replica's
    /// HOSTNAME), once its gauge says 1 and every other running replica's says 0.
    async fn leader(&self) -> usize {
        eventually(
            Duration::from_secs(60),
            "exactly one delivering replica",
            || async {
                let holder: Option<String> = sqlx::query_scalar(
                    "SELECT holder FROM delivery_lease
                      WHERE account = 'hubspot' AND expires_at > clock_timestamp()",
                )
                .fetch_optional(&self.pool)
                .await
                .unwrap();
                let holder = holder?;
                let by_lease: usize = holder
                    .strip_prefix("replica-")?
                    .split('-')
                    .next()?
                    .parse()
                    .ok()?;
                let mut leaders = Vec::new();
                for (r, app) in self.apps.iter().enumerate() {
                    let Some(app) = app else { continue };
                    let Ok(res) = app
                        .client
                        .get(format!("{}/metrics", app.admin))
                        .send()
                        .await
                    else {
                        continue;
                    };
                    let text = res.text().await.unwrap_or_default();
                    let m = samples(&text);
                    let v = value(&m, "leadgate_delivery_leader", &[("crm", "hubspot")]);
                    assert!(v.is_some(), "replica {r} exports leadgate_delivery_leader");
                    assert!(
                        text.contains("# HELP leadgate_delivery_leader "),
                        "replica {r} describes leadgate_delivery_leader"
                    );
                    if v == Some(1.0) {
                        leaders.push(r);
                    }
                }
                (leaders == [by_lease]).then_some(by_lease)
            },
        )
        .await
    }

    async fn count(&self, sql: &str) -> i64 {
        sqlx::query_scalar(sql).fetch_one(&self.pool).await.unwrap()
    }

    /// Every stored event processed, the outbox empty, and every lead in `leads` at the fake.
    async fn settle(&self, leads: &BTreeSet<usize>, within: Duration) {
        eventually(within, "every lead delivered", || async {
            let waiting = self
                .count("SELECT COUNT(*) FROM events WHERE status = 'received'")
                .await;
            let outbox = self.count("SELECT COUNT(*) FROM outbox").await;
            (waiting == 0
                && outbox == 0
                && leads
                    .iter()
                    .all(|i| self.fake.contact(&email(*i)).is_some()))
            .then_some(())
        })
        .await;
    }

    /// Each acknowledged event (by its Typeform event id) is in the inbox exactly once.
    async fn assert_stored_once(&self, keys: &BTreeSet<String>) {
        for key in keys {
            let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM events WHERE dedupe_key = $1")
                .bind(key)
                .fetch_one(&self.pool)
                .await
                .unwrap();
            assert_eq!(n, 1, "acknowledged event {key} is stored exactly once");
        }
    }

    /// No request went past the quota in any rolling window, and none was refused for it.
    fn assert_quota_held(&self) {
        assert_eq!(
            self.fake.rate_limited(),
            0,
            "the CRM never had to answer 429"
        );
        assert!(
            self.fake.max_in_window() <= QUOTA.0 as usize,
            "at most {} requests in any {} s window, saw {}",
            QUOTA.0,
            QUOTA.1,
            self.fake.max_in_window()
        );
    }
}

/// Posts one signed Typeform event to a replica; the status, or None when the connection failed.
async fn post(
    client: &reqwest::Client,
    base: &str,
    id: &str,
    i: usize,
    company: &str,
    at: &str,
) -> Option<u16> {
    let body = serde_json::json!({"event_id": id, "email": email(i), "company": company, "at": at})
        .to_string();
    post_typeform(client, base, &body).await
}

/// What a round of webhooks acknowledged: event ids, and the leads they created.
#[derive(Default)]
struct Sent {
    keys: BTreeSet<String>,
    leads: BTreeSet<usize>,
}

/// Sends leads `ids` spread over the running replicas: every lead's first event to replica
/// `i % n`; every 7th lead's event also to the next replica at the same moment (a duplicate);
/// every 5th lead a second, newer event to another replica (one lead split across replicas).
async fn send_round(c: &Cluster, ids: std::ops::Range<usize>) -> Sent {
    let bases: Vec<String> = c.apps.iter().flatten().map(|a| a.base.clone()).collect();
    let n = bases.len();
    let client = reqwest::Client::new();
    let mut tasks = Vec::new();
    for i in ids {
        let (client, bases) = (client.clone(), bases.clone());
        tasks.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            let first = format!("ev-{i}-a");
            let a = post(
                &client,
                &bases[i % n],
                &first,
                i,
                "Acme",
                "2026-11-20T09:00:00Z",
            );
            let dup = async {
                if i % 7 == 0 {
                    post(
                        &client,
                        &bases[(i + 1) % n],
                        &first,
                        i,
                        "Acme",
                        "2026-11-20T09:00:00Z",
                    )
                    .await
                } else {
                    None
                }
            };
            let (a, dup) = tokio::join!(a, dup);
            for s in [a, dup].into_iter().flatten() {
                assert!(
                    s == 202 || s == 200,
                    "a replica answered {s} to a valid webhook"
                );
                acked.push(first.clone());
            }
            if i % 5 == 0 {
                let second = format!("ev-{i}-b");
                let s = post(
                    &client,
                    &bases[(i + 2) % n],
                    &second,
                    i,
                    "Acme Newer",
                    "2026-11-20T10:00:00Z",
                )
                .await;
                assert!(matches!(s, Some(202) | Some(200)), "{s:?}");
                acked.push(second);
            }
            (i, acked)
        }));
    }
    let mut sent = Sent::default();
    for t in tasks {
        let (i, acked) = t.await.unwrap();
        if !acked.is_empty() {
            sent.leads.insert(i);
        }
        sent.keys.extend(acked);
    }
    sent
}

/// Every lead was created once at the CRM and carries its newest company.
fn assert_each_lead_once_with_newest_state(fake: &FakeHubSpot, leads: &BTreeSet<usize>) {
    for i in leads {
        let e = email(*i);
        assert_eq!(fake.created_for(&e), 1, "{e} was created once");
        let contact = fake.contact(&e).expect("delivered");
        let want = if i % 5 == 0 { "Acme Newer" } else { "Acme" };
        assert_eq!(
            contact.properties.get("company").map(String::as_str),
            Some(want),
            "{e} has its newest state"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_replicas_spend_one_quota_and_survive_a_sigkill_of_the_deliverer() {
    let Some(mut c) = Cluster::start("three_replicas", 3).await else {
        return;
    };
    let mut sent = send_round(&c, 0..150).await;
    let leader = c.leader().await;
    // Mid-drain: some batches delivered, most still queued (5 leads per request, 10 requests/s).
    eventually(Duration::from_secs(30), "the first deliveries", || async {
        (c.fake.requests() >= 8).then_some(())
    })
    .await;
    let killed_at = Instant::now();
    c.app(leader).signal("KILL");
    c.apps[leader] = None;
    let dead = token(leader);
    // More webhooks while the deliverer is gone.
    let more = send_round(&c, 150..200).await;
    sent.keys.extend(more.keys);
    sent.leads.extend(more.leads);
    let next = c.leader().await;
    assert_ne!(next, leader);
    let took_over = eventually(
        Duration::from_secs(30),
        "a request from the new deliverer",
        || async {
            c.fake
                .arrivals()
                .iter()
                .find(|a| a.at > killed_at && a.bearer() != Some(dead.as_str()))
                .map(|a| a.at.duration_since(killed_at))
        },
    )
    .await;
    println!(
        "replicas: takeover after SIGKILL of the deliverer took {:.1} s (lease {LEASE_SECS} s)",
        took_over.as_secs_f64()
    );
    // The killed replica comes back and stands by.
    c.restart(leader);
    c.settle(&sent.leads, Duration::from_secs(90)).await;
    c.assert_stored_once(&sent.keys).await;
    assert_each_lead_once_with_newest_state(&c.fake, &sent.leads);
    c.assert_quota_held();
    let events = c.count("SELECT COUNT(*) FROM events").await;
    assert_eq!(
        events as usize,
        sent.keys.len(),
        "nothing stored that was not acknowledged"
    );
    let processed = c.count("SELECT COUNT(*) FROM lead_events").await;
    assert_eq!(
        processed as usize,
        sent.keys.len(),
        "each event applied to its lead once"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn terminated_database_connections_mid_load_lose_and_repeat_nothing() {
    let Some(c) = Cluster::start("terminated_connections", 2).await else {
        return;
    };
    let stop = Arc::new(AtomicBool::new(false));
    let killer = {
        let (pool, db, stop) = (c.pool.clone(), c.db.name.clone(), Arc::clone(&stop));
        tokio::spawn(async move {
            let mut killed = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let n: i64 = sqlx::query_scalar(
                    "SELECT COUNT(pg_terminate_backend(pid)) FROM pg_stat_activity
                      WHERE datname = $1 AND application_name = 'leadgate' AND pid <> pg_backend_pid()",
                )
                .bind(&db)
                .fetch_one(&pool)
                .await
                .unwrap_or(0);
                killed += n;
                tokio::time::sleep(Duration::from_millis(150)).await;
            }
            killed
        })
    };
    // Webhooks during the terminations may get 503 (then the provider retries): only 2xx count.
    let bases: Vec<String> = c.apps.iter().flatten().map(|a| a.base.clone()).collect();
    let client = reqwest::Client::new();
    let mut acked = BTreeSet::new();
    let mut leads = BTreeSet::new();
    for i in 0..200 {
        let id = format!("ev-{i}-a");
        let base = &bases[i % bases.len()];
        for _ in 0..20 {
            match post(&client, base, &id, i, "Acme", "2026-11-20T09:00:00Z").await {
                Some(202) | Some(200) => {
                    acked.insert(id.clone());
                    leads.insert(i);
                    break;
                }
                Some(503) | None => tokio::time::sleep(Duration::from_millis(20)).await,
                Some(s) => panic!("unexpected {s}"),
            }
        }
    }
    stop.store(true, Ordering::Relaxed);
    let killed = killer.await.unwrap();
    assert!(killed > 0, "connections were terminated during the load");
    assert_eq!(acked.len(), 200, "every event was acknowledged in the end");
    c.settle(&leads, Duration::from_secs(90)).await;
    c.assert_stored_once(&acked).await;
    for i in &leads {
        assert_eq!(c.fake.created_for(&email(*i)), 1);
    }
    let applied = c.count("SELECT COUNT(*) FROM lead_events").await;
    assert_eq!(applied, 200, "each event applied once");
    println!("replicas: {killed} backends terminated during the load");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_deliverer_stopped_past_its_lease_sends_nothing_after_it_continues() {
    let Some(mut c) = Cluster::start("sigstop", 2).await else {
        return;
    };
    let sent = send_round(&c, 0..120).await;
    let leader = c.leader().await;
    eventually(Duration::from_secs(30), "the first deliveries", || async {
        (c.fake.requests() >= 4).then_some(())
    })
    .await;
    let lease = |pool: PgPool| async move {
        let row: (String, i64) =
            sqlx::query_as("SELECT holder, term FROM delivery_lease WHERE account = 'hubspot'")
                .fetch_one(&pool)
                .await
                .unwrap();
        row
    };
    let before = lease(c.pool.clone()).await;
    c.app(leader).signal("STOP");
    let stopped = token(leader);
    // Past the lease: the other replica takes over (a new holder and term) and delivers.
    let taken = eventually(Duration::from_secs(60), "a takeover", || async {
        let now = lease(c.pool.clone()).await;
        (now.0 != before.0 && now.1 > before.1).then_some(now)
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    let continued_at = Instant::now();
    c.app(leader).signal("CONT");
    c.settle(&sent.leads, Duration::from_secs(90)).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let late = c
        .fake
        .arrivals()
        .into_iter()
        .filter(|a| a.at > continued_at && a.bearer() == Some(stopped.as_str()))
        .count();
    if lease(c.pool.clone()).await == taken {
        // The new term held throughout: anything from the old deliverer would have been sent
        // under its lost term.
        assert_eq!(
            late, 0,
            "the replaced deliverer sent {late} requests after SIGCONT"
        );
    } else {
        // The lease moved again (a loaded machine let a renewal slip): the old process may have
        // won a new, valid term. The quota check below still holds everyone to one quota.
        println!("replicas: the lease changed hands again after SIGCONT; {late} requests under a new term");
    }
    c.assert_quota_held();
    assert_each_lead_once_with_newest_state(&c.fake, &sent.leads);
    // It rejoins as a standby.
    let now_leader = c.leader().await;
    assert_ne!(now_leader, leader);
    c.apps[leader] = None;
}

/// A TCP proxy to the PostgreSQL server that the test can cut (existing connections dropped, new
/// ones refused) and restore: the database going away under a running replica.
struct Proxy {
    port: u16,
    up: Arc<AtomicBool>,
    cut: Arc<tokio::sync::Notify>,
}

impl Proxy {
    async fn start(upstream: (String, u16)) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let up = Arc::new(AtomicBool::new(true));
        let cut = Arc::new(tokio::sync::Notify::new());
        let (up2, cut2) = (Arc::clone(&up), Arc::clone(&cut));
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if !up2.load(Ordering::Relaxed) {
                    continue; // dropped: the database is unreachable
                }
                let (up3, cut3, upstream) = (Arc::clone(&up2), Arc::clone(&cut2), upstream.clone());
                tokio::spawn(async move {
                    let Ok(mut out) = tokio::net::TcpStream::connect(upstream).await else {
                        return;
                    };
                    let cut = cut3.notified();
                    if !up3.load(Ordering::Relaxed) {
                        return;
                    }
                    tokio::select! {
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut out) => {}
                        _ = cut => {}
                    }
                });
            }
        });
        Proxy { port, up, cut }
    }

    fn set_up(&self, up: bool) {
        self.up.store(up, Ordering::Relaxed);
        if !up {
            self.cut.notify_waiters();
        }
    }
}

fn via_proxy(url: &str, port: u16) -> String {
    let (scheme, rest) = url.split_once("://").unwrap();
    let (auth_host, path) = rest.split_once('/').unwrap();
    let auth = auth_host
        .rsplit_once('@')
        .map(|(a, _)| format!("{a}@"))
        .unwrap_or_default();
    format!("{scheme}://{auth}127.0.0.1:{port}/{path}")
}

async fn ingest_and_ready(app: &ChildApp, i: usize) -> (u16, Option<String>, String, u16) {
    let body = serde_json::json!({"event_id": format!("pr-{i}"), "email": email(i), "company": "Acme", "at": "2026-11-20T09:00:00Z"}).to_string();
    let out = typeform_signed("tf-secret", body.as_bytes());
    let mut req = app
        .client
        .post(format!("{}/webhooks/typeform", app.base))
        .header("content-type", "application/json")
        .body(out.body.clone());
    for (k, v) in &out.headers {
        req = req.header(k, v);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    let retry = res
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let json: serde_json::Value = res.json().await.unwrap_or_default();
    let ready = app
        .client
        .get(format!("{}/readyz", app.admin))
        .send()
        .await
        .unwrap()
        .status()
        .as_u16();
    (
        status,
        retry,
        json["error"].as_str().unwrap_or("").to_string(),
        ready,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_gone_at_runtime_answers_503_and_recovers_without_a_restart() {
    let Some(db) = TestDb::create("database_gone") else {
        return;
    };
    let proxy = Proxy::start(("127.0.0.1".into(), 5432)).await;
    let fake = FakeHubSpot::start().await;
    fake.accept_token(&token(0));
    let dir = tempfile::tempdir().unwrap();
    let url = via_proxy(&db.url, proxy.port);
    let app = builder(dir.path(), &fake, &url, 0).spawn_process(dir.path());
    let (s, _, _, ready) = ingest_and_ready(&app, 1).await;
    assert_eq!((s, ready), (202, 200));

    proxy.set_up(false);
    let (s, retry, code, ready) = ingest_and_ready(&app, 2).await;
    assert_eq!((s, code.as_str()), (503, "store_unavailable"));
    assert!(retry.is_some(), "503 carries Retry-After");
    assert_eq!(
        ready, 503,
        "/readyz says not ready while the database is gone"
    );

    proxy.set_up(true);
    let (s, ready) = eventually(Duration::from_secs(30), "recovery", || async {
        let (s, _, _, ready) = ingest_and_ready(&app, 3).await;
        (s == 202 && ready == 200).then_some((s, ready))
    })
    .await;
    assert_eq!((s, ready), (202, 200));
    // Nothing that was refused was stored.
    let store = PgStore::open(&db.url).await.unwrap();
    let keys: Vec<String> = sqlx::query_scalar("SELECT dedupe_key FROM events ORDER BY id")
        .fetch_all(store.pool())
        .await
        .unwrap();
    assert_eq!(keys, vec!["pr-1".to_string(), "pr-3".to_string()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_read_only_database_answers_503_and_recovers_without_a_restart() {
    let Some(db) = TestDb::create("read_only") else {
        return;
    };
    let fake = FakeHubSpot::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = builder(dir.path(), &fake, &db.url, 0).spawn_process(dir.path());
    let admin = PgStore::open(&db.url).await.unwrap();
    let pool = admin.pool().clone();
    let set = |on: bool| {
        let pool = pool.clone();
        let name = db.name.clone();
        async move {
            // This pool's own sessions turn read-only too: ask for a writable transaction.
            let mut tx = pool.begin().await.unwrap();
            sqlx::query("SET TRANSACTION READ WRITE")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(&format!(
                "ALTER DATABASE {name} SET default_transaction_read_only = {}",
                if on { "on" } else { "off" }
            ))
            .execute(&mut *tx)
            .await
            .unwrap();
            tx.commit().await.unwrap();
            // Sessions pick the setting up when they connect.
            sqlx::query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE datname = $1 AND application_name = 'leadgate' AND pid <> pg_backend_pid()",
            )
            .bind(&name)
            .execute(&pool)
            .await
            .unwrap();
        }
    };
    set(true).await;
    let (s, retry, code, ready) =
        eventually(Duration::from_secs(30), "read-only refusals", || async {
            let r = ingest_and_ready(&app, 10).await;
            (r.0 == 503).then_some(r)
        })
        .await;
    assert_eq!((s, code.as_str(), ready), (503, "store_unavailable", 503));
    assert!(retry.is_some());
    set(false).await;
    eventually(Duration::from_secs(30), "recovery", || async {
        let (s, _, _, ready) = ingest_and_ready(&app, 11).await;
        (s == 202 && ready == 200).then_some(())
    })
    .await;
}

#[test]
fn an_unreachable_database_at_start_exits_1_naming_the_host_not_the_password() {
    let dir = tempfile::tempdir().unwrap();
    let port = crate::support::free_port();
    let config = dir.path().join("leadgate.toml");
    std::fs::write(
        &config,
        format!("[store]\nurl = \"postgres://leadgate:hunter2-secret@127.0.0.1:{port}/leads\"\n"),
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_leadgate"))
        .arg("--config")
        .arg(&config)
        .arg("serve")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("postgres://127.0.0.1:{port}/leads")),
        "the error names the server: {stderr}"
    );
    assert!(!stderr.contains("hunter2") && !stdout.contains("hunter2"));
}
