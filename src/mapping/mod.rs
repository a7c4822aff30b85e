//! Mapping: one stored event -> lead patches and engagement events, as described by the
//! admin-owned files in `mappings/` (one per source, named by the source's `mapping` key).
//!
//! The format is documented for admins in `mappings/README.md`, and every shipped file is a
//! commented example. In short, a file has `[[lead]]` blocks (an `email` selector, an optional
//! `at`, and `[lead.fields]`), `[[engagement]]` blocks (a `kind`, an `email`, an `at`, and
//! `detail`), each with an optional `when` condition and `for_each` selector; or a `[route]` that
//! picks another file by a discriminator; plus `[[test]]` cases that `leadgate check` runs.
//!
//! How it is built (one concern per file):
//! - `file`: TOML -> typed `Mapping` (blocks, routes, lookups), every error collected as a
//!   [`MappingError`];
//! - `selector`: RFC 9535 JSONPath via `serde_json_path`, compiled once;
//! - `transform/`: the fixed transform set (`name`, `range`, `datetime` hold the parsers);
//! - `condition`: `when`; `field`: one value's recipe (selectors, alternatives, transforms);
//! - `output`: running the blocks on an event; `testcase`: the `[[test]]` cases.
//!
//! For the pipeline: [`MappingSet::load`] once (and again on reload), then
//! [`MappingSet::map_event`] (or [`MappingSet::map`] with [`event_value`]) per stored event; an
//! [`Unmappable`] is stored as the event's status reason.
//!
//! Everything is parsed at load; [`MappingSet::map`] never re-parses. A [`MappingSet`] is
//! immutable and `Send + Sync`: share it as `Arc<MappingSet>` and swap the `Arc` to reload.
//!
//! Privacy: [`Unmappable`] reasons and [`MappingError`]s name files and keys, never values from
//! an event (emails, names, phone numbers), so they can be stored and logged.

mod condition;
mod field;
mod file;
mod output;
mod selector;
mod testcase;
mod transform;

use std::collections::HashMap;
use std::fmt;
use std::path::Path;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use phonenumber::country::Id as Region;
use serde_json::Value;

use self::file::{Loader, Mapping};
pub use self::testcase::guess_content_type;
use crate::config::{Config, MappingSettings};
use crate::ingest::decode::{self, DecodeError, Limits};
use crate::lead::Mapped;
use crate::store::StoredEvent;

/// A problem in a mapping file (or in the settings' reference to one): `file: key: reason`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct MappingError {
    pub file: String,
    /// Dotted key inside the file (`lead.fields.phone.transform[0]`); empty for the whole file.
    pub key: String,
    pub reason: String,
}

impl fmt::Display for MappingError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

/// Why one event could not be mapped: the mapping file and key, and a reason that never quotes
/// the event's data. The event is kept (status `unmappable`) and can be replayed once fixed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct Unmappable {
    pub file: String,
    /// e.g. `lead.email`, `engagement[2].at`, `route`.
    pub key: String,
    /// e.g. "selector matched nothing", "not a valid email address".
    pub reason: String,
}

impl fmt::Display for Unmappable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.file.is_empty() {
            write!(f, "{}: ", self.file)?;
        }
        write!(f, "{}: {}", self.key, self.reason)
    }
}

/// A `[[test]]` case whose result differs from what it expects (one line per difference).
/// Test payloads are the admin's own examples, so reasons may quote expected and actual values.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}: test {test:?}: {reason}")]
pub struct TestFailure {
    pub file: String,
    pub test: String,
    pub reason: String,
}

/// A stored event whose JSON cannot be recovered (it was decoded once, so this means the row
/// was changed or the decoder was).
#[derive(Debug, thiserror::Error)]
pub enum EventValueError {
    #[error("stored payload is not JSON: {0}")]
    Payload(#[from] serde_json::Error),
    #[error("stored body does not decode: {0}")]
    Body(#[from] DecodeError),
}

/// Every source's mapping, compiled. Cheap to share (`Arc<MappingSet>`), never mutated.
#[derive(Debug, Default)]
pub struct MappingSet {
    by_source: HashMap<String, Arc<Mapping>>,
    /// Each loaded top-level file once, with the source whose name its tests use.
    suites: Vec<(String, Arc<Mapping>)>,
}

impl MappingSet {
    /// Loads the mapping of every configured source. Sources without a `mapping` key have none;
    /// a `mapping` that does not exist is an error naming the source. All errors in all files
    /// are returned, not just the first.
    pub fn load(config: &Config) -> Result<MappingSet, Vec<MappingError>> {
        let served = config
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.mapping.as_deref(), &s.decode));
        Self::load_sources(config, served)
    }

    /// [`load`](Self::load) plus the mappings of sources skipped because their secrets are unset
    /// (`leadgate check` checks every mapping, whatever the environment holds).
    pub fn load_every_source(config: &Config) -> Result<MappingSet, Vec<MappingError>> {
        let served = config
            .sources
            .iter()
            .map(|s| (s.name.as_str(), s.mapping.as_deref(), &s.decode));
        let skipped = config
            .skipped
            .iter()
            .map(|s| (s.name.as_str(), s.mapping.as_deref(), &s.decode));
        Self::load_sources(config, served.chain(skipped))
    }

    fn load_sources<'a>(
        config: &Config,
        sources: impl Iterator<Item = (&'a str, Option<&'a Path>, &'a Limits)>,
    ) -> Result<MappingSet, Vec<MappingError>> {
        let region = parse_region(&config.mapping, &config.origin).map_err(|e| vec![e])?;
        let mut loader = Loader::new(region, &config.base_dir);
        let mut set = MappingSet::default();
        let mut errors = Vec::new();
        for (name, path, decode) in sources {
            let Some(path) = path else {
                continue;
            };
            if !path.is_file() {
                errors.push(MappingError {
                    file: config.origin.clone(),
                    key: format!("sources.{name}.mapping"),
                    reason: format!("{} does not exist", loader.display(path)),
                });
                continue;
            }
            match loader.load(path, name, decode, false) {
                Ok(m) => set.add(name, m),
                Err(e) => errors.extend(e),
            }
        }
        if errors.is_empty() {
            Ok(set)
        } else {
            Err(errors)
        }
    }

    /// Loads one mapping file on its own, for `source` (`leadgate check FILE`, tools, tests).
    pub fn load_file(
        source: &str,
        path: &Path,
        settings: &MappingSettings,
    ) -> Result<MappingSet, Vec<MappingError>> {
        let region = parse_region(settings, "settings").map_err(|e| vec![e])?;
        let base = std::env::current_dir().unwrap_or_default();
        let mut loader = Loader::new(region, &base);
        let m = loader.load(path, source, &Limits::default(), false)?;
        let mut set = MappingSet::default();
        set.add(source, m);
        Ok(set)
    }

    fn add(&mut self, source: &str, m: Arc<Mapping>) {
        if !self.suites.iter().any(|(_, s)| Arc::ptr_eq(s, &m)) {
            self.suites.push((source.to_string(), m.clone()));
        }
        self.by_source.insert(source.to_string(), m);
    }

    /// Whether `source` has a mapping.
    pub fn has_mapping(&self, source: &str) -> bool {
        self.by_source.contains_key(source)
    }

    /// Maps one event of `source`. `received_at` is the lead's and the engagements' time when
    /// the payload carries none of its own.
    pub fn map(
        &self,
        source: &str,
        value: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<Mapped, Unmappable> {
        self.mapping_for(source)?
            .map(source, value, received_at)
            .map_err(|f| Unmappable {
                file: f.file,
                key: f.failure.key,
                reason: f.failure.reason,
            })
    }

    fn mapping_for(&self, source: &str) -> Result<&Arc<Mapping>, Unmappable> {
        self.by_source.get(source).ok_or_else(|| Unmappable {
            file: String::new(),
            key: format!("sources.{source}.mapping"),
            reason: "this source has no mapping".into(),
        })
    }

    /// Maps a stored event: its JSON (see [`event_value`]) at its `received_at`.
    pub fn map_event(&self, event: &StoredEvent) -> Result<Mapped, Unmappable> {
        // A source without a mapping is told apart before its body is parsed.
        self.mapping_for(&event.source)?;
        let value = event_value(event).map_err(|e| Unmappable {
            file: String::new(),
            key: "payload".into(),
            reason: e.to_string(),
        })?;
        self.map(&event.source, &value, event_received_at(event))
    }

    /// Runs every `[[test]]` case of every loaded file (routed files included).
    pub fn run_tests(&self) -> Vec<TestFailure> {
        let mut failures = Vec::new();
        for (source, m) in self.all_files() {
            for t in &m.tests {
                for reason in t.run(m, source) {
                    failures.push(TestFailure {
                        file: m.file.clone(),
                        test: t.name.clone(),
                        reason,
                    });
                }
            }
        }
        failures
    }

    /// How many `[[test]]` cases [`run_tests`](Self::run_tests) runs.
    pub fn test_count(&self) -> usize {
        self.all_files().iter().map(|(_, m)| m.tests.len()).sum()
    }

    /// Names of the sources that have a mapping, sorted.
    pub fn sources(&self) -> Vec<&str> {
        let mut v: Vec<&str> = self.by_source.keys().map(String::as_str).collect();
        v.sort_unstable();
        v
    }

    fn all_files(&self) -> Vec<(&str, &Mapping)> {
        let mut out: Vec<(&str, &Mapping)> = Vec::new();
        for (source, m) in &self.suites {
            let mut stack: Vec<&Mapping> = vec![m];
            while let Some(m) = stack.pop() {
                if out.iter().any(|(_, seen)| std::ptr::eq(*seen, m)) {
                    continue;
                }
                out.push((source, m));
                stack.extend(m.routed().into_iter().map(|a| a.as_ref()));
            }
        }
        out
    }
}

fn parse_region(settings: &MappingSettings, origin: &str) -> Result<Region, MappingError> {
    let r = &settings.default_phone_region;
    r.parse::<Region>().map_err(|_| MappingError {
        file: origin.to_string(),
        key: "mapping.default_phone_region".into(),
        reason: format!("{r:?} is not a region phonenumber knows"),
    })
}

/// The JSON a stored event maps from: its decoded `payload` for form and multipart bodies, else
/// its body decoded as ingest decoded it (charset and BOM included).
pub fn event_value(event: &StoredEvent) -> Result<Value, EventValueError> {
    match &event.payload {
        Some(p) => Ok(serde_json::from_str(p)?),
        None => {
            Ok(decode::decode(Some(&event.content_type), &event.body, &Limits::default())?.value)
        }
    }
}

/// When the event was received.
pub fn event_received_at(event: &StoredEvent) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(event.received_at_ms).unwrap_or_default()
}

#[cfg(test)]
mod tests;
