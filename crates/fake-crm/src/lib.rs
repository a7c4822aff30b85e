//! Fake CRM API servers for tests and benchmarks: HubSpot, Salesforce and Pipedrive, each an
//! actix-web server on `127.0.0.1:0` that behaves like the real API as far as a connector can
//! tell (leadgate `shared/research/crm-apis.md` §8): authentication, status codes and error bodies,
//! rate-limit windows with their headers and 429 bodies, partial results, and fault injection.
//!
//! Every fake counts each request it receives (including refused ones) in its rolling window and
//! keeps a log of arrivals with their instant, so tests can check "never more than N per window"
//! and "nothing before Retry-After" against what actually arrived.

mod common;
pub mod hubspot;
pub mod pipedrive;
pub mod receiver;
pub mod salesforce;

pub use common::{Arrival, Fault};
pub use hubspot::{FakeHubSpot, HubSpotOptions, Policy};
pub use pipedrive::{FakePipedrive, PipedriveOptions};
pub use receiver::FakeReceiver;
pub use salesforce::{FakeSalesforce, SalesforceOptions};
