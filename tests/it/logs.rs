//! The logging policy, end to end: the real binary at `trace` level, stdout and stderr captured,
//! accepted, duplicate, unmappable and refused webhooks carrying a known lead, delivery to a fake
//! HubSpot with a known token, and the admin API with right and wrong tokens. Afterwards no
//! secret, token, email address, name or phone number may appear anywhere in what was written.

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine as _;
use fake_crm::{FakeHubSpot, HubSpotOptions};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::support::{AppBuilder, ChildApp};

const TF_SECRET: &str = "logs-tf-secret-Z9k2Lq";
const URL_TOKEN: &str = "logs-url-token-H4n8Vc";
const BASIC_PASSWORD: &str = "logs-basic-password-Mw3e";
const ADMIN_TOKEN: &str = "logs-admin-token-R2d5Xa";
const WRONG_ADMIN_TOKEN: &str = "wrong-admin-token-T6y1Pb";
const WRONG_URL_TOKEN: &str = "wrong-url-token-Q8u3Gh";

const EMAIL: &str = "zephyrine.quillfeather@loglead-example.io";
const BAD_EMAIL: &str = "zephyrine.quillfeather(at)loglead-example.io";
const FIRST: &str = "Zephyrine";
const LAST: &str = "Quillfeather";
const COMPANY: &str = "Brasswhistle Looms";
const PHONE_SENT: &str = "+44 20 7946 0321";
/// The same number as E.164 and without its country code: neither may be logged either.
const PHONE_FORMS: &[&str] = &["+442079460321", "2079460321", "20 7946 0321"];

fn repo(path: &str) -> String {
    format!("{}/{path}", env!("CARGO_MANIFEST_DIR"))
}

/// The Typeform fixture, answered by our lead.
fn lead_payload(event_id: &str, email: &str) -> Vec<u8> {
    let text = String::from_utf8(crate::support::fixture("typeform/form_response.json"))
        .expect("fixture is UTF-8")
        .replace("01HZX8F7Q2R3T4V5W6X7Y8Z9A0", event_id)
        .replace("ada.lovelace@analytical-engines.io", email)
        .replace("\"Ada\"", &format!("\"{FIRST}\""))
        .replace("\"Lovelace\"", &format!("\"{LAST}\""))
        .replace("Analytical Engines Ltd", COMPANY)
        .replace("+442071838750", PHONE_SENT);
    assert!(text.contains(FIRST) && text.contains(PHONE_SENT));
    text.into_bytes()
}

fn typeform_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("hmac key");
    mac.update(body);
    format!(
        "sha256={}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

async fn post(
    client: &reqwest::Client,
    url: String,
    content_type: &str,
    headers: &[(&str, String)],
    body: Vec<u8>,
) -> u16 {
    let mut req = client
        .post(url)
        .header("content-type", content_type)
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, v);
    }
    req.send().await.expect("request sent").status().as_u16()
}

async fn get(client: &reqwest::Client, url: String, auth: &str) -> u16 {
    client
        .get(url)
        .header("authorization", auth)
        .send()
        .await
        .expect("request sent")
        .status()
        .as_u16()
}

/// Sends SIGTERM and waits for a clean exit, so every buffered line is flushed.
async fn stop(mut app: ChildApp) {
    app.signal("TERM");
    let status = app.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
}

fn read_log(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).expect("log file")).into_owned()
}

#[tokio::test]
async fn trace_logs_of_real_traffic_carry_no_secret_token_email_name_or_phone() {
    let fake = FakeHubSpot::start_with(HubSpotOptions {
        token: "logs-crm-token-Fj5Ks9".into(),
        ..HubSpotOptions::default()
    })
    .await;
    let crm_token = fake.token();
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("leadgate.log");
    let app = AppBuilder::new()
        .log_level("trace")
        .toml(&format!(
            "[[sources]]\nname = \"typeform\"\nscheme = \"typeform\"\nsecret_env = \"TF\"\nmapping = \"{}\"\n",
            repo("mappings/typeform.toml")
        ))
        .toml(&format!(
            "[[sources]]\nname = \"jotform\"\nscheme = \"token\"\nsecret_env = \"URL_TOKEN\"\nmapping = \"{}\"\n",
            repo("mappings/typeform.toml")
        ))
        .toml("[[sources]]\nname = \"postmark\"\nscheme = \"basic\"\nsecret_env = \"BASIC\"\n")
        .toml(&format!(
            "[crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS_TOKEN\"\npoll_interval_ms = 50\n",
            fake.base_url
        ))
        .env("TF", TF_SECRET)
        .env("URL_TOKEN", URL_TOKEN)
        .env("BASIC", BASIC_PASSWORD)
        .env("HS_TOKEN", &crm_token)
        .env("LEADGATE_ADMIN_TOKEN", ADMIN_TOKEN)
        .spawn_process_logged(dir.path(), &log);
    let client = reqwest::Client::new();
    let hook = |source: &str| format!("{}/webhooks/{source}", app.base);
    let tf = |body: &[u8]| vec![("Typeform-Signature", typeform_signature(TF_SECRET, body))];

    // Accepted, then delivered to the CRM with the token.
    let lead = lead_payload("logs-evt-1", EMAIL);
    let status = post(
        &client,
        hook("typeform"),
        "application/json",
        &tf(&lead),
        lead.clone(),
    )
    .await;
    assert_eq!(status, 202);
    // A redelivery, and the same delivery with a forged signature.
    assert_eq!(
        post(
            &client,
            hook("typeform"),
            "application/json",
            &tf(&lead),
            lead.clone()
        )
        .await,
        200
    );
    let forged = vec![("Typeform-Signature", typeform_signature("guessed", &lead))];
    assert_eq!(
        post(
            &client,
            hook("typeform"),
            "application/json",
            &forged,
            lead.clone()
        )
        .await,
        401
    );
    // Stored but unmappable: the invalid address is in the reason's subject, never its text.
    let unmappable = lead_payload("logs-evt-2", BAD_EMAIL);
    assert_eq!(
        post(
            &client,
            hook("typeform"),
            "application/json",
            &tf(&unmappable),
            unmappable.clone()
        )
        .await,
        202
    );
    // Undecodable bodies that carry the lead, validly signed.
    let truncated = lead[..lead.len() / 2].to_vec();
    assert_eq!(
        post(
            &client,
            hook("typeform"),
            "application/json",
            &tf(&truncated),
            truncated
        )
        .await,
        400
    );
    let form = format!(
        "email={}&name={FIRST}+{LAST}&city=K%F6ln",
        EMAIL.replace('@', "%40")
    );
    assert_eq!(
        post(
            &client,
            hook("typeform"),
            "application/x-www-form-urlencoded",
            &tf(form.as_bytes()),
            form.into_bytes()
        )
        .await,
        400
    );
    let b = "LogsBoundary";
    let multipart = format!(
        "--{b}\r\nContent-Disposition: form-data; name=\"_charset_\"\r\n\r\n{EMAIL}\r\n\
         --{b}\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\n{FIRST} {LAST}\r\n--{b}--\r\n"
    );
    assert_eq!(
        post(
            &client,
            hook("typeform"),
            &format!("multipart/form-data; boundary={b}"),
            &tf(multipart.as_bytes()),
            multipart.into_bytes()
        )
        .await,
        415
    );
    // A request id that is an email address is replaced, not logged.
    let with_id = lead_payload("logs-evt-3", EMAIL);
    let mut headers = tf(&with_id);
    headers.push(("x-request-id", EMAIL.to_string()));
    assert_eq!(
        post(
            &client,
            hook("typeform"),
            "application/json",
            &headers,
            with_id
        )
        .await,
        202
    );
    // Token in the URL: right and wrong (the raw URL must never be logged).
    let by_url = lead_payload("logs-evt-4", EMAIL);
    assert_eq!(
        post(
            &client,
            format!("{}?token={URL_TOKEN}", hook("jotform")),
            "application/json",
            &[],
            by_url.clone()
        )
        .await,
        202
    );
    assert_eq!(
        post(
            &client,
            format!("{}?token={WRONG_URL_TOKEN}", hook("jotform")),
            "application/json",
            &[],
            by_url
        )
        .await,
        401
    );
    // Basic auth with the password, then a wrong one; an unknown source named like the lead.
    let basic = |user: &str, pass: &str| {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pass}"))
        )
    };
    let lead4 = lead_payload("logs-evt-5", EMAIL);
    assert_eq!(
        post(
            &client,
            hook("postmark"),
            "application/json",
            &[("authorization", basic("leadgate", BASIC_PASSWORD))],
            lead4.clone()
        )
        .await,
        202
    );
    assert_eq!(
        post(
            &client,
            hook("postmark"),
            "application/json",
            &[("authorization", basic(FIRST, WRONG_URL_TOKEN))],
            lead4.clone()
        )
        .await,
        401
    );
    assert_eq!(
        post(&client, hook(EMAIL), "application/json", &[], lead4).await,
        404
    );

    // The lead reaches the fake HubSpot (the CRM token was used).
    let deadline = Instant::now() + Duration::from_secs(20);
    while fake.contact(EMAIL).is_none() {
        assert!(Instant::now() < deadline, "the lead was not delivered");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }

    // The admin API: a wrong token, then the right one, on a URL holding the email.
    let lead_url = format!("{}/admin/leads/{EMAIL}", app.admin);
    assert_eq!(
        get(
            &client,
            lead_url.clone(),
            &format!("Bearer {WRONG_ADMIN_TOKEN}")
        )
        .await,
        401
    );
    assert_eq!(
        get(&client, lead_url.clone(), &format!("Bearer {ADMIN_TOKEN}")).await,
        200
    );
    assert_eq!(
        get(
            &client,
            format!("{}/admin/events?status=unmappable", app.admin),
            &format!("Bearer {ADMIN_TOKEN}")
        )
        .await,
        200
    );

    stop(app).await;
    fake.stop().await;

    let text = read_log(&log);
    // The test can fail: the log has lines, at the raised level, for this traffic.
    assert!(!text.trim().is_empty(), "nothing was logged");
    for expected in [
        "\"level\":\"DEBUG\"",
        "\"outcome\":\"stored\"",
        "\"outcome\":\"invalid_signature\"",
        "\"outcome\":\"unsupported_media_type\"",
        "event is unmappable",
        "leadgate listening",
    ] {
        assert!(text.contains(expected), "no {expected} in the log:\n{text}");
    }
    let lower = text.to_lowercase();
    let mut never: Vec<&str> = vec![
        TF_SECRET,
        URL_TOKEN,
        BASIC_PASSWORD,
        ADMIN_TOKEN,
        WRONG_ADMIN_TOKEN,
        WRONG_URL_TOKEN,
        &crm_token,
        EMAIL,
        BAD_EMAIL,
        "loglead-example",
        FIRST,
        LAST,
        COMPANY,
        PHONE_SENT,
    ];
    never.extend(PHONE_FORMS);
    let leaks: Vec<String> = never
        .iter()
        .filter(|s| lower.contains(&s.to_lowercase()))
        .map(|s| {
            let line = lower
                .lines()
                .find(|l| l.contains(&s.to_lowercase()))
                .unwrap_or_default();
            format!("{s:?} in: {line}")
        })
        .collect();
    assert!(leaks.is_empty(), "the logs leak:\n{}", leaks.join("\n"));
}

#[tokio::test]
async fn a_crm_refusing_the_token_is_one_clear_error_line_that_never_shows_the_token() {
    // Issue 11, item 5: a revoked token showed only in metrics and the admin API.
    let fake = FakeHubSpot::start().await;
    let revoked = "revoked-crm-token-P3w8Jd";
    let dir = tempfile::tempdir().expect("temp dir");
    let log = dir.path().join("leadgate.log");
    let app = AppBuilder::new()
        .log_level("info")
        .toml(&format!(
            "[[sources]]\nname = \"typeform\"\nscheme = \"typeform\"\nsecret_env = \"TF\"\nmapping = \"{}\"\n",
            repo("mappings/typeform.toml")
        ))
        .toml(&format!(
            "[crm]\nkind = \"hubspot\"\nbase_url = \"{}\"\ntoken_env = \"HS_TOKEN\"\npoll_interval_ms = 50\n",
            fake.base_url
        ))
        .env("TF", TF_SECRET)
        .env("HS_TOKEN", revoked)
        .spawn_process_logged(dir.path(), &log);
    let client = reqwest::Client::new();
    let body = lead_payload("evt-revoked-1", EMAIL);
    let sig = vec![("Typeform-Signature", typeform_signature(TF_SECRET, &body))];
    let url = format!("{}/webhooks/typeform", app.base);
    assert_eq!(
        post(&client, url, "application/json", &sig, body).await,
        202
    );
    let deadline = Instant::now() + Duration::from_secs(15);
    while !fake.arrivals().iter().any(|a| a.status == 401) {
        assert!(Instant::now() < deadline, "HubSpot never refused the token");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    stop(app).await;
    let text = read_log(&log);
    let alarms: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("\"level\":\"ERROR\"") || l.contains("\"level\":\"WARN\""))
        .filter(|l| l.contains("refused leadgate's credentials"))
        .collect();
    assert_eq!(alarms.len(), 1, "one line, not one per attempt:\n{text}");
    let line = alarms[0];
    for said in [
        "\"crm\":\"hubspot\"",
        "\"status\":401",
        "HS_TOKEN (crm.token_env)",
    ] {
        assert!(line.contains(said), "{said} missing: {line}");
    }
    assert!(!text.contains(revoked), "the token is in the log:\n{text}");
}
