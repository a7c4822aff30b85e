//! What an operator relies on: `/metrics` after real traffic, the admin API's token check and its
//! endpoints end to end (a dead letter fixed and replayed), `leadgate probe`, and a SIGTERM during
//! load that loses nothing acknowledged.
//!
//! The metrics recorder is process-wide and shared by every test in this binary, so each test
//! uses its own source names and asserts on its own labels, or on increases across its traffic.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fake_crm::FakeHubSpot;
use hmac::{Hmac, Mac};
use leadgate::ingest::verify::Outbound;
use serde_json::{json, Value};
use sha2::Sha256;

use crate::support::{assert_each_stored_once, fixture, reply, AppBuilder, Reply, TestApp};

const ADMIN: &str = "ops-admin-token";
const LEAD: &str = "ada.lovelace@analytical-engines.io";

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// Signs like Typeform does, independently of leadgate's code: sha256=<base64 HMAC of the body>.
pub(crate) fn typeform_signed(secret: &str, body: &[u8]) -> Outbound {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut out = Outbound::new("", "application/json", body.to_vec());
    out.set_header("Typeform-Signature", format!("sha256={sig}"));
    out
}

fn typeform_source(name: &str, mapping: &str) -> String {
    format!(
        "[[sources]]\nname = \"{name}\"\nscheme = \"typeform\"\nsecret_env = \"TF\"\nmapping = \"{mapping}\"\n"
    )
}

fn hubspot_crm(fake: &FakeHubSpot) -> String {
    format!(
        "[crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"\npoll_interval_ms = 50\n",
        fake.base_url
    )
}

/// Polls `f` until it returns Some, or fails after `limit`.
pub(crate) async fn eventually<T, F, Fut>(limit: Duration, what: &str, mut f: F) -> T
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

// ---- Prometheus text format ----

/// One sample: series name, labels, value.
pub(crate) type Sample = (String, BTreeMap<String, String>, f64);

/// Parses the sample lines of a Prometheus text exposition (`name{k="v",...} value`).
pub(crate) fn samples(text: &str) -> Vec<Sample> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
        let value: f64 = value.parse().expect("a numeric sample value");
        let (name, labels) = match series.split_once('{') {
            None => (series.to_string(), BTreeMap::new()),
            Some((name, rest)) => {
                let body = rest.strip_suffix('}').expect("labels end with }");
                let mut labels = BTreeMap::new();
                for pair in body.split("\",").filter(|p| !p.is_empty()) {
                    let (k, v) = pair.split_once("=\"").expect("label k=\"v\"");
                    labels.insert(k.to_string(), v.trim_end_matches('"').to_string());
                }
                (name.to_string(), labels)
            }
        };
        out.push((name, labels, value));
    }
    out
}

/// The sum of the samples of `name` whose labels include all of `want` (None: no such series).
pub(crate) fn value(all: &[Sample], name: &str, want: &[(&str, &str)]) -> Option<f64> {
    let matching: Vec<f64> = all
        .iter()
        .filter(|(n, labels, _)| {
            n == name
                && want
                    .iter()
                    .all(|(k, v)| labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, _, v)| *v)
        .collect();
    (!matching.is_empty()).then(|| matching.iter().sum())
}

/// What `promtool check metrics` reports for a text exposition: parse errors (a family's HELP
/// or TYPE after its samples or twice, a family split in two, a bad TYPE) and its lint (a family
/// without help text, a counter not named `*_total`, a histogram without `+Inf` bucket, sum and
/// count). Empty when clean.
pub(crate) fn promtool_check(text: &str) -> Vec<String> {
    #[derive(Default)]
    struct Family {
        help: Option<String>,
        kind: Option<String>,
        samples: Vec<String>,
    }
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut problems = Vec::new();
    let mut finished: Vec<String> = Vec::new();
    let mut current: Option<String> = None;
    let mut enter = |name: &str, current: &mut Option<String>, problems: &mut Vec<String>| {
        if current.as_deref() != Some(name) {
            if let Some(prev) = current.take() {
                finished.push(prev);
            }
            if finished.iter().any(|f| f == name) {
                problems.push(format!("{name}: lines of the family are not together"));
            }
            *current = Some(name.to_string());
        }
    };
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            enter(name, &mut current, &mut problems);
            let f = families.entry(name.to_string()).or_default();
            if f.help.is_some() || !f.samples.is_empty() {
                problems.push(format!("{name}: HELP twice or after its samples"));
            }
            f.help = Some(help.to_string());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, ""));
            enter(name, &mut current, &mut problems);
            if !["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind) {
                problems.push(format!("{name}: unknown TYPE {kind:?}"));
            }
            let f = families.entry(name.to_string()).or_default();
            if f.kind.is_some() || !f.samples.is_empty() {
                problems.push(format!("{name}: TYPE twice or after its samples"));
            }
            f.kind = Some(kind.to_string());
        } else if line.starts_with('#') {
            continue;
        } else {
            let series = line.rsplit_once(' ').map_or(line, |(s, _)| s);
            let name = series.split('{').next().unwrap_or(series);
            let family = ["_bucket", "_sum", "_count"]
                .iter()
                .filter_map(|suffix| name.strip_suffix(suffix))
                .find(|base| {
                    families
                        .get(*base)
                        .and_then(|f| f.kind.as_deref())
                        .is_some_and(|k| k == "histogram" || k == "summary")
                })
                .unwrap_or(name)
                .to_string();
            enter(&family, &mut current, &mut problems);
            families
                .entry(family)
                .or_default()
                .samples
                .push(series.to_string());
        }
    }
    for (name, f) in &families {
        if f.samples.is_empty() {
            continue;
        }
        match f.help.as_deref() {
            None | Some("") => problems.push(format!("{name}: no help text")),
            Some(_) => {}
        }
        match f.kind.as_deref() {
            None => problems.push(format!("{name}: no TYPE")),
            Some("counter") if !name.ends_with("_total") => problems.push(format!(
                "{name}: counter metrics should have \"_total\" suffix"
            )),
            Some("histogram") => {
                for part in ["_bucket", "_sum", "_count"] {
                    if !f
                        .samples
                        .iter()
                        .any(|s| s.starts_with(&format!("{name}{part}")))
                    {
                        problems.push(format!("{name}: histogram without {part}"));
                    }
                }
                if !f.samples.iter().any(|s| s.contains("le=\"+Inf\"")) {
                    problems.push(format!("{name}: histogram without a +Inf bucket"));
                }
            }
            Some(_) => {}
        }
    }
    problems
}

#[test]
fn the_exposition_checker_finds_what_promtool_finds() {
    let clean = "# HELP a_total things\n# TYPE a_total counter\na_total{x=\"1\"} 2\n";
    assert!(promtool_check(clean).is_empty());
    assert_eq!(
        promtool_check("# TYPE a_total counter\na_total 1\n"),
        vec!["a_total: no help text"]
    );
    assert_eq!(
        promtool_check("# HELP a x\n# TYPE a counter\na 1\n"),
        vec!["a: counter metrics should have \"_total\" suffix"]
    );
    let split = "# HELP a x\n# TYPE a gauge\na 1\n# HELP b y\n# TYPE b gauge\nb 1\na 2\n";
    assert_eq!(
        promtool_check(split),
        vec!["a: lines of the family are not together"]
    );
    let hist = "# HELP h x\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n";
    assert_eq!(
        promtool_check(hist),
        vec!["h: histogram without a +Inf bucket"]
    );
}

async fn scrape(app: &TestApp) -> (String, Vec<Sample>) {
    let res = app
        .client
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let ct = res.headers()["content-type"].to_str().unwrap().to_string();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = res.text().await.unwrap();
    let parsed = samples(&text);
    (text, parsed)
}

#[tokio::test]
async fn metrics_expose_every_named_series_after_traffic() {
    let fake = FakeHubSpot::start().await;
    let source = "ops-metrics";
    let app = AppBuilder::new()
        .toml(&typeform_source(source, &repo("mappings/typeform.toml")))
        .toml(&hubspot_crm(&fake))
        .env("TF", "tf-secret")
        .env("HS", &fake.token())
        .spawn()
        .await;
    // Series other tests also feed (same CRM label): compare before and after this traffic.
    let (_, before) = scrape(&app).await;
    let shared =
        |s: &[Sample], name: &str, labels: &[(&str, &str)]| value(s, name, labels).unwrap_or(0.0);

    let body = fixture("typeform/form_response.json");
    let good = typeform_signed("tf-secret", &body);
    assert_eq!(app.post(source, &good).await.status, 202);
    assert_eq!(app.post(source, &good).await.status, 200, "duplicate");
    let forged = typeform_signed("not-the-secret", &body);
    assert_eq!(app.post(source, &forged).await.status, 401);
    let unsigned = Outbound::new("", "application/json", body.clone());
    assert_eq!(app.post(source, &unsigned).await.status, 401);
    assert_eq!(app.post("no-such-source", &good).await.status, 404);

    eventually(Duration::from_secs(15), "the HubSpot upsert", || async {
        (fake.upserts_for(LEAD) == 1).then_some(())
    })
    .await;
    // The delivery is recorded (and its latency observed) after the CRM answered; the batch's
    // duration last, once the outcome is stored (a slow fsync can hold it back).
    let (text, after) = eventually(Duration::from_secs(10), "delivery metrics", || async {
        let (text, s) = scrape(&app).await;
        let grew = |name: &str, labels: &[(&str, &str)]| {
            shared(&s, name, labels) > shared(&before, name, labels)
        };
        (grew(
            "leadgate_crm_records_total",
            &[("crm", "hubspot"), ("outcome", "delivered")],
        ) && grew("leadgate_crm_batch_seconds_count", &[("crm", "hubspot")]))
        .then_some((text, s))
    })
    .await;

    // Webhooks: received, accepted, duplicate, rejected by source and reason.
    let src = [("source", source)];
    let of = |name: &str, labels: &[(&str, &str)]| value(&after, name, labels);
    assert_eq!(of("leadgate_webhooks_received_total", &src), Some(4.0));
    assert_eq!(of("leadgate_webhooks_accepted_total", &src), Some(1.0));
    assert_eq!(of("leadgate_webhooks_duplicate_total", &src), Some(1.0));
    assert_eq!(
        of(
            "leadgate_webhooks_rejected_total",
            &[("source", source), ("reason", "invalid_signature")]
        ),
        Some(1.0)
    );
    assert_eq!(
        of(
            "leadgate_webhooks_rejected_total",
            &[("source", source), ("reason", "missing_signature")]
        ),
        Some(1.0)
    );
    assert!(
        of(
            "leadgate_webhooks_rejected_total",
            &[("source", "(unknown)"), ("reason", "unknown_source")]
        )
        .is_some_and(|n| n >= 1.0),
        "{text}"
    );

    // Pipeline: the event was processed, and the new lead entered the sql stage from this source.
    assert_eq!(
        of(
            "leadgate_events_processed_total",
            &[("source", source), ("outcome", "processed")]
        ),
        Some(1.0)
    );
    assert_eq!(
        of(
            "leadgate_stage_transitions_total",
            &[("source", source), ("stage", "sql"), ("from", "new")]
        ),
        Some(1.0),
        "{text}"
    );

    // Delivery: CRM requests by connector and status, records, latency and limiter wait.
    for (name, labels) in [
        (
            "leadgate_crm_requests_total",
            &[("crm", "hubspot"), ("status", "200")][..],
        ),
        (
            "leadgate_crm_records_total",
            &[("crm", "hubspot"), ("outcome", "delivered")][..],
        ),
        (
            "leadgate_delivery_latency_seconds_count",
            &[("crm", "hubspot")][..],
        ),
        (
            "leadgate_crm_batch_seconds_count",
            &[("crm", "hubspot")][..],
        ),
        ("leadgate_ratelimit_wait_seconds_count", &[][..]),
    ] {
        assert!(
            shared(&after, name, labels) > shared(&before, name, labels),
            "{name}{labels:?} did not increase:\n{text}"
        );
    }
    assert!(
        of(
            "leadgate_delivery_latency_seconds_bucket",
            &[("crm", "hubspot"), ("le", "+Inf")]
        )
        .is_some(),
        "the latency is a histogram with buckets:\n{text}"
    );
    for histogram in [
        "leadgate_delivery_latency_seconds",
        "leadgate_ratelimit_wait_seconds",
    ] {
        assert!(
            text.contains(&format!("# TYPE {histogram} histogram")),
            "{histogram}:\n{text}"
        );
    }

    assert_eq!(promtool_check(&text), Vec::<String>::new(), "{text}");

    // Depths: inbox, outbox (pending, in flight) and dead letters are gauges.
    for gauge in [
        "leadgate_inbox_pending",
        "leadgate_outbox_pending",
        "leadgate_outbox_in_flight",
        "leadgate_dead_letters",
    ] {
        assert!(of(gauge, &[]).is_some(), "{gauge} missing:\n{text}");
        assert!(
            text.contains(&format!("# TYPE {gauge} gauge")),
            "{gauge}:\n{text}"
        );
    }
}

#[tokio::test]
async fn metrics_pass_promtool_check_from_the_first_scrape_with_the_rare_series_at_zero() {
    // Issue 11, item 3: no family had a HELP line, and series that move on rare events were
    // missing until their first event, so increase() and alerts missed it. A child process has
    // a recorder of its own: nothing another test did shows up.
    let fake = FakeHubSpot::start().await;
    let dir = tempfile::tempdir().unwrap();
    let app = AppBuilder::new()
        .toml(&typeform_source(
            "ops-promtool",
            &repo("mappings/typeform.toml"),
        ))
        .toml(&hubspot_crm(&fake))
        .env("TF", "tf-secret")
        .env("HS", &fake.token())
        .spawn_process(dir.path());
    let scrape = || app.metrics_text();
    let text = scrape().await;
    assert_eq!(promtool_check(&text), Vec::<String>::new(), "{text}");
    let first = samples(&text);
    for (name, labels) in [
        ("leadgate_reloads_total", &[("outcome", "ok")][..]),
        ("leadgate_reloads_total", &[("outcome", "refused")][..]),
        (
            "leadgate_crm_pauses_total",
            &[("reason", "rate_limited")][..],
        ),
        (
            "leadgate_crm_pauses_total",
            &[("reason", "daily_limit")][..],
        ),
        ("leadgate_crm_pauses_total", &[("reason", "auth")][..]),
        (
            "leadgate_crm_pauses_total",
            &[("reason", "endpoint_gone")][..],
        ),
        (
            "leadgate_crm_stage_kept_by_crm_total",
            &[("crm", "hubspot")][..],
        ),
    ] {
        assert_eq!(
            value(&first, name, labels),
            Some(0.0),
            "{name}{labels:?}:\n{text}"
        );
    }
    // After traffic (histograms, labelled counters) it is still clean.
    let good = typeform_signed("tf-secret", &fixture("typeform/form_response.json"));
    let res = app
        .client
        .post(format!("{}/webhooks/ops-promtool", app.base))
        .header("content-type", "application/json")
        .header(
            "Typeform-Signature",
            good.header("Typeform-Signature").unwrap(),
        )
        .body(good.body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
    eventually(Duration::from_secs(15), "the HubSpot upsert", || async {
        (fake.upserts_for(LEAD) == 1).then_some(())
    })
    .await;
    let text = eventually(Duration::from_secs(10), "delivery metrics", || async {
        let text = scrape().await;
        text.contains("leadgate_crm_batch_seconds_count")
            .then_some(text)
    })
    .await;
    assert_eq!(promtool_check(&text), Vec::<String>::new(), "{text}");
}

#[tokio::test]
async fn the_queue_gauges_are_right_whenever_scraped_even_while_a_crm_request_hangs() {
    // Issue 11, item 4: the outbox gauge was set between batches only, so it read 0 while a
    // hanging CRM request held the worker and updates queued up behind it.
    let fake = FakeHubSpot::start().await;
    fake.set_delay(Duration::from_secs(30));
    let source = "ops-queue";
    let app = AppBuilder::new()
        .toml(&format!(
            "[[sources]]\nname = \"{source}\"\nscheme = \"token\"\nsecret_env = \"TOK\"\nmapping = \"{}\"\n",
            repo("mappings/generic.toml")
        ))
        .toml(&format!(
            "[crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS\"\npoll_interval_ms = 50\nbatch_size = 1\ntimeout_secs = 60\n",
            fake.base_url
        ))
        .env("TOK", "queue-token")
        .env("HS", &fake.token())
        .spawn()
        .await;
    for i in 0..3 {
        let body = json!({"contact": {"email": format!("q{i}@orbit-analytics.io")}});
        let mut out = Outbound::new("", "application/json", body.to_string().into_bytes());
        out.url = "?token=queue-token".into();
        assert_eq!(app.post(source, &out).await.status, 202);
    }
    // One update is in flight (its request hangs), two wait behind it, the inbox is empty.
    eventually(
        Duration::from_secs(15),
        "the gauges to show the queue",
        || async {
            let (_, s) = scrape(&app).await;
            let g = |name: &str| value(&s, name, &[]);
            let shown = (
                g("leadgate_inbox_pending"),
                g("leadgate_outbox_in_flight"),
                g("leadgate_outbox_pending"),
            );
            (fake.started() >= 1 && shown == (Some(0.0), Some(1.0), Some(2.0))).then_some(())
        },
    )
    .await;
}

// ---- admin API ----

async fn call(app: &TestApp, method: &str, path: &str, auth: Option<&str>) -> Reply {
    let url = format!("{}{path}", app.admin);
    let mut req = match method {
        "GET" => app.client.get(url),
        _ => app.client.post(url).json(&json!({})),
    };
    if let Some(a) = auth {
        req = req.header("authorization", a);
    }
    reply(req.send().await.unwrap()).await
}

pub const ADMIN_ROUTES: &[(&str, &str)] = &[
    ("GET", "/admin/leads/ada.lovelace@analytical-engines.io"),
    ("GET", "/admin/events?status=unmappable"),
    ("POST", "/admin/events/replay"),
    ("GET", "/admin/dead-letters"),
    ("POST", "/admin/dead-letters/1/replay"),
    ("GET", "/admin/funnel"),
];

#[tokio::test]
async fn every_admin_endpoint_refuses_a_missing_or_wrong_token() {
    let app = AppBuilder::new()
        .toml(&typeform_source(
            "ops-auth",
            &repo("mappings/typeform.toml"),
        ))
        .env("TF", "tf-secret")
        .env("LEADGATE_ADMIN_TOKEN", ADMIN)
        // Every wrong token below is answered 401, none 429 (that limit has its own test).
        .env(
            "LEADGATE_ADMIN__WRONG_TOKEN_LIMIT",
            "{ requests = 1000, per_secs = 60 }",
        )
        .spawn()
        .await;
    let wrong = [
        None,
        Some("Bearer wrong".to_string()),
        Some(format!("Bearer {}", &ADMIN[..ADMIN.len() - 1])),
        Some(format!("Bearer {ADMIN}x")),
        Some(format!("Basic {ADMIN}")),
        Some(ADMIN.to_string()),
    ];
    for (method, path) in ADMIN_ROUTES {
        for auth in &wrong {
            let r = call(&app, method, path, auth.as_deref()).await;
            assert_eq!(
                (r.status, r.error()),
                (401, "unauthorized"),
                "{method} {path} with {auth:?}"
            );
            assert_eq!(
                r.headers["www-authenticate"],
                "Bearer realm=\"leadgate-admin\""
            );
        }
        // With the token every route answers (404 for the lead and dead letter that do not
        // exist yet), never 401.
        let ok = call(&app, method, path, Some(&format!("Bearer {ADMIN}"))).await;
        assert_ne!(ok.status, 401, "{method} {path}");
        assert!(ok.json.is_object(), "{method} {path}: JSON body");
    }
}

#[tokio::test]
async fn the_admin_api_shows_a_lead_its_history_and_crm_state_and_replays_a_fixed_dead_letter() {
    let fake = FakeHubSpot::start().await;
    // The CRM lacks a property leadgate writes: every upsert is refused for good.
    fake.remove_property("leadgate_reason");
    let app = AppBuilder::new()
        .toml(&typeform_source(
            "ops-admin",
            &repo("mappings/typeform.toml"),
        ))
        .toml(&hubspot_crm(&fake))
        .env("TF", "tf-secret")
        .env("HS", &fake.token())
        .env("LEADGATE_ADMIN_TOKEN", ADMIN)
        .spawn()
        .await;
    let bearer = format!("Bearer {ADMIN}");
    let body = fixture("typeform/form_response.json");
    let r = app
        .post("ops-admin", &typeform_signed("tf-secret", &body))
        .await;
    assert_eq!(r.status, 202);

    let dead = eventually(Duration::from_secs(15), "the dead letter", || async {
        let r = call(&app, "GET", "/admin/dead-letters", Some(&bearer)).await;
        let list = r.json["dead_letters"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        (!list.is_empty()).then_some(list)
    })
    .await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0]["email"], LEAD);
    assert_eq!(dead[0]["crm"], "hubspot");
    assert_eq!(dead[0]["stage"], "sql");
    let message = dead[0]["message"].as_str().unwrap();
    assert!(message.contains("leadgate_reason"), "{message}");
    let id = dead[0]["id"].as_i64().unwrap();

    // The lead: stage, score breakdown, stage history, its events, and the CRM state.
    let lead = call(&app, "GET", &format!("/admin/leads/{LEAD}"), Some(&bearer)).await;
    assert_eq!(lead.status, 200);
    let l = &lead.json;
    assert_eq!(l["stage"], "sql");
    assert_eq!(l["source"], "ops-admin");
    assert!(!l["now"]["breakdown"].as_array().unwrap().is_empty(), "{l}");
    let history = l["history"].as_array().unwrap();
    assert_eq!(history.len(), 1, "{l}");
    assert_eq!(history[0]["from"], Value::Null, "a new lead");
    assert_eq!(history[0]["to"], "sql");
    assert_eq!(history[0]["cause"], "rules");
    assert!(!history[0]["reasons"].as_array().unwrap().is_empty());
    assert_eq!(l["events"], json!([r.json["id"]]));
    assert_eq!(l["crm"]["delivered"], Value::Null);
    assert_eq!(l["crm"]["pending"], Value::Null);
    assert_eq!(l["crm"]["dead_letters"], json!([id]));

    // The funnel counts it per source and campaign.
    let f = call(&app, "GET", "/admin/funnel", Some(&bearer)).await;
    let mine = f.json["by_source"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["source"] == "ops-admin")
        .cloned()
        .expect("a funnel slice for the source");
    assert_eq!(mine["campaign"], "q4-demand-gen");
    assert_eq!(mine["funnel"]["at_stage"]["sql"], 1);
    assert!(mine["funnel"]["conversion"].as_array().unwrap().len() >= 2);

    // The operator creates the property in HubSpot, then replays the dead letter.
    fake.add_property("leadgate_reason");
    let replay = call(
        &app,
        "POST",
        &format!("/admin/dead-letters/{id}/replay"),
        Some(&bearer),
    )
    .await;
    assert_eq!(
        (replay.status, &replay.json),
        (200, &json!({ "requeued": 1, "superseded": 0 }))
    );
    eventually(
        Duration::from_secs(15),
        "the contact after replay",
        || async { fake.contact(LEAD).map(|_| ()) },
    )
    .await;
    let l = eventually(Duration::from_secs(10), "the delivered state", || async {
        let r = call(&app, "GET", &format!("/admin/leads/{LEAD}"), Some(&bearer)).await;
        (!r.json["crm"]["delivered"].is_null()).then_some(r.json)
    })
    .await;
    assert_eq!(l["crm"]["delivered"]["version"], l["version"]);
    assert_eq!(l["crm"]["dead_letters"], json!([]));
    let dl = call(&app, "GET", "/admin/dead-letters", Some(&bearer)).await;
    assert_eq!(dl.json["dead_letters"], json!([]));
    // Replaying it again: it is gone.
    let again = call(
        &app,
        "POST",
        &format!("/admin/dead-letters/{id}/replay"),
        Some(&bearer),
    )
    .await;
    assert_eq!((again.status, again.error()), (404, "not_found"));
}

// ---- leadgate probe ----

#[tokio::test]
async fn probe_exits_0_on_200_and_1_otherwise() {
    let app = AppBuilder::new().spawn().await;
    let probe = |url: String| {
        std::process::Command::new(env!("CARGO_BIN_EXE_leadgate"))
            .args(["probe", "--url", &url, "--timeout-secs", "5"])
            .output()
            .unwrap()
    };
    let (base, admin) = (app.base.clone(), app.admin.clone());
    let closed = format!("http://127.0.0.1:{}/readyz", crate::support::free_port());
    let (ready, missing, refused, metrics, public_metrics) =
        tokio::task::spawn_blocking(move || {
            (
                probe(format!("{base}/readyz")),
                probe(format!("{base}/nowhere")),
                probe(closed),
                probe(format!("{admin}/metrics")),
                probe(format!("{base}/metrics")),
            )
        })
        .await
        .unwrap();
    assert_eq!(ready.status.code(), Some(0), "{ready:?}");
    assert!(String::from_utf8_lossy(&ready.stdout).starts_with("200 "));
    assert_eq!(missing.status.code(), Some(1), "404 is not healthy");
    assert_eq!(refused.status.code(), Some(1), "nothing listening");
    // Metrics are on the operator listener, not the public one.
    assert_eq!(metrics.status.code(), Some(0), "{metrics:?}");
    assert_eq!(public_metrics.status.code(), Some(1));
}

// ---- SIGTERM during load ----

/// A minimal mapping: every event is a new lead, so every event queues a CRM update.
const LEAD_MAPPING: &str =
    "[[lead]]\nemail = \"$.email\"\n[lead.fields]\nlead_source = { value = \"load\" }\n";

pub(crate) fn load_email(i: usize) -> String {
    format!("load{i}@example-corp.io")
}

pub(crate) async fn post_load(client: &reqwest::Client, base: &str, i: usize) -> Option<u16> {
    let body = format!(r#"{{"event_id":"load-{i}","email":"{}"}}"#, load_email(i));
    post_typeform(client, base, &body).await
}

/// POSTs `body` to `base`'s Typeform source signed with `tf-secret`; the status, or None when
/// the connection was refused or dropped (the server has stopped listening).
pub(crate) async fn post_typeform(client: &reqwest::Client, base: &str, body: &str) -> Option<u16> {
    let out = typeform_signed("tf-secret", body.as_bytes());
    let mut req = client
        .post(format!("{base}/webhooks/typeform"))
        .header("content-type", "application/json")
        .body(out.body.clone());
    for (k, v) in &out.headers {
        req = req.header(k, v);
    }
    Some(req.send().await.ok()?.status().as_u16())
}

pub(crate) fn load_builder(dir: &std::path::Path, fake: &FakeHubSpot) -> AppBuilder {
    let mapping = dir.join("load.toml");
    std::fs::write(&mapping, LEAD_MAPPING).unwrap();
    AppBuilder::new()
        .toml(&typeform_source("typeform", &mapping.display().to_string()))
        .toml(&hubspot_crm(fake))
        .env("TF", "tf-secret")
        .env("HS", &fake.token())
        .env("LEADGATE_ADMIN_TOKEN", ADMIN)
        // The drain delay, set the way deployments set it, long enough to observe.
        .env("LEADGATE_SERVER__DRAIN_SECS", "1")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigterm_during_load_drains_finishes_the_crm_batch_and_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let fake = FakeHubSpot::start().await;
    // Slow CRM answers, so a delivery batch is in flight when the signal comes.
    fake.set_delay(Duration::from_millis(1500));
    let app = load_builder(dir.path(), &fake).spawn_process(dir.path());
    let client = reqwest::Client::new();

    let acked_so_far = Arc::new(AtomicUsize::new(0));
    let mut senders = Vec::new();
    for w in 0..6 {
        let (c, base, n) = (client.clone(), app.base.clone(), Arc::clone(&acked_so_far));
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..2000 {
                let i = w * 2000 + k;
                match post_load(&c, &base, i).await {
                    Some(202) => {
                        acked.push(i);
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    Some(_) => {}
                    None => break,
                }
            }
            acked
        }));
    }
    // Under load, with a CRM request waiting on the slow fake.
    eventually(
        Duration::from_secs(20),
        "load and a batch in flight",
        || async {
            let in_flight = fake.started() > fake.requests() as u64;
            (acked_so_far.load(Ordering::Relaxed) >= 50 && in_flight).then_some(())
        },
    )
    .await;
    app.signal("TERM");

    // Readiness turns false while the server keeps answering during the drain.
    let ready = format!("{}/readyz", app.base);
    let draining = eventually(Duration::from_secs(5), "readyz 503 draining", || async {
        match client.get(&ready).send().await {
            Ok(res) if res.status() == 503 => Some(reply(res).await),
            _ => None,
        }
    })
    .await;
    assert_eq!(draining.error(), "draining");

    let mut app = app;
    let status = app.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0), "a clean exit");
    let mut acked = Vec::new();
    for s in senders {
        acked.extend(s.await.unwrap());
    }
    drop(app);
    assert!(acked.len() >= 50);

    // Every acknowledged event is stored exactly once.
    let db = dir.path().join("data/leadgate.db");
    {
        assert_each_stored_once(&db, acked.iter().map(|i| format!("load-{i}")));
        let c = rusqlite::Connection::open(&db).unwrap();
        // The batch in flight at the signal was answered and recorded: every lead the CRM
        // received is marked delivered, nothing is left claimed.
        assert_eq!(
            fake.started(),
            fake.requests() as u64,
            "no CRM request was abandoned"
        );
        let sent: Vec<String> = fake
            .batches()
            .iter()
            .flatten()
            .map(|input| input["id"].as_str().unwrap().to_string())
            .collect();
        assert!(!sent.is_empty(), "a batch was delivered before the exit");
        for email in &sent {
            let n: i64 = c
                .query_row(
                    "SELECT COUNT(*) FROM crm_delivered WHERE email = ?1",
                    [email],
                    |r| r.get(0),
                )
                .unwrap();
            assert_eq!(n, 1, "{email} was sent and is recorded as delivered");
        }
        let in_flight: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM outbox WHERE inflight_version IS NOT NULL",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(in_flight, 0);
    }

    // After a restart the rest is processed and delivered, and nothing is sent twice.
    fake.set_delay(Duration::ZERO);
    let again = load_builder(dir.path(), &fake).spawn_process(dir.path());
    eventually(
        Duration::from_secs(25),
        "every acknowledged lead in the CRM",
        || async {
            acked
                .iter()
                .all(|i| fake.contact(&load_email(*i)).is_some())
                .then_some(())
        },
    )
    .await;
    for i in &acked {
        assert_eq!(
            fake.upserts_for(&load_email(*i)),
            1,
            "{} sent once",
            load_email(*i)
        );
    }
    drop(again);
}

#[tokio::test]
async fn sigterm_still_stops_the_process_when_its_stdout_and_stderr_are_closed() {
    // A log shipper or `leadgate serve | head` going away must not break shutdown or requests.
    let dir = tempfile::tempdir().unwrap();
    let mut app = AppBuilder::new()
        .toml("[[sources]]\nname = \"typeform\"\nscheme = \"typeform\"\nsecret_env = \"TF\"\n")
        .env("TF", "tf-secret")
        .env("LEADGATE_LOG__LEVEL", "info")
        .spawn_process(dir.path());
    drop(app.child.stdout.take());
    drop(app.child.stderr.take());
    let client = reqwest::Client::new();
    for i in 0..3 {
        let status = post_load(&client, &app.base, i).await;
        assert_eq!(status, Some(202), "delivery {i} with the log pipes closed");
    }
    app.signal("TERM");
    let status = app.wait_exit(Duration::from_secs(15)).await;
    assert_eq!(status.code(), Some(0));
}
