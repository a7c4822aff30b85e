//! Two listeners: the public one serves webhooks and probes and nothing else; the operator one
//! serves metrics and the admin API; one listener when `admin_listen` is `listen`. Wrong admin
//! tokens are limited per client address wherever the admin API is served, and both listeners
//! drain together on SIGTERM.

use std::net::IpAddr;
use std::time::Duration;

use base64::Engine as _;
use hmac::{Hmac, Mac};
use leadgate::ingest::verify::Outbound;
use sha2::Sha256;

use crate::ops::{eventually, samples, value};
use crate::support::{reply, AppBuilder, Reply, TestApp};

const ADMIN: &str = "listeners-admin-token";

fn typeform_signed(body: &[u8]) -> Outbound {
    let mut mac = Hmac::<Sha256>::new_from_slice(b"tf-secret").unwrap();
    mac.update(body);
    let sig = base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes());
    let mut out = Outbound::new("", "application/json", body.to_vec());
    out.set_header("Typeform-Signature", format!("sha256={sig}"));
    out
}

fn builder(source: &str) -> AppBuilder {
    AppBuilder::new()
        .toml(&format!(
            "[[sources]]\nname = \"{source}\"\nscheme = \"typeform\"\nsecret_env = \"TF\"\n"
        ))
        .env("TF", "tf-secret")
        .env("LEADGATE_ADMIN_TOKEN", ADMIN)
}

async fn request(
    client: &reqwest::Client,
    method: &str,
    url: String,
    token: Option<&str>,
) -> Reply {
    let mut req = match method {
        "GET" => client.get(url),
        _ => client.post(url).json(&serde_json::json!({})),
    };
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    reply(req.send().await.expect("request sent")).await
}

/// What only operators may reach: refused on the public listener, served on the operator one.
const OPERATOR_ROUTES: &[(&str, &str)] = &[
    ("GET", "/metrics"),
    ("GET", "/admin/funnel"),
    ("GET", "/admin/events?status=unmappable"),
    ("POST", "/admin/events/replay"),
    ("GET", "/admin/dead-letters"),
];

#[tokio::test]
async fn the_public_listener_serves_webhooks_and_probes_and_nothing_an_operator_uses() {
    let app = builder("listeners-public").spawn().await;
    assert_ne!(app.base, app.admin, "two listeners");
    let c = &app.client;

    let stored = app
        .post(
            "listeners-public",
            &typeform_signed(br#"{"event_id":"p1"}"#),
        )
        .await;
    assert_eq!(stored.status, 202, "{:?}", stored.json);
    for probe in ["/healthz", "/readyz"] {
        assert_eq!(app.get(probe).await.status, 200, "{probe}");
    }
    // Even with the right token; and the console path, before and after a console exists.
    let public_404 = OPERATOR_ROUTES.iter().copied().chain([
        ("GET", "/console/"),
        ("GET", "/console/login"),
        ("GET", "/"),
    ]);
    for (method, path) in public_404 {
        let r = request(c, method, format!("{}{path}", app.base), Some(ADMIN)).await;
        assert_eq!(
            (r.status, r.error()),
            (404, "not_found"),
            "public {method} {path}"
        );
    }

    // The operator listener serves them, and no webhooks.
    for (method, path) in OPERATOR_ROUTES {
        let r = request(c, method, format!("{}{path}", app.admin), Some(ADMIN)).await;
        assert_eq!(r.status, 200, "operator {method} {path}: {:?}", r.json);
    }
    let metrics = app.metrics_text().await;
    assert_eq!(
        value(
            &samples(&metrics),
            "leadgate_webhooks_accepted_total",
            &[("source", "listeners-public")]
        ),
        Some(1.0),
        "{metrics}"
    );
    for probe in ["/healthz", "/readyz"] {
        let r = request(c, "GET", format!("{}{probe}", app.admin), None).await;
        assert_eq!(r.status, 200, "operator {probe}");
    }
    let hook = app
        .client
        .post(format!("{}/webhooks/listeners-public", app.admin))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(hook.status(), 404, "no webhooks on the operator listener");
    // No console yet: a 404 like any unknown path, not a 401 that would invite guessing.
    let console = request(c, "GET", format!("{}/console/", app.admin), None).await;
    assert_eq!((console.status, console.error()), (404, "not_found"));
}

#[tokio::test]
async fn admin_listen_equal_to_listen_serves_everything_on_one_listener() {
    let app = builder("listeners-shared").shared_listener().spawn().await;
    assert_eq!(app.base, app.admin);
    let stored = app
        .post(
            "listeners-shared",
            &typeform_signed(br#"{"event_id":"s1"}"#),
        )
        .await;
    assert_eq!(stored.status, 202);
    for (method, path) in OPERATOR_ROUTES {
        let r = request(
            &app.client,
            method,
            format!("{}{path}", app.base),
            Some(ADMIN),
        )
        .await;
        assert_eq!(r.status, 200, "{method} {path}");
    }
    assert_eq!(app.get("/readyz").await.status, 200);
}

/// A client whose connections come from `ip` (any 127.0.0.0/8 address is loopback on Linux), so
/// one test can play several client addresses.
fn client_from(ip: [u8; 4]) -> reqwest::Client {
    reqwest::Client::builder()
        .local_address(IpAddr::from(ip))
        .build()
        .unwrap()
}

async fn auth_failures(app: &TestApp, outcome: &str) -> (f64, String) {
    let text = app.metrics_text().await;
    let n = value(
        &samples(&text),
        "leadgate_admin_auth_failures_total",
        &[("outcome", outcome)],
    )
    .unwrap_or(0.0);
    (n, text)
}

#[tokio::test]
async fn a_burst_of_wrong_tokens_gets_429_for_that_address_only_and_a_correct_token_never_waits() {
    for shared in [false, true] {
        let mut b = builder("listeners-limit")
            // 3 at once, then one every 20 s.
            .env(
                "LEADGATE_ADMIN__WRONG_TOKEN_LIMIT",
                "{ requests = 3, per_secs = 60 }",
            );
        if shared {
            b = b.shared_listener();
        }
        let app = b.spawn().await;
        let url = format!("{}/admin/funnel", app.admin);
        let attacker = client_from([127, 0, 0, 2]);
        let operator = client_from([127, 0, 0, 3]);
        let (limited_before, _) = auth_failures(&app, "rate_limited").await;

        // The operator polls with the right token as often as it likes.
        for _ in 0..30 {
            let r = request(&operator, "GET", url.clone(), Some(ADMIN)).await;
            assert_eq!(r.status, 200, "shared={shared}");
        }
        // Three guesses are answered 401, the next 429 with the time to wait.
        for guess in 0..3 {
            let r = request(
                &attacker,
                "GET",
                url.clone(),
                Some(&format!("guess-{guess}")),
            )
            .await;
            assert_eq!(
                (r.status, r.error()),
                (401, "unauthorized"),
                "shared={shared}"
            );
        }
        let limited = request(&attacker, "GET", url.clone(), Some("guess-3")).await;
        assert_eq!(
            (limited.status, limited.error()),
            (429, "rate_limited"),
            "shared={shared}"
        );
        let retry: u64 = limited.headers["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=20).contains(&retry), "Retry-After {retry}");
        // No token at all counts as a wrong one.
        let bare = request(&attacker, "GET", url.clone(), None).await;
        assert_eq!(bare.status, 429);
        // While refused, a right guess is not told apart from a wrong one.
        let right = request(
            &attacker,
            "POST",
            format!("{}/admin/events/replay", app.admin),
            Some(ADMIN),
        )
        .await;
        assert_eq!(right.status, 429, "shared={shared}");

        // Another address: served with the right token, 401 (not 429) for its own typo.
        let r = request(&operator, "GET", url.clone(), Some(ADMIN)).await;
        assert_eq!(r.status, 200, "shared={shared}");
        let typo = request(&operator, "GET", url.clone(), Some("typo")).await;
        assert_eq!(typo.status, 401, "shared={shared}");

        // Counted, with HELP text.
        let (limited_after, text) = auth_failures(&app, "rate_limited").await;
        assert!(
            limited_after >= limited_before + 3.0,
            "{limited_before} -> {limited_after}"
        );
        assert!(
            text.contains("# HELP leadgate_admin_auth_failures_total "),
            "{text}"
        );
        app.stopper.stop().await;
    }
}

#[tokio::test]
async fn sigterm_drains_both_listeners_together_then_closes_both() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = builder("listeners-drain")
        .env("LEADGATE_SERVER__DRAIN_SECS", "2")
        .spawn_process(dir.path());
    let client = reqwest::Client::new();
    app.signal("TERM");

    // During the drain both report unready, and the operator listener still serves metrics.
    let public_ready = format!("{}/readyz", app.base);
    eventually(Duration::from_secs(5), "public readyz 503", || async {
        let r = client.get(&public_ready).send().await.ok()?;
        (r.status() == 503).then_some(())
    })
    .await;
    let admin_ready = request(&client, "GET", format!("{}/readyz", app.admin), None).await;
    assert_eq!((admin_ready.status, admin_ready.error()), (503, "draining"));
    let metrics = client
        .get(format!("{}/metrics", app.admin))
        .send()
        .await
        .expect("the operator listener serves during the drain");
    assert_eq!(metrics.status(), 200);

    let status = app.wait_exit(Duration::from_secs(20)).await;
    assert_eq!(status.code(), Some(0));
    for base in [&app.base, &app.admin] {
        assert!(
            client.get(format!("{base}/healthz")).send().await.is_err(),
            "{base} still accepts after exit"
        );
    }
}
