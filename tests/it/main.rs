//! Black-box tests: the real app on a free port with a temporary store.

mod support;

mod cli;
mod deliver;
mod ingest;
mod process;
mod schemes;
