//! leadgate: signed webhooks in, qualified leads out.
//!
//! The modules follow the data flow:
//! receive/verify/decode ([`ingest`]) -> persist ([`store`]) -> map -> [`qualify`] -> outbox -> deliver.
//! [`startup`] wires them; [`config`] parses the settings once; [`health`] and [`telemetry`]
//! are for operators.

pub mod config;
pub mod deliver;
pub mod health;
pub mod ingest;
pub mod lead;
pub mod mapping;
pub mod outbox;
pub mod qualify;
pub mod startup;
pub mod store;
pub mod telemetry;
