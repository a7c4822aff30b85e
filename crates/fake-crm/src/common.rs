//! Shared pieces: starting a server, the rolling request window, the arrival log, faults.

use std::collections::VecDeque;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use actix_web::dev::ServerHandle;
use actix_web::http::StatusCode;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};

/// One request as it arrived, and what it was answered.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub method: String,
    /// Path without the query.
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// Header names lower-cased, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub status: u16,
}

impl Arrival {
    /// The bearer token it carried (tells apart senders configured with different tokens).
    pub fn bearer(&self) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == "authorization")
            .and_then(|(_, v)| v.strip_prefix("Bearer "))
    }

    pub fn new(req: &HttpRequest, body: &[u8], at: Instant, status: u16) -> Self {
        Self {
            at,
            method: req.method().to_string(),
            path: req.path().to_string(),
            query: req.query_string().to_string(),
            headers: req
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect(),
            body: body.to_vec(),
            status,
        }
    }

    /// A header's value; names are case-insensitive.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A one-off misbehaviour for the next request(s).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Answer with this status (5xx, 423, 477, ...) and the API's error body.
    Status(u16),
    /// Answer 2xx with an empty result (HubSpot batch writes).
    Empty,
}

/// Counts requests in a rolling window and remembers the most seen in any window.
#[derive(Debug)]
pub struct Window {
    pub width: Duration,
    pub max: u32,
    arrivals: VecDeque<Instant>,
    pub max_seen: usize,
}

impl Window {
    pub fn new(width: Duration, max: u32) -> Self {
        Self {
            width,
            max,
            arrivals: VecDeque::new(),
            max_seen: 0,
        }
    }

    /// Records an arrival at `now`; returns how many arrived in `(now - width, now]`.
    pub fn arrive(&mut self, now: Instant) -> usize {
        self.trim(now);
        self.arrivals.push_back(now);
        let n = self.arrivals.len();
        self.max_seen = self.max_seen.max(n);
        n
    }

    fn trim(&mut self, now: Instant) {
        while let Some(first) = self.arrivals.front() {
            if now.duration_since(*first) >= self.width {
                self.arrivals.pop_front();
            } else {
                break;
            }
        }
    }

    /// Requests left in the current window.
    pub fn remaining(&mut self, now: Instant) -> u32 {
        self.trim(now);
        self.max.saturating_sub(self.arrivals.len() as u32)
    }

    /// Time until the oldest request in the window leaves it.
    pub fn reset_in(&mut self, now: Instant) -> Duration {
        self.trim(now);
        self.arrivals
            .front()
            .map(|f| self.width.saturating_sub(now.duration_since(*f)))
            .unwrap_or_default()
    }
}

/// A running fake: its base URL and a handle to stop it.
pub struct Running {
    pub base_url: String,
    pub handle: ServerHandle,
    /// The address it listens on (to listen again on the same port after a stop).
    pub addr: SocketAddr,
}

/// Starts `handler` as the only route of a one-worker server on 127.0.0.1:0.
pub fn start<S, F, Fut>(state: Arc<Mutex<S>>, handler: F) -> Running
where
    S: Send + 'static,
    F: Fn(HttpRequest, web::Bytes, Arc<Mutex<S>>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    start_at(SocketAddr::from(([127, 0, 0, 1], 0)), state, handler)
}

/// [`start`] on a given address; binding is retried for a few seconds, since a listener that
/// was just stopped on that port may still be closing.
pub fn start_at<S, F, Fut>(addr: SocketAddr, state: Arc<Mutex<S>>, handler: F) -> Running
where
    S: Send + 'static,
    F: Fn(HttpRequest, web::Bytes, Arc<Mutex<S>>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        match try_start_at(addr, Arc::clone(&state), handler.clone()) {
            Ok(r) => return r,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => panic!("fake CRM cannot bind {addr}: {e}"),
        }
    }
}

fn try_start_at<S, F, Fut>(
    addr: SocketAddr,
    state: Arc<Mutex<S>>,
    handler: F,
) -> std::io::Result<Running>
where
    S: Send + 'static,
    F: Fn(HttpRequest, web::Bytes, Arc<Mutex<S>>) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = HttpResponse> + 'static,
{
    let server = HttpServer::new(move || {
        let state = Arc::clone(&state);
        let handler = handler.clone();
        App::new().default_service(web::to(move |req: HttpRequest, body: web::Bytes| {
            let state = Arc::clone(&state);
            let handler = handler.clone();
            async move { handler(req, body, state).await }
        }))
    })
    .workers(1)
    .disable_signals()
    .bind(addr)?;
    let addr = server.addrs()[0];
    let server = server.run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(Running {
        base_url: format!("http://{addr}"),
        handle,
        addr,
    })
}

/// Locks a fake's state (a panicking test thread must not hide the other failures).
pub fn lock<S>(m: &Mutex<S>) -> MutexGuard<'_, S> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// A response under construction: status, headers, JSON body.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Option<serde_json::Value>,
}

impl Reply {
    pub fn json(status: u16, body: serde_json::Value) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Some(body),
        }
    }

    pub fn empty(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: None,
        }
    }

    pub fn header(mut self, k: &str, v: impl ToString) -> Self {
        self.headers.push((k.to_string(), v.to_string()));
        self
    }

    pub fn into_response(self) -> HttpResponse {
        let mut b =
            HttpResponse::build(StatusCode::from_u16(self.status).unwrap_or(StatusCode::OK));
        for (k, v) in &self.headers {
            b.insert_header((k.as_str(), v.as_str()));
        }
        match self.body {
            Some(v) => b.content_type("application/json").body(v.to_string()),
            None => b.finish(),
        }
    }
}

/// The query string as pairs.
pub fn query(req: &HttpRequest) -> Vec<(String, String)> {
    form_urlencoded::parse(req.query_string().as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect()
}

pub fn correlation_id() -> String {
    uuid::Uuid::new_v4().to_string()
}
