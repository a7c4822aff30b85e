//! Black-box tests: the real app on a free port with a temporary store.

mod support;

mod ingest;
mod mapping;
mod process;
