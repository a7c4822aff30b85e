//! Delivery against fake CRMs on loopback (crates/fake-crm): updates are enqueued directly in
//! the outbox and the worker is driven step by step, or run and killed.
//!
//! Timing checks compare request arrival instants recorded by the fakes with the instant of the
//! refusal plus the wait the CRM asked for; nothing asserts how fast anything ran.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fake_crm::{
    FakeHubSpot, FakePipedrive, FakeReceiver, FakeSalesforce, Fault, HubSpotOptions,
    PipedriveOptions, Policy,
};
use leadgate::config::{Config, EnvVars};
use leadgate::deliver::{StepOutcome, Worker};
use leadgate::lead::{Email, FieldName};
use leadgate::outbox::{Change, CrmUpdate};
use leadgate::store::outbox::now_ms;
use leadgate::store::sqlite::{outbox, SqliteStore};
use leadgate::store::Store;
use serde_json::{json, Value};
use tempfile::TempDir;

use crate::support::AppBuilder;

const HS_TOKEN: &str = "hs-test-token";

fn env(pairs: &[(&str, &str)]) -> EnvVars {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn update(email: &str, version: i64, stage: &str, rank: u32) -> CrmUpdate {
    let mut fields = BTreeMap::new();
    fields.insert(FieldName::parse("first_name").unwrap(), json!("Ada"));
    fields.insert(FieldName::parse("last_name").unwrap(), json!("Lovelace"));
    fields.insert(
        FieldName::parse("company").unwrap(),
        json!("Analytical Engines"),
    );
    fields.insert(
        FieldName::parse("job_title").unwrap(),
        json!("VP Engineering"),
    );
    CrmUpdate {
        email: Email::parse(email).unwrap(),
        version,
        fields,
        stage: stage.to_string(),
        stage_rank: rank,
        stage_values: BTreeMap::new(),
        fit_score: 45,
        engagement_score: 20,
        score: 65,
        reason: "fit 45 (VP title); asked for a demo".into(),
        disqualified: None,
        changes: vec![Change::Created],
        at: None,
    }
}

/// A store in a temp dir and a worker for `[crm]` settings.
struct Rig {
    dir: TempDir,
    store: Arc<SqliteStore>,
    worker: Worker,
}

fn rig_in(dir: TempDir, crm: &str, vars: &[(&str, &str)]) -> Rig {
    let config = Config::from_toml(
        &format!("[crm]\n{crm}\n"),
        "test.toml",
        dir.path(),
        &env(vars),
    )
    .expect("crm settings are valid");
    let store = Arc::new(SqliteStore::open(&dir.path().join("data/leadgate.db")).unwrap());
    let worker = Worker::new(
        &config.crm,
        store.clone() as Arc<dyn Store>,
        &dir.path().join("data"),
    )
    .expect("worker builds");
    Rig { dir, store, worker }
}

fn rig(crm: &str, vars: &[(&str, &str)]) -> Rig {
    rig_in(tempfile::tempdir().unwrap(), crm, vars)
}

fn hubspot_rig(fake: &FakeHubSpot, extra: &str) -> Rig {
    rig(
        &format!(
            "kind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"\n{extra}",
            fake.base_url
        ),
        &[("HS", HS_TOKEN)],
    )
}

async fn enqueue_all(store: &SqliteStore, updates: Vec<CrmUpdate>) {
    store
        .write(move |c| {
            for u in &updates {
                outbox::enqueue(c, u)?;
            }
            Ok(())
        })
        .await
        .unwrap();
}

/// Steps until nothing is pending or in flight, waiting out pauses and backoff; returns the
/// outcomes of the steps that sent something.
async fn drain(r: &Rig, limit: Duration) -> Vec<StepOutcome> {
    let deadline = Instant::now() + limit;
    let mut sent = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "delivery did not finish in {limit:?}"
        );
        match r.worker.step().await.expect("step") {
            s @ StepOutcome::Sent(_) => sent.push(s),
            StepOutcome::Paused(p) => {
                tokio::time::sleep(p.until.saturating_duration_since(Instant::now())).await
            }
            StepOutcome::Standby => panic!("the only worker on a SQLite store always delivers"),
            StepOutcome::Idle { next_due_in } => {
                let d = r.store.outbox_depth().await.unwrap();
                if d.pending == 0 && d.in_flight == 0 {
                    return sent;
                }
                let wait = next_due_in.unwrap_or(Duration::from_millis(20));
                tokio::time::sleep(
                    wait.clamp(Duration::from_millis(5), Duration::from_millis(200)),
                )
                .await;
            }
        }
    }
}

/// `(attempts, next_attempt_at, last_error)` of a lead's outbox row.
fn outbox_row(dir: &Path, email: &str) -> Option<(i64, i64, Option<String>)> {
    let c = rusqlite::Connection::open(dir.join("data/leadgate.db")).unwrap();
    c.query_row(
        "SELECT attempts, next_attempt_at, last_error FROM outbox WHERE email = ?1",
        [email],
        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
    )
    .ok()
}

#[tokio::test]
async fn hubspot_receives_one_batch_upsert_with_the_mapped_properties_and_stage() {
    let fake = FakeHubSpot::start().await;
    let r = hubspot_rig(&fake, "");
    r.store
        .enqueue_update(update("Ada@Example.com", 1, "mql", 3))
        .await
        .unwrap();
    drain(&r, Duration::from_secs(10)).await;

    let batches = fake.batches();
    assert_eq!(batches.len(), 1);
    let input = &batches[0][0];
    assert_eq!(input["id"], "ada@example.com");
    assert_eq!(input["idProperty"], "email");
    let p = &input["properties"];
    assert_eq!(p["firstname"], "Ada");
    assert_eq!(p["lastname"], "Lovelace");
    assert_eq!(p["company"], "Analytical Engines");
    assert_eq!(p["jobtitle"], "VP Engineering");
    assert_eq!(p["lifecyclestage"], "marketingqualifiedlead");
    assert_eq!(p["leadgate_score"], "65");
    assert_eq!(p["leadgate_reason"], "fit 45 (VP title); asked for a demo");
    let c = fake.contact("ada@example.com").expect("contact created");
    assert_eq!(c.properties["lifecyclestage"], "marketingqualifiedlead");
    assert_eq!(r.store.outbox_depth().await.unwrap().pending, 0);
}

#[tokio::test]
async fn a_429_with_retry_after_pauses_all_delivery_until_it_has_passed() {
    let fake = FakeHubSpot::start().await;
    fake.rate_limit_next(1, Policy::TenSecondly, Some(1));
    let r = hubspot_rig(&fake, "");
    let updates = (0..3)
        .map(|i| update(&format!("l{i}@example.com"), 1, "lead", 2))
        .collect();
    enqueue_all(&r.store, updates).await;
    drain(&r, Duration::from_secs(15)).await;

    let arrivals = fake.arrivals();
    assert_eq!(fake.rate_limited(), 1);
    assert_eq!(arrivals[0].status, 429);
    let allowed = arrivals[0].at + Duration::from_secs(1);
    for a in &arrivals[1..] {
        assert!(
            a.at >= allowed,
            "a request arrived {:?} before Retry-After passed",
            allowed - a.at
        );
    }
    assert_eq!(
        arrivals.len(),
        2,
        "one refused batch, then one successful one"
    );
    for i in 0..3 {
        assert_eq!(fake.created_for(&format!("l{i}@example.com")), 1);
    }
    let dead = r.store.dead_letters(None).await.unwrap();
    assert!(dead.is_empty());
}

#[tokio::test]
async fn a_daily_429_parks_delivery_as_a_daily_pause_and_charges_no_attempt() {
    let fake = FakeHubSpot::start().await;
    fake.rate_limit_next(1, Policy::Daily, None);
    let r = hubspot_rig(&fake, "");
    r.store
        .enqueue_update(update("a@example.com", 1, "lead", 2))
        .await
        .unwrap();
    assert!(matches!(
        r.worker.step().await.unwrap(),
        StepOutcome::Sent(_)
    ));
    match r.worker.step().await.unwrap() {
        StepOutcome::Paused(p) => {
            assert_eq!(
                p.reason,
                leadgate::deliver::limiter::PauseReason::DailyLimit
            );
            assert!(p.until > Instant::now() + Duration::from_secs(59));
        }
        o => panic!("expected a pause, got {o:?}"),
    }
    let (attempts, _, err) = outbox_row(r.dir.path(), "a@example.com").unwrap();
    assert_eq!(attempts, 0);
    assert!(err.unwrap().contains("daily limit"));
    assert_eq!(fake.requests(), 1);
}

#[tokio::test]
async fn a_500_is_retried_with_backoff_and_then_delivered() {
    let fake = FakeHubSpot::start().await;
    fake.fail_next(2, Fault::Status(500));
    let r = hubspot_rig(&fake, "[crm.retry]\nbase_backoff_ms = 300\n");
    let (ref_at, ref_ms) = (Instant::now(), now_ms());
    r.store
        .enqueue_update(update("a@example.com", 1, "lead", 2))
        .await
        .unwrap();

    let StepOutcome::Sent(first) = r.worker.step().await.unwrap() else {
        panic!("the first step sends");
    };
    assert_eq!(first.retried, 1);
    let (attempts, next_at, err) = outbox_row(r.dir.path(), "a@example.com").unwrap();
    assert_eq!(attempts, 1);
    assert!(err.unwrap().contains("hubspot 500"));
    let failed_ms = ref_ms + fake.arrivals()[0].at.duration_since(ref_at).as_millis() as i64;
    assert!(
        next_at <= failed_ms + 300 + 50,
        "first backoff is at most the base"
    );

    drain(&r, Duration::from_secs(10)).await;
    let arrivals = fake.arrivals();
    assert_eq!(arrivals.len(), 3);
    assert_eq!(
        arrivals.iter().map(|a| a.status).collect::<Vec<_>>(),
        vec![500, 500, 200]
    );
    let second_ms = ref_ms + arrivals[1].at.duration_since(ref_at).as_millis() as i64;
    assert!(
        second_ms + 2 >= next_at,
        "the retry came before its backoff ended"
    );
    assert_eq!(fake.created_for("a@example.com"), 1);
    assert!(outbox_row(r.dir.path(), "a@example.com").is_none());
}

#[tokio::test]
async fn a_400_goes_to_dead_letters_with_the_crm_message_and_replay_after_a_fix_delivers_it() {
    let fake = FakeHubSpot::start().await;
    fake.remove_property("leadgate_reason");
    let r = hubspot_rig(&fake, "");
    r.store
        .enqueue_update(update("a@example.com", 1, "lead", 2))
        .await
        .unwrap();
    drain(&r, Duration::from_secs(10)).await;

    let dead = r.store.dead_letters(None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].crm, "hubspot");
    assert!(
        dead[0].message.contains("VALIDATION_ERROR"),
        "{}",
        dead[0].message
    );
    assert!(
        dead[0]
            .message
            .contains("Property \\\"leadgate_reason\\\" does not exist")
            || dead[0]
                .message
                .contains("Property \"leadgate_reason\" does not exist"),
        "{}",
        dead[0].message
    );
    assert_eq!(fake.requests(), 1, "a permanent error is not retried");
    assert!(fake.contact("a@example.com").is_none());

    // The operator creates the property in HubSpot, then replays.
    fake.add_property("leadgate_reason");
    let back = r
        .store
        .requeue_dead_letters(Some(vec![dead[0].id]))
        .await
        .unwrap();
    assert_eq!(back.requeued, 1);
    drain(&r, Duration::from_secs(10)).await;
    let c = fake
        .contact("a@example.com")
        .expect("delivered after replay");
    assert_eq!(
        c.properties["leadgate_reason"],
        "fit 45 (VP title); asked for a demo"
    );
    assert!(r.store.dead_letters(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn one_bad_record_in_a_batch_does_not_hold_back_the_others() {
    let fake = FakeHubSpot::start().await;
    let r = hubspot_rig(&fake, "");
    let mut bad = update("bad@example.com", 1, "lead", 2);
    bad.stage_values
        .insert("hs_lead_status".into(), "SOMEDAY".into());
    enqueue_all(
        &r.store,
        vec![update("good@example.com", 1, "lead", 2), bad],
    )
    .await;
    drain(&r, Duration::from_secs(10)).await;
    assert!(fake.contact("good@example.com").is_some());
    let dead = r.store.dead_letters(None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].email.as_str(), "bad@example.com");
    assert!(
        dead[0].message.contains("INVALID_OPTION"),
        "{}",
        dead[0].message
    );
}

#[tokio::test]
async fn a_backlog_of_1000_leads_goes_out_in_10_calls_and_never_over_quota() {
    let fake = FakeHubSpot::start_with(HubSpotOptions {
        window_max: 5,
        window: Duration::from_secs(1),
        ..HubSpotOptions::default()
    })
    .await;
    let r = hubspot_rig(&fake, "rate_limit = { requests = 5, per_secs = 1 }\n");
    let updates = (0..1000)
        .map(|i| update(&format!("lead{i}@example.com"), 1, "lead", 2))
        .collect();
    enqueue_all(&r.store, updates).await;
    let started = Instant::now();
    drain(&r, Duration::from_secs(60)).await;
    let took = started.elapsed();

    assert_eq!(fake.requests(), 10, "ceil(1000 / 100) calls");
    assert_eq!(fake.rate_limited(), 0);
    assert!(
        fake.max_in_window() <= 5,
        "saw {} in one window",
        fake.max_in_window()
    );
    for b in fake.batches() {
        assert_eq!(b.len(), 100);
        let ids: std::collections::HashSet<&str> =
            b.iter().filter_map(|i| i["id"].as_str()).collect();
        assert_eq!(ids.len(), 100, "no email twice in a batch");
    }
    assert_eq!(fake.contact_count(), 1000);
    eprintln!("1000 leads in 10 calls at 5 req/s took {took:?}");
}

#[tokio::test]
async fn a_stage_lowering_update_is_never_sent_and_older_states_never_follow_newer_ones() {
    let fake = FakeHubSpot::start().await;
    let r = hubspot_rig(&fake, "");
    r.store
        .enqueue_update(update("a@example.com", 1, "sql", 4))
        .await
        .unwrap();
    drain(&r, Duration::from_secs(10)).await;

    let mut lower = update("a@example.com", 2, "lead", 2);
    lower
        .fields
        .insert(FieldName::parse("job_title").unwrap(), json!("CTO"));
    r.store.enqueue_update(lower).await.unwrap();
    drain(&r, Duration::from_secs(10)).await;
    let batches = fake.batches();
    assert_eq!(batches.len(), 2);
    let p = &batches[1][0]["properties"];
    assert!(
        p.get("lifecyclestage").is_none(),
        "the lower stage was sent: {p}"
    );
    assert_eq!(p["jobtitle"], "CTO", "everything else still goes");
    assert_eq!(
        fake.contact("a@example.com").unwrap().properties["lifecyclestage"],
        "salesqualifiedlead"
    );

    // An older version arriving late is not queued at all.
    r.store
        .enqueue_update(update("a@example.com", 1, "mql", 3))
        .await
        .unwrap();
    assert_eq!(r.store.outbox_depth().await.unwrap().pending, 0);

    // A higher stage goes out again.
    r.store
        .enqueue_update(update("a@example.com", 3, "opportunity", 5))
        .await
        .unwrap();
    drain(&r, Duration::from_secs(10)).await;
    assert_eq!(
        fake.batches()[2][0]["properties"]["lifecyclestage"],
        "opportunity"
    );
    assert_eq!(
        fake.ignored_regressions(),
        0,
        "HubSpot never had to ignore a regression"
    );
}

#[tokio::test]
async fn coalesced_updates_send_only_the_newest_state() {
    let fake = FakeHubSpot::start().await;
    let r = hubspot_rig(&fake, "");
    for (v, stage, rank) in [(1, "lead", 2), (2, "mql", 3), (3, "sql", 4)] {
        r.store
            .enqueue_update(update("a@example.com", v, stage, rank))
            .await
            .unwrap();
    }
    drain(&r, Duration::from_secs(10)).await;
    assert_eq!(fake.requests(), 1);
    assert_eq!(
        fake.batches()[0][0]["properties"]["lifecyclestage"],
        "salesqualifiedlead"
    );
}

#[tokio::test]
async fn a_worker_killed_mid_batch_resumes_on_restart_without_duplicates() {
    let fake = FakeHubSpot::start().await;
    fake.set_delay(Duration::from_millis(400));
    let dir = tempfile::tempdir().unwrap();
    let crm = format!(
        "kind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"\n",
        fake.base_url
    );
    let first = rig_in(dir, &crm, &[("HS", HS_TOKEN)]);
    let emails: Vec<String> = (0..250).map(|i| format!("k{i}@example.com")).collect();
    enqueue_all(
        &first.store,
        emails.iter().map(|e| update(e, 1, "lead", 2)).collect(),
    )
    .await;

    let Rig { dir, store, worker } = first;
    let cancel = tokio_util::sync::CancellationToken::new();
    let task = tokio::spawn(worker.run(cancel.clone()));
    let deadline = Instant::now() + Duration::from_secs(10);
    // Sent, not yet answered: `requests()` counts answered ones, and once the answer is in, the
    // worker may record it before the abort below (it did on a loaded machine).
    while fake.started() == 0 {
        assert!(Instant::now() < deadline, "the worker never sent");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Killed while its first batch is in flight: nothing about it gets recorded.
    task.abort();
    let _ = task.await;
    let depth = store.outbox_depth().await.unwrap();
    assert_eq!(
        depth.in_flight, 100,
        "the interrupted batch is still marked in flight"
    );
    store.close().await.unwrap();
    drop(store);

    fake.set_delay(Duration::ZERO);
    // The restarted process holds the lease under a new term, which claims the interrupted rows.
    let second = rig_in(dir, &crm, &[("HS", HS_TOKEN)]);
    drain(&second, Duration::from_secs(20)).await;
    for e in &emails {
        assert!(fake.contact(e).is_some(), "{e} was not delivered");
        assert_eq!(fake.created_for(e), 1, "{e} was created twice");
    }
    assert_eq!(fake.contact_count(), 250);
}

#[tokio::test]
async fn delivery_resumes_after_sigkill_of_the_process_without_duplicates() {
    let fake = FakeHubSpot::start().await;
    fake.set_delay(Duration::from_millis(500));
    let dir = tempfile::tempdir().unwrap();
    let emails: Vec<String> = (0..150).map(|i| format!("p{i}@example.com")).collect();
    {
        let store = SqliteStore::open(&dir.path().join("data/leadgate.db")).unwrap();
        enqueue_all(
            &store,
            emails.iter().map(|e| update(e, 1, "lead", 2)).collect(),
        )
        .await;
        store.close().await.unwrap();
    }
    let builder = || {
        AppBuilder::new()
            .toml(&format!(
                "[crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"\npoll_interval_ms = 100\n",
                fake.base_url
            ))
            .env("HS", HS_TOKEN)
    };
    let app = builder().spawn_process(dir.path());
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.requests() == 0 {
        assert!(Instant::now() < deadline, "the service never delivered");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    app.signal("KILL");
    drop(app);

    fake.set_delay(Duration::ZERO);
    let again = builder().spawn_process(dir.path());
    let db = dir.path().join("data/leadgate.db");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let left: i64 =
            rusqlite::Connection::open_with_flags(&db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
                .and_then(|c| c.query_row("SELECT COUNT(*) FROM outbox", [], |r| r.get(0)))
                .unwrap_or(-1);
        if left == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{left} updates still pending after restart"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    again.signal("TERM");
    for e in &emails {
        assert_eq!(
            fake.created_for(e),
            1,
            "{e} was created {} times",
            fake.created_for(e)
        );
    }
}

#[tokio::test]
async fn replay_dead_letters_from_the_command_line() {
    let fake = FakeHubSpot::start().await;
    fake.remove_property("leadgate_score");
    let r = hubspot_rig(&fake, "");
    r.store
        .enqueue_update(update("a@example.com", 1, "lead", 2))
        .await
        .unwrap();
    drain(&r, Duration::from_secs(10)).await;
    let id = r.store.dead_letters(None).await.unwrap()[0].id;

    let cfg = r.dir.path().join("leadgate.toml");
    std::fs::write(
        &cfg,
        format!(
            "[store]\nurl = \"sqlite://data/leadgate.db\"\n[crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"\n",
            fake.base_url
        ),
    )
    .unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_leadgate"))
            .arg("--config")
            .arg(&cfg)
            .args(args)
            .env("HS", HS_TOKEN)
            .output()
            .expect("leadgate runs")
    };
    let list = run(&["replay", "--dead-letters", "--list"]);
    assert!(list.status.success());
    let text = String::from_utf8_lossy(&list.stdout);
    assert!(text.contains(&format!("{id}\thubspot")), "{text}");
    assert!(text.contains("leadgate_score"), "{text}");

    let missing = run(&["replay", "--dead-letters", "--id", "999999"]);
    assert!(!missing.status.success());

    fake.add_property("leadgate_score");
    let out = run(&["replay", "--dead-letters", "--id", &id.to_string()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("re-queued 1"));
    drain(&r, Duration::from_secs(10)).await;
    assert!(fake.contact("a@example.com").is_some());
}

// ---- Salesforce

fn salesforce_rig(fake: &FakeSalesforce, extra: &str) -> Rig {
    rig(
        &format!(
            "kind = \"salesforce\"\nbase_url = \"{}\"\nclient_id_env = \"SF_ID\"\nclient_secret_env = \"SF_SECRET\"\n{extra}",
            fake.base_url
        ),
        &[("SF_ID", "sf-client"), ("SF_SECRET", "sf-secret")],
    )
}

#[tokio::test]
async fn salesforce_refreshes_an_expired_session_and_continues() {
    let fake = FakeSalesforce::start().await;
    let r = salesforce_rig(&fake, "");
    enqueue_all(
        &r.store,
        vec![
            update("a@example.com", 1, "mql", 3),
            update("b@example.com", 1, "sql", 4),
        ],
    )
    .await;
    drain(&r, Duration::from_secs(10)).await;
    assert_eq!(fake.tokens_issued(), 1);
    let a = fake.lead("a@example.com").expect("upserted by external id");
    assert_eq!(a.fields["Status"], "Open - Not Contacted");
    assert_eq!(a.fields["FirstName"], "Ada");
    assert_eq!(
        fake.lead("b@example.com").unwrap().fields["Status"],
        "Working - Contacted"
    );

    fake.expire_tokens();
    enqueue_all(
        &r.store,
        vec![
            update("a@example.com", 2, "sql", 4),
            update("c@example.com", 1, "lead", 2),
        ],
    )
    .await;
    drain(&r, Duration::from_secs(10)).await;
    assert_eq!(fake.tokens_issued(), 2, "one refresh after the expiry");
    assert!(fake.arrivals().iter().any(|a| a.status == 401));
    assert_eq!(
        fake.lead("a@example.com").unwrap().fields["Status"],
        "Working - Contacted"
    );
    assert!(fake.lead("c@example.com").is_some());
    assert_eq!(fake.created_for("a@example.com"), 1);
    assert!(r.store.dead_letters(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn salesforce_pauses_before_the_daily_allowance_and_on_request_limit_exceeded() {
    let fake = FakeSalesforce::start().await;
    fake.set_api_used(96_000);
    let r = salesforce_rig(&fake, "batch_size = 1\n");
    enqueue_all(
        &r.store,
        vec![
            update("a@example.com", 1, "lead", 2),
            update("b@example.com", 1, "lead", 2),
        ],
    )
    .await;
    assert!(matches!(
        r.worker.step().await.unwrap(),
        StepOutcome::Sent(_)
    ));
    match r.worker.step().await.unwrap() {
        StepOutcome::Paused(p) => {
            assert_eq!(
                p.reason,
                leadgate::deliver::limiter::PauseReason::DailyLimit
            )
        }
        o => panic!("expected the 5 % reserve to pause delivery, got {o:?}"),
    }
    assert_eq!(fake.api_used(), 96_001);

    // Past the allocation Salesforce answers 403 REQUEST_LIMIT_EXCEEDED: a pause, not a failure.
    let fake = FakeSalesforce::start().await;
    fake.set_api_used(100_000);
    let r = salesforce_rig(&fake, "daily_reserve_percent = 0\n");
    r.store
        .enqueue_update(update("a@example.com", 1, "lead", 2))
        .await
        .unwrap();
    assert!(matches!(
        r.worker.step().await.unwrap(),
        StepOutcome::Sent(_)
    ));
    assert!(matches!(
        r.worker.step().await.unwrap(),
        StepOutcome::Paused(_)
    ));
    let (attempts, _, err) = outbox_row(r.dir.path(), "a@example.com").unwrap();
    assert_eq!(attempts, 0);
    assert!(err.unwrap().contains("REQUEST_LIMIT_EXCEEDED"));
    assert!(r.store.dead_letters(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn salesforce_record_errors_are_dead_letters_with_the_crm_message() {
    let fake = FakeSalesforce::start().await;
    let r = salesforce_rig(&fake, "");
    let mut bad = update("bad@example.com", 1, "mql", 3);
    bad.stage_values.insert("Status".into(), "Hot".into());
    enqueue_all(&r.store, vec![bad, update("ok@example.com", 1, "mql", 3)]).await;
    drain(&r, Duration::from_secs(10)).await;
    assert!(fake.lead("ok@example.com").is_some());
    let dead = r.store.dead_letters(None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(
        dead[0]
            .message
            .contains("INVALID_OR_NULL_FOR_RESTRICTED_PICKLIST: bad value for restricted picklist field: Hot (Status)"),
        "{}",
        dead[0].message
    );
}

// ---- Pipedrive

fn pipedrive_rig(fake: &FakePipedrive, extra: &str) -> Rig {
    rig(
        &format!(
            "kind = \"pipedrive\"\nbase_url = \"{}\"\ntoken_env = \"PD\"\n{extra}",
            fake.base_url
        ),
        &[("PD", "pd-test-token")],
    )
}

#[tokio::test]
async fn pipedrive_finds_or_creates_the_person_and_keeps_one_labelled_lead() {
    let fake = FakePipedrive::start().await;
    let ada_id = fake.add_person("Ada L.", "ada@example.com");
    let r = pipedrive_rig(&fake, "");
    enqueue_all(
        &r.store,
        vec![
            update("ada@example.com", 1, "mql", 3),
            update("grace@example.com", 1, "lead", 2),
        ],
    )
    .await;
    drain(&r, Duration::from_secs(20)).await;

    assert_eq!(
        fake.created_for("ada@example.com"),
        0,
        "the existing person was found"
    );
    // Issue 11, item 6: her open lead is looked up with documented parameters only (the fake
    // refuses others, as Pipedrive's spec has none such: archived leads moved to their own path).
    let lookups: Vec<String> = fake
        .arrivals()
        .into_iter()
        .filter(|a| a.method == "GET" && a.path == "/v1/leads")
        .map(|a| a.query)
        .collect();
    assert_eq!(lookups, vec![format!("person_id={ada_id}")]);
    assert_eq!(fake.persons_with("ada@example.com").len(), 1);
    assert_eq!(fake.persons_with("ada@example.com")[0].name, "Ada Lovelace");
    let ada_leads = fake.leads_of(ada_id);
    assert_eq!(ada_leads.len(), 1);
    assert_eq!(
        fake.label_name(&ada_leads[0].label_ids[0]).as_deref(),
        Some("mql")
    );
    let grace = fake.persons_with("grace@example.com");
    assert_eq!(grace.len(), 1, "created once");
    assert_eq!(fake.created_for("grace@example.com"), 1);

    // The next stage updates the same person and lead, without searching again.
    let searches = fake.searches();
    r.store
        .enqueue_update(update("grace@example.com", 2, "sql", 4))
        .await
        .unwrap();
    drain(&r, Duration::from_secs(20)).await;
    assert_eq!(fake.searches(), searches);
    assert_eq!(fake.persons_with("grace@example.com").len(), 1);
    let leads = fake.leads_of(grace[0].id);
    assert_eq!(leads.len(), 1);
    assert_eq!(
        fake.label_name(&leads[0].label_ids[0]).as_deref(),
        Some("sql")
    );
    assert!(r.store.dead_letters(None).await.unwrap().is_empty());
}

#[tokio::test]
async fn pipedrive_paces_by_its_rate_limit_headers_and_stops_at_a_429() {
    // leadgate is told a quota far above the account's, so only Pipedrive's own headers and
    // 429s can keep it within the window.
    let fake = FakePipedrive::start_with(PipedriveOptions {
        window_max: 4,
        ..PipedriveOptions::default()
    })
    .await;
    // Another integration on the same token used up the window: the first request gets a 429.
    fake.fail_next(1, Fault::Status(429));
    let r = pipedrive_rig(
        &fake,
        "rate_limit = { requests = 200, per_secs = 2 }\nsearch_rate_limit = { requests = 200, per_secs = 2 }\n",
    );
    let updates = (0..3)
        .map(|i| update(&format!("p{i}@example.com"), 1, "lead", 2))
        .collect();
    enqueue_all(&r.store, updates).await;
    drain(&r, Duration::from_secs(30)).await;

    let arrivals = fake.arrivals();
    assert_eq!(arrivals[0].status, 429);
    // x-ratelimit-reset is at least 1 s: nothing may arrive before it.
    let resume = arrivals[0].at + Duration::from_secs(1);
    assert!(arrivals[1].at >= resume, "kept sending right after a 429");
    assert_eq!(
        fake.rate_limited(),
        1,
        "x-ratelimit-remaining kept it from any other 429"
    );
    assert!(
        fake.max_in_window() <= 4,
        "saw {} in one window",
        fake.max_in_window()
    );
    for i in 0..3 {
        assert_eq!(fake.created_for(&format!("p{i}@example.com")), 1);
    }
    assert!(r.store.dead_letters(None).await.unwrap().is_empty());
}

// ---- generic webhook and dry run

/// A webhook rig posting to `receiver` at `/hooks/leads`, retrying after at most 5 ms.
fn webhook_rig(receiver: &FakeReceiver) -> Rig {
    rig(
        &format!(
            "kind = \"webhook\"\nurl = \"{}/hooks/leads\"\nsecret_env = \"WH\"\n[crm.retry]\nbase_backoff_ms = 5\n",
            receiver.base_url
        ),
        &[("WH", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")],
    )
}

#[tokio::test]
async fn the_webhook_connector_does_not_follow_redirects() {
    // Issue 11, item 7: a 3xx was followed (the Standard Webhooks spec: treat it as a failure).
    let receiver = FakeReceiver::start().await;
    receiver.redirect_next(1, 307, "/elsewhere");
    let r = webhook_rig(&receiver);
    r.store
        .enqueue_update(update("a@orbit-analytics.io", 1, "mql", 3))
        .await
        .unwrap();
    drain(&r, Duration::from_secs(10)).await;
    let got = receiver.received();
    assert_eq!(got.len(), 1, "sent once, not again to the Location");
    assert_eq!(got[0].path, "/hooks/leads");
    let dead = r.store.dead_letters(None).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].message.contains("redirect"), "{}", dead[0].message);
}

#[tokio::test]
async fn a_410_gone_stops_webhook_delivery_until_dead_letters_are_replayed() {
    // Issue 11, item 7: a 410 dead-lettered one lead and delivery went on to that endpoint.
    let receiver = FakeReceiver::start().await;
    receiver.fail_next(1, Fault::Status(410));
    let r = webhook_rig(&receiver);
    let updates = (0..3)
        .map(|i| update(&format!("l{i}@orbit-analytics.io"), 1, "mql", 3))
        .collect();
    enqueue_all(&r.store, updates).await;
    assert!(matches!(
        r.worker.step().await.unwrap(),
        StepOutcome::Sent(_)
    ));
    // Stopped: nothing more goes out, however often the worker looks.
    for _ in 0..3 {
        match r.worker.step().await.unwrap() {
            StepOutcome::Paused(p) => assert_eq!(p.reason.as_str(), "endpoint_gone"),
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(receiver.received().len(), 1);
    let depth = r.store.outbox_depth().await.unwrap();
    assert_eq!(
        (depth.dead_letters, depth.pending),
        (1, 2),
        "nothing is dropped"
    );

    // The operator fixes the receiver and replays the dead letters: delivery resumes.
    let requeued = r.store.requeue_dead_letters(None).await.unwrap();
    assert_eq!(requeued.requeued, 1);
    drain(&r, Duration::from_secs(10)).await;
    assert_eq!(receiver.received().len(), 4);
    let depth = r.store.outbox_depth().await.unwrap();
    assert_eq!((depth.dead_letters, depth.pending), (0, 0));
}

#[tokio::test]
async fn the_webhook_timestamp_is_the_events_time_and_the_same_in_every_retry() {
    // Issue 11, item 7: the payload's timestamp was the send time, so it changed between
    // retries of one webhook-id.
    let receiver = FakeReceiver::start().await;
    receiver.fail_next(1, Fault::Status(503));
    let r = webhook_rig(&receiver);
    let mut u = update("a@orbit-analytics.io", 4, "mql", 3);
    let at: chrono::DateTime<chrono::Utc> = "2026-11-20T12:00:00Z".parse().unwrap();
    u.at = Some(at);
    r.store.enqueue_update(u).await.unwrap();
    drain(&r, Duration::from_secs(10)).await;
    let got = receiver.received();
    assert_eq!(got.len(), 2, "one 503, one retry");
    for g in &got {
        let body: Value = serde_json::from_slice(&g.body).unwrap();
        assert_eq!(body["timestamp"], "2026-11-20T12:00:00Z");
        assert!(body["data"].get("at").is_none(), "the time is said once");
    }
    assert_eq!(got[0].header("webhook-id"), got[1].header("webhook-id"));
}

#[tokio::test]
async fn the_generic_webhook_is_signed_so_the_standard_webhooks_verifier_accepts_it() {
    use leadgate::ingest::verify::{self, Inbound, SchemeOptions, Secret};

    let receiver = FakeReceiver::start().await;
    let secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    let r = rig(
        &format!(
            "kind = \"webhook\"\nurl = \"{}/hooks/leads\"\nsecret_env = \"WH\"\n",
            receiver.base_url
        ),
        &[("WH", secret)],
    );
    r.store
        .enqueue_update(update("a@example.com", 7, "mql", 3))
        .await
        .unwrap();
    drain(&r, Duration::from_secs(10)).await;

    let got = receiver.received();
    assert_eq!(got.len(), 1);
    let body: Value = serde_json::from_slice(&got[0].body).unwrap();
    assert_eq!(body["type"], "lead.updated");
    assert_eq!(body["data"]["email"], "a@example.com");
    assert_eq!(body["data"]["stage"], "mql");

    let verifier = verify::build(
        "standard-webhooks",
        &SchemeOptions::default(),
        vec![Secret::new(secret)],
    )
    .unwrap();
    let mut headers = actix_web::http::header::HeaderMap::new();
    for (k, v) in &got[0].headers {
        headers.append(
            actix_web::http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            actix_web::http::header::HeaderValue::from_str(v).unwrap(),
        );
    }
    let url = format!("{}/hooks/leads", receiver.base_url);
    let inbound = Inbound {
        method: "POST",
        url: &url,
        url_is_exact: true,
        query: "",
        headers: &headers,
        body: &got[0].body,
        now: std::time::SystemTime::now(),
    };
    let verified = verifier.verify(&inbound).expect("the signature verifies");
    assert!(got[0].header("webhook-id").unwrap().ends_with("_7"));
    let _ = verified;
}

#[tokio::test]
async fn dry_run_records_the_requests_it_would_send() {
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml("", "test.toml", dir.path(), &env(&[])).unwrap();
    let store = Arc::new(SqliteStore::open(&dir.path().join("data/leadgate.db")).unwrap());
    let worker = Worker::new(
        &config.crm,
        store.clone() as Arc<dyn Store>,
        &dir.path().join("data"),
    )
    .unwrap();
    let r = Rig { dir, store, worker };
    r.store
        .enqueue_update(update("a@example.com", 1, "mql", 3))
        .await
        .unwrap();
    drain(&r, Duration::from_secs(10)).await;

    let text = std::fs::read_to_string(r.dir.path().join("data/crm-dry-run.jsonl")).unwrap();
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 1);
    let req = &lines[0]["request"];
    assert_eq!(req["method"], "POST");
    assert_eq!(
        req["url"],
        "https://api.hubapi.com/crm/v3/objects/contacts/batch/upsert"
    );
    assert_eq!(req["body"]["inputs"][0]["id"], "a@example.com");
    assert_eq!(
        req["body"]["inputs"][0]["properties"]["lifecyclestage"],
        "marketingqualifiedlead"
    );
    assert_eq!(r.store.outbox_depth().await.unwrap().pending, 0);
}
