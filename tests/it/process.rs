//! The real binary as a child process: durability across SIGKILL, graceful SIGTERM.

use std::time::{Duration, Instant};

use crate::support::{assert_each_stored_once, count_events, reply, AppBuilder};

fn builder() -> AppBuilder {
    AppBuilder::new()
        .toml(
            "[[sources]]\nname = \"hooks\"\nscheme = \"standard-webhooks\"\nsecret_env = \"SW\"\n",
        )
        .toml("[[sources]]\nname = \"typeform\"\nscheme = \"typeform\"\nsecret_env = \"TF\"\n")
        .env("SW", "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
        .env("TF", "tf-secret")
}

async fn post_typeform(client: &reqwest::Client, base: &str, i: usize) -> u16 {
    let cfg = builder().config(std::path::Path::new("/tmp"));
    let s = cfg.source("typeform").unwrap();
    let body = format!(r#"{{"event_id":"k-{i}"}}"#);
    let mut out = leadgate::ingest::verify::Outbound::new(
        s.url.clone(),
        "application/json",
        body.into_bytes(),
    );
    s.verifier.sign(&mut out).unwrap();
    let mut req = client
        .post(format!("{base}/webhooks/typeform"))
        .header("content-type", "application/json")
        .body(out.body.clone());
    for (k, v) in &out.headers {
        req = req.header(k, v);
    }
    match req.send().await {
        Ok(r) => reply(r).await.status,
        Err(_) => 0,
    }
}

#[tokio::test]
async fn an_event_acknowledged_right_before_sigkill_is_there_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    let app = builder().spawn_process(dir.path());
    let client = reqwest::Client::new();
    assert_eq!(post_typeform(&client, &app.base, 1).await, 202);
    app.signal("KILL");
    drop(app);
    let db = dir.path().join("data/leadgate.db");
    assert_eq!(
        count_events(&db),
        1,
        "the acknowledged event survived SIGKILL"
    );

    let again = builder().spawn_process(dir.path());
    // The restarted service sees it too: a redelivery is a duplicate.
    let r = post_typeform(&client, &again.base, 1).await;
    assert_eq!(r, 200);
}

#[tokio::test]
async fn sigkill_during_load_loses_no_acknowledged_event() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let app = builder().spawn_process(dir.path());
    let client = reqwest::Client::new();
    let acked_so_far = Arc::new(AtomicUsize::new(0));
    // 8 senders in a loop; the server is killed while they are mid-flight.
    let mut senders = Vec::new();
    for w in 0..8 {
        let (c, b, n) = (client.clone(), app.base.clone(), Arc::clone(&acked_so_far));
        senders.push(tokio::spawn(async move {
            let mut acked = Vec::new();
            for k in 0..1000 {
                let i = w * 1000 + k;
                match post_typeform(&c, &b, i).await {
                    202 => {
                        acked.push(i);
                        n.fetch_add(1, Ordering::Relaxed);
                    }
                    0 => break, // connection refused: the server is gone
                    _ => {}
                }
            }
            acked
        }));
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    while acked_so_far.load(Ordering::Relaxed) < 100 {
        assert!(Instant::now() < deadline, "load did not get going");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    app.signal("KILL");
    let mut acked = Vec::new();
    for s in senders {
        acked.extend(s.await.unwrap());
    }
    drop(app);
    let db = dir.path().join("data/leadgate.db");
    assert_each_stored_once(&db, acked.iter().map(|i| format!("k-{i}")));
    assert!(acked.len() >= 100);
}

#[tokio::test]
async fn sigterm_turns_readiness_off_and_exits_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let mut app = builder().spawn_process(dir.path());
    let client = reqwest::Client::new();
    assert_eq!(post_typeform(&client, &app.base, 7).await, 202);
    app.signal("TERM");
    let status = app.wait_exit(Duration::from_secs(20)).await;
    assert!(status.success(), "{status:?}");
    assert_eq!(count_events(&dir.path().join("data/leadgate.db")), 1);
    // A clean close checkpoints the WAL into the main file.
    let wal = dir.path().join("data/leadgate.db-wal");
    assert!(!wal.exists() || std::fs::metadata(&wal).unwrap().len() == 0);
}
