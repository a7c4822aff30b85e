//! leadgate: signed webhooks in, qualified leads out.
//!
//! The modules follow the data flow:
//! receive/verify/decode ([`ingest`]) -> persist ([`store`]) -> map -> qualify -> outbox -> deliver.

pub mod config;
pub mod ingest;
