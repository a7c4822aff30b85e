//! Test harness: start the real app on free ports with a temporary store, or the real binary as
//! a child process (for signals), and talk to it over HTTP: webhooks and probes at `base` (the
//! public listener), metrics and the admin API at `admin` (the operator listener).

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use leadgate::config::Config;
use leadgate::ingest::verify::Outbound;
use leadgate::startup::{Application, Stopper};
use tempfile::TempDir;

/// The public URL test sources are configured with (as if behind a proxy).
pub const PUBLIC_URL: &str = "https://leads.example.com";

pub fn fixture(path: &str) -> Vec<u8> {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(path);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// Builds a test configuration: sources as TOML snippets, secrets as env vars.
#[derive(Default)]
pub struct AppBuilder {
    sections: Vec<String>,
    env: BTreeMap<String, String>,
    /// `[log] level`; `warn` unless a test raises it.
    log_level: Option<String>,
    /// `admin_listen` = `listen`: one listener serves everything.
    shared_listener: bool,
}

impl AppBuilder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds raw TOML (a `[[sources]]` entry, a section).
    pub fn toml(mut self, snippet: &str) -> Self {
        self.sections.push(snippet.to_string());
        self
    }

    pub fn env(mut self, k: &str, v: &str) -> Self {
        self.env.insert(k.into(), v.into());
        self
    }

    /// Sets `[log] level` (e.g. `"trace"` to see every line the app could write).
    pub fn log_level(mut self, level: &str) -> Self {
        self.log_level = Some(level.into());
        self
    }

    /// Serves the operator surface on the public listener (`admin_listen` = `listen`).
    pub fn shared_listener(mut self) -> Self {
        self.shared_listener = true;
        self
    }

    /// The public and operator addresses: distinct free ports, or one port when shared.
    fn addresses(&self, pick: impl Fn() -> String) -> (String, String) {
        let listen = pick();
        let admin = if self.shared_listener {
            listen.clone()
        } else {
            pick()
        };
        (listen, admin)
    }

    fn text(&self, (listen, admin): &(String, String)) -> String {
        format!(
            "[server]\nlisten = \"{listen}\"\nadmin_listen = \"{admin}\"\npublic_url = \"{PUBLIC_URL}\"\nworkers = 1\nshutdown_timeout_secs = 5\n\
             [store]\nurl = \"sqlite://data/leadgate.db\"\n[log]\nlevel = \"{}\"\n{}\n",
            self.log_level.as_deref().unwrap_or("warn"),
            self.sections.join("\n")
        )
    }

    pub fn config(&self, dir: &Path) -> Config {
        // Port 0 (any free port) for each listener; a shared one needs a real port.
        let addresses = self.addresses(|| {
            if self.shared_listener {
                format!("127.0.0.1:{}", free_port())
            } else {
                "127.0.0.1:0".into()
            }
        });
        Config::from_toml(&self.text(&addresses), "test.toml", dir, &self.env)
            .expect("test config is valid")
    }

    /// Starts the app in this process.
    pub async fn spawn(self) -> TestApp {
        let dir = tempfile::tempdir().expect("temp dir");
        let config = self.config(dir.path());
        let app = Application::build(config.clone())
            .await
            .expect("app builds");
        let port = app.port();
        let admin_port = app.admin_port();
        let stopper = app.stopper();
        let engine = app.engine();
        let handle = tokio::spawn(app.run_until_stopped());
        TestApp {
            base: format!("http://127.0.0.1:{port}"),
            port,
            admin: format!("http://127.0.0.1:{admin_port}"),
            dir,
            config,
            engine,
            stopper,
            handle: Some(handle),
            client: reqwest::Client::new(),
        }
    }

    /// Writes the config file and starts the real binary as a child process.
    pub fn spawn_process(self, dir: &Path) -> ChildApp {
        self.spawn_child(dir, Stdio::piped(), Stdio::piped(), false)
    }

    /// Like [`spawn_process`](Self::spawn_process), with stdout and stderr both appended to `log`
    /// and `RUST_LOG` removed, so the `[log] level` of the builder decides what is written.
    pub fn spawn_process_logged(self, dir: &Path, log: &Path) -> ChildApp {
        let file = std::fs::File::create(log).expect("create log file");
        let err = file.try_clone().expect("clone log file");
        self.spawn_child(dir, Stdio::from(file), Stdio::from(err), true)
    }

    fn spawn_child(self, dir: &Path, out: Stdio, err: Stdio, clean_log_env: bool) -> ChildApp {
        let addresses = self.addresses(|| format!("127.0.0.1:{}", free_port()));
        let path = dir.join("leadgate.toml");
        std::fs::write(&path, self.text(&addresses)).expect("write config");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_leadgate"));
        cmd.arg("--config").arg(&path).arg("serve").envs(&self.env);
        if clean_log_env {
            cmd.env_remove("RUST_LOG");
        }
        let child = cmd
            .stdout(out)
            .stderr(err)
            .spawn()
            .expect("leadgate starts");
        let app = ChildApp {
            child,
            base: format!("http://{}", addresses.0),
            admin: format!("http://{}", addresses.1),
            config_path: path,
            client: reqwest::Client::new(),
        };
        app.wait_healthy();
        app
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

pub struct TestApp {
    /// The public listener: webhooks and probes.
    pub base: String,
    pub port: u16,
    /// The operator listener: metrics and the admin API.
    pub admin: String,
    pub dir: TempDir,
    pub config: Config,
    /// The running app's mappings and rules (tests reload them).
    pub engine: leadgate::pipeline::SharedEngine,
    pub stopper: Stopper,
    pub handle: Option<tokio::task::JoinHandle<Result<(), leadgate::startup::StartupError>>>,
    pub client: reqwest::Client,
}

/// A response reduced to what tests look at.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub json: serde_json::Value,
}

impl Reply {
    pub fn error(&self) -> &str {
        self.json["error"].as_str().unwrap_or("")
    }
}

pub async fn reply(res: reqwest::Response) -> Reply {
    let status = res.status().as_u16();
    let headers = res.headers().clone();
    let text = res.text().await.unwrap_or_default();
    let json = serde_json::from_str(&text).unwrap_or(serde_json::Value::Null);
    Reply {
        status,
        headers,
        json,
    }
}

impl TestApp {
    /// Signs `body` the way the source's provider does (against the public URL) and returns the request.
    pub fn signed(&self, source: &str, content_type: &str, body: &[u8]) -> Outbound {
        let s = self.config.source(source).expect("source configured");
        let mut out = Outbound::new(s.url.clone(), content_type, body.to_vec());
        s.verifier.sign(&mut out).expect("source signs");
        out
    }

    /// POSTs a prepared request to this app (same path and query, local address).
    pub async fn post(&self, source: &str, out: &Outbound) -> Reply {
        let query = out.query();
        let url = if query.is_empty() {
            format!("{}/webhooks/{source}", self.base)
        } else {
            format!("{}/webhooks/{source}?{query}", self.base)
        };
        let mut req = self
            .client
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, &out.content_type)
            .body(out.body.clone());
        for (k, v) in &out.headers {
            req = req.header(k, v);
        }
        reply(req.send().await.expect("request sent")).await
    }

    pub async fn get(&self, path: &str) -> Reply {
        reply(
            self.client
                .get(format!("{}{path}", self.base))
                .send()
                .await
                .expect("get"),
        )
        .await
    }

    /// `GET /metrics` on the operator listener, as text.
    pub async fn metrics_text(&self) -> String {
        metrics_text(&self.client, &self.admin).await
    }

    pub fn db_path(&self) -> PathBuf {
        self.dir.path().join("data/leadgate.db")
    }

    /// Counts inbox rows with a direct read-only connection.
    pub fn count_events(&self) -> i64 {
        count_events(&self.db_path())
    }
}

async fn metrics_text(client: &reqwest::Client, admin: &str) -> String {
    let res = client
        .get(format!("{admin}/metrics"))
        .send()
        .await
        .expect("GET /metrics");
    assert_eq!(res.status(), 200);
    res.text().await.expect("metrics text")
}

pub fn count_events(db: &Path) -> i64 {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open db");
    c.query_row("SELECT COUNT(*) FROM events", [], |r| r.get(0))
        .expect("count")
}

/// Asserts each acknowledged delivery (by dedupe key) is in the inbox exactly once.
pub fn assert_each_stored_once(db: &Path, keys: impl IntoIterator<Item = String>) {
    let c = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .expect("open db");
    for key in keys {
        let n: i64 = c
            .query_row(
                "SELECT COUNT(*) FROM events WHERE dedupe_key = ?1",
                [&key],
                |r| r.get(0),
            )
            .expect("count");
        assert_eq!(n, 1, "acknowledged event {key} is stored exactly once");
    }
}

/// The real binary running as a child process.
pub struct ChildApp {
    pub child: Child,
    /// The public listener: webhooks and probes.
    pub base: String,
    /// The operator listener: metrics and the admin API.
    pub admin: String,
    pub config_path: PathBuf,
    pub client: reqwest::Client,
}

impl ChildApp {
    fn wait_healthy(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = format!("{}/healthz", self.base);
        while Instant::now() < deadline {
            if probe_ok(&url) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("leadgate did not become healthy");
    }

    /// `GET /metrics` on the operator listener, as text.
    pub async fn metrics_text(&self) -> String {
        metrics_text(&self.client, &self.admin).await
    }

    /// Waits for the process to exit (after a signal), failing the test after `limit`.
    pub async fn wait_exit(&mut self, limit: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(Instant::now() < deadline, "did not exit after the signal");
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn signal(&self, sig: &str) {
        let status = Command::new("kill")
            .arg(format!("-{sig}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("kill runs");
        assert!(status.success());
    }
}

impl Drop for ChildApp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A tiny blocking health probe (the tests' reqwest client is async-only).
fn probe_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let rest = url.trim_start_matches("http://");
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut s) = std::net::TcpStream::connect(host) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    if write!(
        s,
        "GET /{path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    )
    .is_err()
    {
        return false;
    }
    let mut buf = String::new();
    let _ = s.read_to_string(&mut buf);
    buf.starts_with("HTTP/1.1 200")
}
