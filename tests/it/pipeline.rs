//! The whole flow in one process: a signed webhook -> stored -> mapped -> qualified -> queued ->
//! delivered to a fake CRM; unmappable events and replay after a fix; reload under load.

use std::future::Future;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fake_crm::FakeHubSpot;
use hmac::{Hmac, Mac};
use leadgate::ingest::verify::Outbound;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{fixture, AppBuilder, Reply, TestApp};

const ADMIN: &str = "admin-test-token";

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

fn typeform_signed(secret: &str, body: &[u8]) -> Outbound {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut out = Outbound::new("", "application/json", body.to_vec());
    out.set_header("Typeform-Signature", format!("sha256={sig}"));
    out
}

/// Polls `f` until it returns Some, or fails after `limit`.
async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn admin_get(app: &TestApp, path: &str, token: Option<&str>) -> Reply {
    let mut req = app.client.get(format!("{}{path}", app.admin));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    crate::support::reply(req.send().await.unwrap()).await
}

async fn admin_post(app: &TestApp, path: &str, body: Value) -> Reply {
    let req = app
        .client
        .post(format!("{}{path}", app.admin))
        .bearer_auth(ADMIN)
        .json(&body);
    crate::support::reply(req.send().await.unwrap()).await
}

async fn lead(app: &TestApp, email: &str) -> Option<Value> {
    let r = admin_get(app, &format!("/admin/leads/{email}"), Some(ADMIN)).await;
    (r.status == 200).then_some(r.json)
}

fn typeform_source(mapping: &str) -> String {
    format!(
        "[[sources]]\nname = \"typeform\"\nscheme = \"typeform\"\nsecret_env = \"TF\"\nmapping = \"{mapping}\"\n"
    )
}

#[tokio::test]
async fn a_signed_typeform_webhook_reaches_hubspot_as_one_batch_upsert_with_its_stage() {
    let fake = FakeHubSpot::start().await;
    let app = AppBuilder::new()
        .toml(&typeform_source(&repo("mappings/typeform.toml")))
        .toml(&format!(
            "[crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"\npoll_interval_ms = 50\n",
            fake.base_url
        ))
        .env("TF", "tf-secret")
        .env("HS", &fake.token())
        .env("LEADGATE_ADMIN_TOKEN", ADMIN)
        .spawn()
        .await;
    let r = app
        .post(
            "typeform",
            &typeform_signed("tf-secret", &fixture("typeform/form_response.json")),
        )
        .await;
    assert_eq!(r.status, 202);

    let batches = eventually(Duration::from_secs(15), "the HubSpot batch", || async {
        let b = fake.batches();
        (!b.is_empty()).then_some(b)
    })
    .await;
    // Give a duplicate send the chance to show up before counting.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.batches().len(), 1, "exactly one batch upsert");
    assert_eq!(batches[0].len(), 1);
    let input = &batches[0][0];
    assert_eq!(input["idProperty"], "email");
    assert_eq!(input["id"], "ada.lovelace@analytical-engines.io");
    let p = &input["properties"];
    assert_eq!(p["email"], "ada.lovelace@analytical-engines.io");
    assert_eq!(p["firstname"], "Ada");
    assert_eq!(p["lastname"], "Lovelace");
    assert_eq!(p["company"], "Analytical Engines Ltd");
    assert_eq!(p["jobtitle"], "VP Engineering");
    assert_eq!(p["phone"], "+442071838750");
    // A VP at a 51-200 company who asked for a demo: sales qualified (rules.toml).
    assert_eq!(p["lifecyclestage"], "salesqualifiedlead");
    assert!(
        p["leadgate_reason"].as_str().unwrap().starts_with("SQL: "),
        "{p}"
    );

    // The admin API shows the same lead, its stage and why.
    let l = lead(&app, "Ada.Lovelace@analytical-engines.io")
        .await
        .expect("lead stored");
    assert_eq!(l["stage"], "sql");
    assert_eq!(l["source"], "typeform");
    assert_eq!(l["campaign"], "q4-demand-gen");
    assert_eq!(l["events"], json!([r.json["id"]]));
    assert!(!l["now"]["breakdown"].as_array().unwrap().is_empty());
}

#[tokio::test]
async fn an_unmappable_event_is_kept_with_its_reason_and_replay_after_a_fix_makes_it_a_lead() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("typeform.toml");
    let good = std::fs::read_to_string(repo("mappings/typeform.toml")).unwrap();
    // The admin's mistake: every email selector reads a key Typeform does not send.
    let broken = good.replace("].email\"", "].e_mail\"");
    assert_ne!(good, broken, "the shipped mapping selects answers' email");
    std::fs::write(&mapping, &broken).unwrap();
    let app = AppBuilder::new()
        .toml(&typeform_source(&mapping.display().to_string()))
        .env("TF", "tf-secret")
        .env("LEADGATE_ADMIN_TOKEN", ADMIN)
        .spawn()
        .await;
    let r = app
        .post(
            "typeform",
            &typeform_signed("tf-secret", &fixture("typeform/form_response.json")),
        )
        .await;
    assert_eq!(
        r.status, 202,
        "the webhook is accepted whatever the mapping says"
    );

    let events = eventually(Duration::from_secs(10), "the unmappable event", || async {
        let r = admin_get(&app, "/admin/events?status=unmappable", Some(ADMIN)).await;
        let list = r.json["events"].as_array().cloned().unwrap_or_default();
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(events[0]["id"], r.json["id"]);
    let reason = events[0]["reason"].as_str().unwrap();
    assert!(reason.contains("email"), "{reason}");
    assert!(
        !reason.contains("ada.lovelace"),
        "no personal data in the reason: {reason}"
    );
    assert!(lead(&app, "ada.lovelace@analytical-engines.io")
        .await
        .is_none());

    // Fix the file; the service reloads it (file change) — force it now rather than wait.
    std::fs::write(&mapping, &good).unwrap();
    leadgate::pipeline::reload(&app.config, &app.engine).expect("the fixed mapping loads");
    let replay = admin_post(
        &app,
        "/admin/events/replay",
        json!({ "source": "typeform" }),
    )
    .await;
    assert_eq!((replay.status, &replay.json["replayed"]), (200, &json!(1)));

    let l = eventually(Duration::from_secs(10), "the lead after replay", || async {
        lead(&app, "ada.lovelace@analytical-engines.io").await
    })
    .await;
    assert_eq!(l["stage"], "sql");
    let r = admin_get(&app, "/admin/events?status=unmappable", Some(ADMIN)).await;
    assert_eq!(r.json["events"], json!([]));
}

#[tokio::test]
async fn a_reload_swaps_mappings_atomically_under_concurrent_webhooks_and_a_bad_one_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let mapping = dir.path().join("generic.toml");
    // Two fields that always carry the same version marker: a half-swapped mapping would mix them.
    let version = |v: &str| {
        format!(
            "[[lead]]\nemail = \"$.email\"\n[lead.fields]\n\"custom.first\" = {{ value = \"{v}\" }}\n\"custom.second\" = {{ value = \"{v}\" }}\n"
        )
    };
    std::fs::write(&mapping, version("a")).unwrap();
    let app = std::sync::Arc::new(
        AppBuilder::new()
            .toml(&typeform_source(&mapping.display().to_string()))
            .env("TF", "tf-secret")
            .env("LEADGATE_ADMIN_TOKEN", ADMIN)
            .spawn()
            .await,
    );
    let mut senders = Vec::new();
    for i in 0..150 {
        let app = std::sync::Arc::clone(&app);
        senders.push(tokio::spawn(async move {
            let body = format!(r#"{{"event_id":"r-{i}","email":"lead{i}@example-corp.io"}}"#);
            app.post("typeform", &typeform_signed("tf-secret", body.as_bytes()))
                .await
                .status
        }));
    }
    for round in 0..20 {
        let v = if round % 2 == 0 { "b" } else { "a" };
        std::fs::write(&mapping, version(v)).unwrap();
        leadgate::pipeline::reload(&app.config, &app.engine).expect("valid mapping reloads");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // A broken file is refused and the last good one keeps serving.
    std::fs::write(&mapping, "[[lead]]\nemail = \"$..[\"\n").unwrap();
    let refused = leadgate::pipeline::reload(&app.config, &app.engine).unwrap_err();
    assert!(refused.to_string().contains("lead.email"), "{refused}");
    for s in senders {
        assert_eq!(s.await.unwrap(), 202, "no webhook fails during a reload");
    }
    for i in (0..150).step_by(7) {
        let l = eventually(Duration::from_secs(15), "every lead", || async {
            lead(&app, &format!("lead{i}@example-corp.io")).await
        })
        .await;
        let fields = &l["state"]["fields"];
        let first = &fields["custom.first"]["value"];
        assert!(first == "a" || first == "b", "{fields}");
        assert_eq!(
            first, &fields["custom.second"]["value"],
            "one mapping per event"
        );
    }
}

#[tokio::test]
async fn the_admin_api_needs_the_token_and_reports_the_funnel() {
    let app = AppBuilder::new()
        .toml(&typeform_source(&repo("mappings/typeform.toml")))
        .env("TF", "tf-secret")
        .env("LEADGATE_ADMIN_TOKEN", ADMIN)
        .spawn()
        .await;
    for (token, what) in [
        (None, "no token"),
        (Some("wrong"), "wrong token"),
        (Some(""), "empty token"),
    ] {
        let r = admin_get(&app, "/admin/funnel", token).await;
        assert_eq!((r.status, r.error()), (401, "unauthorized"), "{what}");
        assert!(r.headers.contains_key("www-authenticate"));
    }
    app.post(
        "typeform",
        &typeform_signed("tf-secret", &fixture("typeform/form_response.json")),
    )
    .await;
    eventually(Duration::from_secs(10), "the lead", || async {
        lead(&app, "ada.lovelace@analytical-engines.io").await
    })
    .await;
    let f = admin_get(&app, "/admin/funnel", Some(ADMIN)).await;
    assert_eq!(f.status, 200);
    assert_eq!(f.json["total"]["leads"], 1);
    assert_eq!(f.json["total"]["at_stage"]["sql"], 1);
    assert_eq!(f.json["total"]["reached"]["lead"], 1);
    let conv = f.json["total"]["conversion"].as_array().unwrap();
    let mql_to_sql = conv
        .iter()
        .find(|c| c["from"] == "mql" && c["to"] == "sql")
        .unwrap();
    assert_eq!(mql_to_sql["rate"], 1.0);
    assert_eq!(f.json["by_source"][0]["source"], "typeform");
    assert_eq!(f.json["by_source"][0]["campaign"], "q4-demand-gen");
    let dl = admin_get(&app, "/admin/dead-letters", Some(ADMIN)).await;
    assert_eq!((dl.status, &dl.json["dead_letters"]), (200, &json!([])));
    let missing = admin_post(&app, "/admin/dead-letters/42/replay", json!({})).await;
    assert_eq!((missing.status, missing.error()), (404, "not_found"));
    let bad = admin_get(&app, "/admin/events?status=bogus", Some(ADMIN)).await;
    assert_eq!((bad.status, bad.error()), (400, "bad_request"));
}

#[tokio::test]
async fn without_a_token_the_admin_api_is_off() {
    let app = AppBuilder::new().spawn().await;
    let r = admin_get(&app, "/admin/funnel", Some(ADMIN)).await;
    assert_eq!((r.status, r.error()), (404, "not_found"));
}

#[tokio::test]
async fn a_lead_gone_quiet_is_recycled_to_nurture_by_the_periodic_sweep() {
    use leadgate::store::{NewEvent, Store};
    let dir = tempfile::tempdir().unwrap();
    let store = std::sync::Arc::new(
        leadgate::store::sqlite::SqliteStore::open(&dir.path().join("data/leadgate.db")).unwrap(),
    );
    let pipeline = typeform_pipeline(store.clone(), &dir);
    store
        .insert_event(NewEvent {
            source: "typeform".into(),
            dedupe_key: "e1".into(),
            received_at_ms: 0,
            content_type: "application/json".into(),
            body: fixture("typeform/form_response.json").into(),
            payload: None,
        })
        .await
        .unwrap();
    // The fixture was submitted on 2026-11-20.
    let t0 = chrono::DateTime::parse_from_rfc3339("2026-11-21T00:00:00Z")
        .unwrap()
        .to_utc();
    assert_eq!(pipeline.step_at(t0).await.unwrap().processed, 1);
    let stage = |store: std::sync::Arc<leadgate::store::sqlite::SqliteStore>| async move {
        store
            .lead("ada.lovelace@analytical-engines.io")
            .await
            .unwrap()
            .unwrap()
            .0
    };
    assert_eq!(stage(store.clone()).await.stage, "sql");

    // rules.toml: mql/sql with no activity for 120 days (and engagement below 5) go to nurture.
    assert_eq!(
        pipeline
            .sweep_at(t0 + chrono::Duration::days(30))
            .await
            .unwrap(),
        0
    );
    assert_eq!(stage(store.clone()).await.stage, "sql");
    assert_eq!(
        pipeline
            .sweep_at(t0 + chrono::Duration::days(200))
            .await
            .unwrap(),
        1
    );
    let rec = stage(store.clone()).await;
    assert_eq!(rec.stage, "nurture");
    assert!(
        rec.state.contains("gone quiet"),
        "the recycle rule's name is the recorded reason"
    );
    // The recycle is news for the CRM: the pending snapshot is now the nurture one.
    let db = rusqlite::Connection::open(dir.path().join("data/leadgate.db")).unwrap();
    let payload: String = db
        .query_row(
            "SELECT payload FROM outbox WHERE email = 'ada.lovelace@analytical-engines.io'",
            [],
            |r| r.get(0),
        )
        .unwrap();
    let update: Value = serde_json::from_str(&payload).unwrap();
    assert_eq!(update["stage"], "nurture");
    assert_eq!(update["version"], 2);
    // Nothing else to do on a second pass.
    assert_eq!(
        pipeline
            .sweep_at(t0 + chrono::Duration::days(201))
            .await
            .unwrap(),
        0
    );

    // A late event from before the first one (a provider's retry) rebuilds the lead in
    // provider-time order: the recycle happened after both and is applied again at its time, so
    // the lead stays in nurture instead of jumping back to sql.
    let mut early: Value = serde_json::from_slice(&fixture("typeform/form_response.json")).unwrap();
    early["event_id"] = json!("early");
    early["form_response"]["submitted_at"] = json!("2026-11-19T09:00:00Z");
    store
        .insert_event(NewEvent {
            source: "typeform".into(),
            dedupe_key: "early".into(),
            received_at_ms: 0,
            content_type: "application/json".into(),
            body: serde_json::to_vec(&early).unwrap().into(),
            payload: None,
        })
        .await
        .unwrap();
    assert_eq!(
        pipeline
            .step_at(t0 + chrono::Duration::days(202))
            .await
            .unwrap()
            .processed,
        1
    );
    let rec = stage(store.clone()).await;
    assert_eq!(rec.stage, "nurture");
    let state: leadgate::qualify::LeadState = serde_json::from_str(&rec.state).unwrap();
    let path: Vec<(&str, String)> = state
        .history
        .iter()
        .map(|h| (h.to.as_str(), h.at.to_rfc3339()))
        .collect();
    assert_eq!(
        path,
        vec![
            ("sql", t0.to_rfc3339()),
            ("nurture", (t0 + chrono::Duration::days(200)).to_rfc3339())
        ],
        "the rebuilt history keeps its times"
    );
}

/// A pipeline over `store` with the shipped Typeform mapping and rules, driven by its steps.
fn typeform_pipeline(
    store: std::sync::Arc<dyn leadgate::store::Store>,
    dir: &tempfile::TempDir,
) -> leadgate::pipeline::Pipeline {
    use leadgate::pipeline::{Engine, Pipeline};
    let config = AppBuilder::new()
        .toml(&typeform_source(&repo("mappings/typeform.toml")))
        .env("TF", "tf-secret")
        .config(dir.path());
    let engine = std::sync::Arc::new(arc_swap::ArcSwap::from_pointee(
        Engine::load(&config).unwrap(),
    ));
    Pipeline::new(
        store,
        engine,
        std::sync::Arc::new(config.crm.clone()),
        config.pipeline.clone(),
        Default::default(),
        Default::default(),
    )
}

/// How the two events of [`history_after`] reach the pipeline.
#[derive(Clone, Copy, PartialEq)]
enum Arrival {
    /// Stored in provider-time order, processed in one step.
    InOrder,
    /// Stored the other way round, processed in one step.
    ReversedInOneBatch,
    /// The later event stored and processed first; the earlier one arrives after that (a slow
    /// replica's commit, a provider's late retry): the lead is rebuilt.
    LateAfterProcessing,
}

/// One lead's two Typeform events stored in the opposite order of their provider times give the
/// same fields and stage history as in provider-time order, whether they meet in one batch or
/// the earlier one arrives after the later one was processed (research pitfall 4). On SQLite
/// and, where a server answers, PostgreSQL.
#[tokio::test]
async fn one_leads_events_stored_out_of_provider_time_order_give_the_in_order_history() {
    use leadgate::store::Store;
    let dir = tempfile::tempdir().unwrap();
    let sqlite = |name: &str| -> std::sync::Arc<dyn Store> {
        std::sync::Arc::new(
            leadgate::store::sqlite::SqliteStore::open(&dir.path().join(name)).unwrap(),
        )
    };
    let in_order = history_after(sqlite("a.db"), &dir, Arrival::InOrder).await;
    assert_eq!(
        in_order
            .1
            .iter()
            .map(|(_, to, _, _)| to.as_str())
            .collect::<Vec<_>>(),
        vec!["lead", "sql"],
        "the short form made a lead, the full one an SQL"
    );
    let batch = history_after(sqlite("b.db"), &dir, Arrival::ReversedInOneBatch).await;
    assert_eq!(batch, in_order);
    let late = history_after(sqlite("c.db"), &dir, Arrival::LateAfterProcessing).await;
    assert_eq!(late, in_order);
    if let Some(db) = leadgate::store::postgres::testdb::TestDb::create("out_of_order_history") {
        let pg = std::sync::Arc::new(
            leadgate::store::postgres::PgStore::open(&db.url)
                .await
                .unwrap(),
        );
        assert_eq!(
            history_after(pg, &dir, Arrival::LateAfterProcessing).await,
            in_order
        );
    }
}

type History = Vec<(Option<String>, String, String, String)>;

/// Stores a short early form and the full later one as `arrival` says, runs the pipeline, and
/// returns the lead's fields and history as (from, to, cause, at).
async fn history_after(
    store: std::sync::Arc<dyn leadgate::store::Store>,
    dir: &tempfile::TempDir,
    arrival: Arrival,
) -> (String, History) {
    use leadgate::store::NewEvent;
    let pipeline = typeform_pipeline(store.clone(), dir);
    let full: Value = serde_json::from_slice(&fixture("typeform/form_response.json")).unwrap();
    let mut short = full.clone();
    short["event_id"] = json!("short-form");
    short["form_response"]["submitted_at"] = json!("2026-11-20T09:00:00Z");
    let answers = short["form_response"]["answers"]
        .as_array()
        .unwrap()
        .clone();
    short["form_response"]["answers"] = Value::Array(
        answers
            .into_iter()
            .filter(|a| ["work_email", "first_name"].contains(&a["field"]["ref"].as_str().unwrap()))
            .collect(),
    );
    let mut bodies = vec![("short", short), ("full", full)];
    if arrival != Arrival::InOrder {
        bodies.reverse();
    }
    let t = chrono::DateTime::parse_from_rfc3339("2026-11-21T00:00:00Z")
        .unwrap()
        .to_utc();
    for (key, body) in bodies {
        store
            .insert_event(NewEvent {
                source: "typeform".into(),
                dedupe_key: key.into(),
                received_at_ms: 0,
                content_type: "application/json".into(),
                body: serde_json::to_vec(&body).unwrap().into(),
                payload: None,
            })
            .await
            .unwrap();
        if arrival == Arrival::LateAfterProcessing {
            assert_eq!(pipeline.step_at(t).await.unwrap().processed, 1);
        }
    }
    if arrival != Arrival::LateAfterProcessing {
        assert_eq!(pipeline.step_at(t).await.unwrap().processed, 2);
    }
    let (rec, _) = store
        .lead("ada.lovelace@analytical-engines.io")
        .await
        .unwrap()
        .unwrap();
    let state: leadgate::qualify::LeadState = serde_json::from_str(&rec.state).unwrap();
    let history = state
        .history
        .iter()
        .map(|h| {
            (
                h.from.clone(),
                h.to.clone(),
                format!("{:?}", h.cause),
                h.at.to_rfc3339(),
            )
        })
        .collect();
    (serde_json::to_string(&state.fields).unwrap(), history)
}

/// A mapping for tests of one lead's successive events: `type` picks the engagement.
const EVENTS_MAPPING: &str = r#"
[[lead]]
email = "$.email"
[lead.fields]
company = "$.company"
job_title = "$.title"
company_size_min = "$.employees"

[[engagement]]
kind = "form_submit"
when = { select = "$.type", equals = "form" }
email = "$.email"

[[engagement]]
kind = "meeting_booked"
when = { select = "$.type", equals = "meeting" }
email = "$.email"

[[engagement]]
kind = "spam_complaint"
when = { select = "$.type", equals = "complaint" }
email = "$.email"
"#;

/// An app whose `events` source maps [`EVENTS_MAPPING`], delivering to `fake`.
async fn events_app(fake: &FakeHubSpot, dir: &std::path::Path) -> TestApp {
    let mapping = dir.join("events.toml");
    std::fs::write(&mapping, EVENTS_MAPPING).unwrap();
    AppBuilder::new()
        .toml(&format!(
            "[[sources]]\nname = \"events\"\nscheme = \"token\"\nsecret_env = \"EV\"\nmapping = \"{}\"\n",
            mapping.display()
        ))
        .toml(&format!(
            "[crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"\npoll_interval_ms = 50\n",
            fake.base_url
        ))
        .env("EV", "ev-token")
        .env("HS", &fake.token())
        .env("LEADGATE_ADMIN_TOKEN", ADMIN)
        .spawn()
        .await
}

/// Posts one event of `kind` for `email` and waits until the lead shows `events` events.
async fn post_event(app: &TestApp, n: usize, email: &str, kind: &str) -> Value {
    let body = json!({"id": n, "type": kind, "email": email, "company": "Orbit Analytics",
                      "title": "VP Engineering", "employees": 120});
    let mut out = Outbound::new("", "application/json", body.to_string().into_bytes());
    out.url = "?token=ev-token".into();
    assert_eq!(app.post("events", &out).await.status, 202);
    eventually(Duration::from_secs(15), "the event processed", || async {
        lead(app, email)
            .await
            .filter(|l| l["events"].as_array().is_some_and(|e| e.len() == n))
    })
    .await
}

/// Whether the store holds anything for the CRM about `email` (pending, delivered or dead).
fn queued_for_crm(app: &TestApp, email: &str) -> bool {
    let db = rusqlite::Connection::open(app.db_path()).unwrap();
    db.query_row(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE email = ?1)
             OR EXISTS (SELECT 1 FROM crm_delivered WHERE email = ?1)
             OR EXISTS (SELECT 1 FROM dead_letters WHERE email = ?1)",
        [email],
        |r| r.get(0),
    )
    .unwrap()
}

#[tokio::test]
async fn a_lead_disqualified_before_the_crm_knew_it_stays_out_on_every_later_event() {
    // Issue 11, item 2: the second event of a lead disqualified on its first reached HubSpot.
    let fake = FakeHubSpot::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = events_app(&fake, dir.path()).await;
    // rules.toml: acme-rival.com is a competitor.
    let spy = "pat@acme-rival.com";
    let l = post_event(&app, 1, spy, "form").await;
    assert_eq!(l["stage"], "disqualified");
    let l = post_event(&app, 2, spy, "meeting").await;
    assert_eq!(l["stage"], "disqualified");
    assert!(
        !queued_for_crm(&app, spy),
        "nothing about the competitor is queued for the CRM"
    );
    // A normal lead afterwards is delivered, so the worker was running all along.
    post_event(&app, 1, "ada@orbit-analytics.io", "form").await;
    eventually(
        Duration::from_secs(15),
        "the other lead delivered",
        || async { (!fake.batches().is_empty()).then_some(()) },
    )
    .await;
    let sent: Vec<Value> = fake.batches().into_iter().flatten().collect();
    assert!(sent.iter().all(|i| i["id"] != spy), "{sent:?}");
}

#[tokio::test]
async fn a_lead_the_crm_knows_hears_that_it_was_disqualified() {
    let fake = FakeHubSpot::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = events_app(&fake, dir.path()).await;
    let ada = "ada@orbit-analytics.io";
    post_event(&app, 1, ada, "form").await;
    eventually(Duration::from_secs(15), "the first delivery", || async {
        (fake.batches().len() == 1).then_some(())
    })
    .await;
    let l = post_event(&app, 2, ada, "complaint").await;
    assert_eq!(l["stage"], "disqualified");
    let batches = eventually(Duration::from_secs(15), "the second delivery", || async {
        let b = fake.batches();
        (b.len() == 2).then_some(b)
    })
    .await;
    let p = &batches[1][0]["properties"];
    assert_eq!(p["hs_lead_status"], "UNQUALIFIED", "{p}");
}
