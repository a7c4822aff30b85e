//! Receiving webhooks: route, verify (one file per scheme), decode, then hand the event to the store.

pub mod decode;
pub mod verify;
