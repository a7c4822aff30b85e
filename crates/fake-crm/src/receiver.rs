//! A webhook receiver: records every request (headers and raw body) and answers 200, or the
//! statuses queued with [`FakeReceiver::fail_next`], or the redirects queued with
//! [`FakeReceiver::redirect_next`] (to another path of the same receiver, which answers 200).

use std::sync::{Arc, Mutex};
use std::time::Instant;

use actix_web::{web, HttpRequest, HttpResponse};

use crate::common::{lock, start, Arrival, Fault, Reply, Running};

/// One received request (with what it was answered).
pub type Received = Arrival;

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
    let now = Instant::now();
    if !s.redirects.is_empty() {
        let (status, location) = s.redirects.remove(0);
        s.received.push(Arrival::new(&req, &body, now, status));
        return Reply::empty(status)
            .header("location", location)
            .into_response();
    }
    let status = match (!s.faults.is_empty()).then(|| s.faults.remove(0)) {
        Some(Fault::Status(st)) => st,
        _ => 200,
    };
    s.received.push(Arrival::new(&req, &body, now, status));
    Reply::empty(status).into_response()
}
