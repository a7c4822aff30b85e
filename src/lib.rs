//! leadgate: signed webhooks in, qualified leads out.
//!
//! The modules follow the data flow:
//! receive/verify/decode ([`ingest`]) -> persist ([`store`]) -> map ([`mapping`]) -> [`qualify`] ->
//! [`outbox`] -> [`deliver`]. [`pipeline`] runs map -> qualify -> outbox in the background.
//! [`startup`] wires them and serves them on two listeners (public: webhooks and probes;
//! operator: metrics and the admin API); [`config`] parses the settings once; [`health`],
//! [`telemetry`], [`admin`] and [`auth`] are for operators.

pub mod admin;
pub mod auth;
pub mod config;
pub mod deliver;
/// Fuzz-target entry points, shared by `fuzz/` and `tests/fuzz_corpus.rs`; not used by the service.
#[doc(hidden)]
pub mod fuzzing;
pub mod health;
pub mod ingest;
pub mod lead;
pub mod mapping;
pub mod outbox;
pub mod pipeline;
pub mod qualify;
pub mod startup;
pub mod store;
pub mod telemetry;
