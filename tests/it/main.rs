//! Black-box tests: the real app on a free port with a temporary store.

mod support;

mod badinput;
mod cli;
mod deliver;
mod deploy;
mod docs;
mod ingest;
mod listeners;
mod logs;
mod mapping;
mod ops;
mod pipeline;
mod process;
mod reliability;
mod schemes;
