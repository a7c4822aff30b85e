//! Load generator for the ingest benchmark.
//!
//! Sends distinct, correctly signed webhook deliveries (Typeform or Standard Webhooks) — or plain
//! `GET`s, for the HTTP stack's own ceiling — over keep-alive HTTP/1.1 connections, and prints
//! throughput and latency percentiles.
//!
//! Closed loop (`--rate 0`): every connection sends back to back; this finds the peak rate.
//! Open loop (`--rate R`): request i is due at t0 + i/R and its latency is measured from that
//! due time, so a server that falls behind shows the queueing it causes (no coordinated omission).
//!
//! Signatures are computed here with `hmac`/`sha2` directly, independently of leadgate's code.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use base64::Engine;
use bytes::Bytes;
use clap::{Parser, ValueEnum};
use hdrhistogram::Histogram;
use hmac::{Hmac, Mac};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::Request;
use hyper_util::rt::TokioIo;
use sha2::Sha256;
use tokio::net::TcpStream;

#[derive(Clone, Copy, Debug, ValueEnum, PartialEq, Eq)]
enum Kind {
    /// `GET <path>` (use /healthz for the HTTP stack's ceiling).
    Get,
    /// Typeform: `Typeform-Signature: sha256=<base64 HMAC of the body>`.
    Typeform,
    /// Standard Webhooks: `webhook-id/-timestamp/-signature`, `whsec_` secret.
    StandardWebhooks,
}

#[derive(Parser, Debug)]
#[command(about = "Signed-webhook load generator for leadgate")]
struct Args {
    /// host:port of the server.
    #[arg(long, default_value = "127.0.0.1:8080")]
    addr: String,
    #[arg(long, value_enum, default_value = "typeform")]
    kind: Kind,
    /// Request path, e.g. /webhooks/typeform or /healthz.
    #[arg(long, default_value = "/webhooks/typeform")]
    path: String,
    /// Signing secret (Typeform: the raw secret; Standard Webhooks: whsec_...).
    #[arg(long, default_value = "bench-secret")]
    secret: String,
    /// Concurrent keep-alive connections.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// How long to send, in seconds.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Target requests per second (open loop); 0 = as fast as possible (closed loop).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Makes event ids unique across runs against the same store.
    #[arg(long, default_value = "run")]
    run_id: String,
    /// Print one JSON line instead of the table.
    #[arg(long)]
    json: bool,
}

/// A realistic Typeform form_response (about 2 KB) with a unique event id and email.
fn typeform_body(run: &str, i: u64) -> String {
    format!(
        concat!(
            r#"{{"event_id":"{run}-{i}","event_type":"form_response","form_response":{{"form_id":"lT4Z3j","#,
            r#""token":"tok{i}","landed_at":"2026-11-20T10:14:02Z","submitted_at":"2026-11-20T10:16:41Z","#,
            r#""hidden":{{"utm_source":"linkedin","utm_medium":"paid","utm_campaign":"q4-demand-gen"}},"#,
            r#""definition":{{"id":"lT4Z3j","title":"Book a demo","fields":[{{"id":"Q1fN","ref":"first_name","type":"short_text","title":"First name"}},"#,
            r#"{{"id":"Q3em","ref":"work_email","type":"email","title":"Work email"}},{{"id":"Q4co","ref":"company","type":"short_text","title":"Company"}},"#,
            r#"{{"id":"Q5jt","ref":"job_title","type":"short_text","title":"Job title"}},{{"id":"Q6sz","ref":"company_size","type":"multiple_choice","title":"Employees"}}]}},"#,
            r#""answers":[{{"type":"text","text":"Ada","field":{{"id":"Q1fN","type":"short_text","ref":"first_name"}}}},"#,
            r#"{{"type":"text","text":"Lovelace","field":{{"id":"Q2lN","type":"short_text","ref":"last_name"}}}},"#,
            r#"{{"type":"email","email":"lead{i}@analytical-engines.io","field":{{"id":"Q3em","type":"email","ref":"work_email"}}}},"#,
            r#"{{"type":"text","text":"Analytical Engines Ltd","field":{{"id":"Q4co","type":"short_text","ref":"company"}}}},"#,
            r#"{{"type":"text","text":"VP Engineering","field":{{"id":"Q5jt","type":"short_text","ref":"job_title"}}}},"#,
            r#"{{"type":"choice","choice":{{"label":"51-200"}},"field":{{"id":"Q6sz","type":"multiple_choice","ref":"company_size"}}}},"#,
            r#"{{"type":"phone_number","phone_number":"+442071838750","field":{{"id":"Q7ph","type":"phone_number","ref":"phone"}}}}]}}}}"#
        ),
        run = run,
        i = i
    )
}

fn standard_body(i: u64) -> String {
    format!(
        r#"{{"type":"contact.created","timestamp":"2026-11-20T10:16:41Z","data":{{"email":"lead{i}@analytical-engines.io","first_name":"Ada","last_name":"Lovelace","company":"Analytical Engines Ltd","job_title":"VP Engineering","utm_campaign":"q4-demand-gen"}}}}"#
    )
}

fn hmac_sha256(key: &[u8], parts: &[&[u8]]) -> Vec<u8> {
    // HMAC takes keys of any length.
    let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// One prepared request: headers and body, signed now.
fn build(args: &Args, i: u64, now_secs: u64) -> Request<Full<Bytes>> {
    let b64 = base64::engine::general_purpose::STANDARD;
    let req = Request::builder()
        .uri(&args.path)
        .header("host", &args.addr);
    match args.kind {
        Kind::Get => req.method("GET").body(Full::new(Bytes::new())),
        Kind::Typeform => {
            let body = typeform_body(&args.run_id, i);
            let sig = b64.encode(hmac_sha256(args.secret.as_bytes(), &[body.as_bytes()]));
            req.method("POST")
                .header("content-type", "application/json")
                .header("typeform-signature", format!("sha256={sig}"))
                .body(Full::new(Bytes::from(body)))
        }
        Kind::StandardWebhooks => {
            let body = standard_body(i);
            let key = b64
                .decode(args.secret.trim_start_matches("whsec_"))
                .expect("--secret must be whsec_<base64>");
            let id = format!("msg_{}_{i}", args.run_id);
            let ts = now_secs.to_string();
            let sig = b64.encode(hmac_sha256(
                &key,
                &[id.as_bytes(), b".", ts.as_bytes(), b".", body.as_bytes()],
            ));
            req.method("POST")
                .header("content-type", "application/json")
                .header("webhook-id", id)
                .header("webhook-timestamp", ts)
                .header("webhook-signature", format!("v1,{sig}"))
                .body(Full::new(Bytes::from(body)))
        }
    }
    .expect("valid request")
}

#[derive(Default)]
struct Tally {
    ok: u64,
    statuses: std::collections::BTreeMap<u16, u64>,
    errors: u64,
}

async fn connection(
    args: Arc<Args>,
    next: Arc<AtomicU64>,
    t0: Instant,
    end: Instant,
    now_secs: u64,
) -> (Histogram<u64>, Tally) {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut tally = Tally::default();
    let mut sender = None;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        let due = if args.rate > 0.0 {
            t0 + Duration::from_secs_f64(i as f64 / args.rate)
        } else {
            Instant::now()
        };
        if due >= end {
            break;
        }
        tokio::time::sleep_until(due.into()).await;
        if sender.is_none() {
            match connect(&args.addr).await {
                Ok(s) => sender = Some(s),
                Err(_) => {
                    tally.errors += 1;
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let req = build(&args, i, now_secs);
        let outcome = async {
            s.ready().await?;
            let res = s.send_request(req).await?;
            let status = res.status().as_u16();
            res.into_body().collect().await?;
            Ok::<u16, hyper::Error>(status)
        }
        .await;
        let took = due.elapsed();
        match outcome {
            Ok(status) => {
                let _ = hist.record(took.as_micros().max(1) as u64);
                if (200..300).contains(&status) {
                    tally.ok += 1;
                }
                *tally.statuses.entry(status).or_default() += 1;
            }
            Err(_) => {
                tally.errors += 1;
                sender = None;
            }
        }
    }
    (hist, tally)
}

async fn connect(
    addr: &str,
) -> Result<http1::SendRequest<Full<Bytes>>, Box<dyn std::error::Error + Send + Sync>> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

#[tokio::main]
async fn main() {
    let args = Arc::new(Args::parse());
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let next = Arc::new(AtomicU64::new(0));
    let t0 = Instant::now();
    let end = t0 + Duration::from_secs_f64(args.duration);
    let tasks: Vec<_> = (0..args.connections)
        .map(|_| {
            tokio::spawn(connection(
                Arc::clone(&args),
                Arc::clone(&next),
                t0,
                end,
                now_secs,
            ))
        })
        .collect();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram bounds");
    let mut total = Tally::default();
    for t in tasks {
        let (h, tally) = t.await.expect("connection task");
        let _ = hist.add(&h);
        total.ok += tally.ok;
        total.errors += tally.errors;
        for (k, v) in tally.statuses {
            *total.statuses.entry(k).or_default() += v;
        }
    }
    let elapsed = t0.elapsed().as_secs_f64();
    let ms = |q: f64| hist.value_at_quantile(q) as f64 / 1000.0;
    let rps = total.ok as f64 / elapsed;
    let statuses: Vec<String> = total
        .statuses
        .iter()
        .map(|(k, v)| format!("{k}:{v}"))
        .collect();
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "kind": format!("{:?}", args.kind), "connections": args.connections, "target_rate": args.rate,
                "elapsed_s": elapsed, "ok": total.ok, "errors": total.errors, "ok_per_s": rps,
                "p50_ms": ms(0.5), "p99_ms": ms(0.99), "max_ms": hist.max() as f64 / 1000.0,
                "statuses": total.statuses,
            })
        );
    } else {
        println!(
            "{:<18} {:>6} conns {:>9} rate {:>9} ok {:>6} err {:>10.0} ok/s  p50 {:>7.2} ms  p99 {:>7.2} ms  max {:>8.2} ms  [{}]",
            format!("{:?}", args.kind),
            args.connections,
            if args.rate > 0.0 { format!("{:.0}/s", args.rate) } else { "max".into() },
            total.ok,
            total.errors,
            rps,
            ms(0.5),
            ms(0.99),
            hist.max() as f64 / 1000.0,
            statuses.join(" ")
        );
    }
}
