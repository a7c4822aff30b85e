//! A webhook receiver: records every request (headers and raw body) and answers 200, or the
//! statuses queued with [`FakeReceiver::fail_next`], or the redirects queued with
//! [`FakeReceiver::redirect_next`] (to another path of the same receiver, which answers 200).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::common::{lock, start, Fault, Reply, Running};

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    /// The raw query string (empty when none).
    pub query: String,
    /// Header names lower-cased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct State {
    received: Vec<Received>,
    faults: Vec<Fault>,
    /// (status, Location) answers to give before any fault.
    redirects: Vec<(u16, String)>,
}

pub struct FakeReceiver {
    pub base_url: String,
    state: Arc<Mutex<State>>,
    running: Running,
}

impl FakeReceiver {
    pub async fn start() -> Self {
        let state = Arc::new(Mutex::new(State::default()));
        let running = start(Arc::clone(&state), handle);
        Self {
            base_url: running.base_url.clone(),
            state,
            running,
        }
    }

    pub fn fail_next(&self, n: usize, fault: Fault) {
        let mut s = lock(&self.state);
        for _ in 0..n {
            s.faults.push(fault.clone());
        }
    }

    /// Answers the next `n` requests with `status` (3xx) and `Location: location`.
    pub fn redirect_next(&self, n: usize, status: u16, location: &str) {
        let mut s = lock(&self.state);
        for _ in 0..n {
            s.redirects.push((status, location.to_string()));
        }
    }

    pub fn received(&self) -> Vec<Received> {
        lock(&self.state).received.clone()
    }

    pub async fn stop(&self) {
        self.running.handle.stop(false).await;
    }
}

async fn handle(req: HttpRequest, body: web::Bytes, state: Arc<Mutex<State>>) -> HttpResponse {
    let mut s = lock(&state);
    s.received.push(Received {
        at: Instant::now(),
        method: req.method().to_string(),
        path: req.path().to_string(),
        query: req.query_string().to_string(),
        headers: req
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        body: body.to_vec(),
    });
    if !s.redirects.is_empty() {
        let (status, location) = s.redirects.remove(0);
        return Reply::empty(status)
            .header("location", location)
            .into_response();
    }
    let status = match (!s.faults.is_empty()).then(|| s.faults.remove(0)) {
        Some(Fault::Status(st)) => st,
        _ => 200,
    };
    Reply::empty(status).into_response()
}
