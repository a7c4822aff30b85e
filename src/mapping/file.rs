//! Mapping files: TOML -> a typed [`Mapping`], parsed once. The file's shape is checked by serde
//! (`deny_unknown_fields`); its contents (selectors, transforms, field names, conditions, routes,
//! tests) are then compiled one by one so that every mistake in a file is reported, each as
//! `file: key: reason`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use phonenumber::country::Id as Region;
use serde::Deserialize;
use serde_json::Value;

use super::condition::Condition;
use super::field::FieldSpec;
use super::output::{Block, EngagementOutput, Failure, LeadOutput};
use super::selector::{Scope, Selector};
use super::testcase::TestCase;
use super::transform::{text, Lookup, ParseCx};
use super::MappingError;
use crate::ingest::decode::Limits;
use crate::lead::{EngagementKind, FieldName, Mapped};

/// Collects every error found in one file.
#[derive(Debug)]
pub(crate) struct Errors {
    file: String,
    list: Vec<MappingError>,
}

impl Errors {
    pub fn new(file: impl Into<String>) -> Self {
        Errors {
            file: file.into(),
            list: Vec::new(),
        }
    }

    pub fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.list.push(MappingError {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        });
    }

    pub fn len(&self) -> usize {
        self.list.len()
    }

    pub fn into_vec(self) -> Vec<MappingError> {
        self.list
    }

    fn extend(&mut self, more: Vec<MappingError>) {
        self.list.extend(more);
    }
}

// ---- the file's shape ----

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    /// Free text for the admin; not used.
    #[serde(default, rename = "description")]
    _description: Option<String>,
    #[serde(default)]
    route: Option<RawRoute>,
    #[serde(default)]
    lead: Vec<RawLead>,
    #[serde(default)]
    engagement: Vec<RawEngagement>,
    #[serde(default)]
    lookup: BTreeMap<String, toml::Value>,
    #[serde(default)]
    test: Vec<toml::Table>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    by: String,
    #[serde(default)]
    cases: BTreeMap<String, PathBuf>,
    #[serde(default)]
    default: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLead {
    #[serde(default)]
    when: Option<toml::Value>,
    #[serde(default)]
    for_each: Option<String>,
    #[serde(default)]
    email: Option<toml::Value>,
    #[serde(default)]
    at: Option<toml::Value>,
    #[serde(default)]
    fields: toml::Table,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEngagement {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    when: Option<toml::Value>,
    #[serde(default)]
    for_each: Option<String>,
    #[serde(default)]
    email: Option<toml::Value>,
    #[serde(default)]
    at: Option<toml::Value>,
    #[serde(default)]
    detail: toml::Table,
}

// ---- the compiled mapping ----

/// One mapping file, compiled.
#[derive(Debug)]
pub(crate) struct Mapping {
    /// The file as named in messages (relative to the settings file where possible).
    pub file: String,
    pub body: Body,
    pub tests: Vec<TestCase>,
}

#[derive(Debug)]
pub(crate) enum Body {
    Outputs {
        leads: Vec<LeadOutput>,
        engagements: Vec<EngagementOutput>,
    },
    Route(Route),
}

/// Picks another mapping file by the value of a discriminator (Typeform `form_id`, Calendly
/// `event`).
#[derive(Debug)]
pub(crate) struct Route {
    by: Selector,
    cases: HashMap<String, Arc<Mapping>>,
    default: Option<Arc<Mapping>>,
}

/// Why one event could not be mapped, naming the file that said so.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FileFailure {
    pub file: String,
    pub failure: Failure,
}

impl Mapping {
    pub fn map(
        &self,
        source: &str,
        root: &Value,
        received_at: DateTime<Utc>,
    ) -> Result<Mapped, FileFailure> {
        let scope = Scope::new(root);
        match &self.body {
            Body::Route(route) => {
                let found = route.by.first(scope).and_then(|v| text(v).ok().flatten());
                let target = found
                    .as_ref()
                    .and_then(|v| route.cases.get(v))
                    .or(route.default.as_ref());
                match target {
                    Some(m) => m.map(source, root, received_at),
                    None => Err(FileFailure {
                        file: self.file.clone(),
                        failure: Failure {
                            key: "route".into(),
                            reason: if found.is_some() {
                                "no case for this value of route.by, and no default".into()
                            } else {
                                "route.by matched nothing, and there is no default".into()
                            },
                        },
                    }),
                }
            }
            Body::Outputs { leads, engagements } => {
                let mut out = Mapped::default();
                let wrap = |failure| FileFailure {
                    file: self.file.clone(),
                    failure,
                };
                for l in leads {
                    l.run(scope, source, received_at, &mut out).map_err(wrap)?;
                }
                for e in engagements {
                    e.run(scope, source, received_at, &mut out).map_err(wrap)?;
                }
                Ok(out)
            }
        }
    }

    /// The files this one routes to (for running their tests).
    pub fn routed(&self) -> Vec<&Arc<Mapping>> {
        match &self.body {
            Body::Route(r) => r.cases.values().chain(r.default.iter()).collect(),
            Body::Outputs { .. } => Vec::new(),
        }
    }
}

// ---- loading ----

/// Loads mapping files, each once (a file routed to by several sources is shared).
pub(crate) struct Loader<'a> {
    pub region: Region,
    /// Anchors the names files get in messages.
    pub base_dir: &'a Path,
    cache: HashMap<PathBuf, Arc<Mapping>>,
    /// Files already refused: their errors were reported the first time.
    failed: HashSet<PathBuf>,
}

impl<'a> Loader<'a> {
    pub fn new(region: Region, base_dir: &'a Path) -> Self {
        Loader {
            region,
            base_dir,
            cache: HashMap::new(),
            failed: HashSet::new(),
        }
    }

    /// The name a file gets in messages.
    pub fn display(&self, path: &Path) -> String {
        let rel = path.strip_prefix(self.base_dir).unwrap_or(path);
        // `./mappings/x.toml` (a base of ".") reads better as `mappings/x.toml`.
        let shown: PathBuf = rel
            .components()
            .filter(|c| !matches!(c, std::path::Component::CurDir))
            .collect();
        shown.display().to_string()
    }

    /// Loads `path` (and the files it routes to). `source` names test results' leads, and
    /// `limits` decode test payloads as ingest would for that source.
    pub fn load(
        &mut self,
        path: &Path,
        source: &str,
        limits: &Limits,
        routed: bool,
    ) -> Result<Arc<Mapping>, Vec<MappingError>> {
        if let Some(m) = self.cache.get(path) {
            return Ok(m.clone());
        }
        if self.failed.contains(path) {
            return Err(Vec::new());
        }
        let name = self.display(path);
        let mut errs = Errors::new(&name);
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) => {
                errs.push("", format!("cannot read: {e}"));
                return Err(errs.into_vec());
            }
        };
        let raw = match parse_raw(&text) {
            Ok(raw) => raw,
            Err((key, reason)) => {
                errs.push(key, reason);
                return Err(errs.into_vec());
            }
        };
        let dir = path.parent().unwrap_or(Path::new("."));
        let mut lookups = HashMap::new();
        for (name, table) in &raw.lookup {
            match Lookup::parse(table) {
                Ok(l) => {
                    lookups.insert(name.clone(), l);
                }
                Err(e) => errs.push(format!("lookup.{}", toml_key(name)), e),
            }
        }
        let cx = ParseCx {
            region: self.region,
            lookups: &lookups,
        };
        let body = self.compile_body(
            raw.route,
            raw.lead,
            raw.engagement,
            dir,
            source,
            limits,
            routed,
            &cx,
            &mut errs,
        );
        let mut tests = Vec::new();
        for (i, t) in raw.test.iter().enumerate() {
            if let Some(tc) = TestCase::parse(t, &format!("test[{i}]"), dir, limits, &mut errs) {
                tests.push(tc);
            }
        }
        match body {
            Some(body) if errs.len() == 0 => {
                let m = Arc::new(Mapping {
                    file: name,
                    body,
                    tests,
                });
                self.cache.insert(path.to_path_buf(), m.clone());
                Ok(m)
            }
            _ => {
                self.failed.insert(path.to_path_buf());
                Err(errs.into_vec())
            }
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn compile_body(
        &mut self,
        route: Option<RawRoute>,
        leads: Vec<RawLead>,
        engagements: Vec<RawEngagement>,
        dir: &Path,
        source: &str,
        limits: &Limits,
        routed: bool,
        cx: &ParseCx<'_>,
        errs: &mut Errors,
    ) -> Option<Body> {
        let has_outputs = !leads.is_empty() || !engagements.is_empty();
        match route {
            Some(_) if has_outputs => {
                errs.push(
                    "route",
                    "a file either routes ([route]) or maps ([[lead]], [[engagement]]), not both",
                );
                None
            }
            Some(_) if routed => {
                errs.push(
                    "route",
                    "a file reached through a route must map, not route again",
                );
                None
            }
            Some(r) => self
                .compile_route(r, dir, source, limits, errs)
                .map(Body::Route),
            None if !has_outputs => {
                errs.push(
                    "",
                    "maps nothing: add [[lead]] or [[engagement]] blocks, or a [route]",
                );
                None
            }
            None => {
                let (n_leads, n_engagements) = (leads.len(), engagements.len());
                let lead_key = |i: usize| block_key("lead", i, n_leads);
                let eng_key = |i: usize| block_key("engagement", i, n_engagements);
                let leads: Vec<LeadOutput> = leads
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, l)| compile_lead(l, lead_key(i), cx, errs))
                    .collect();
                let engagements: Vec<EngagementOutput> = engagements
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, e)| compile_engagement(e, eng_key(i), cx, errs))
                    .collect();
                Some(Body::Outputs { leads, engagements })
            }
        }
    }

    fn compile_route(
        &mut self,
        r: RawRoute,
        dir: &Path,
        source: &str,
        limits: &Limits,
        errs: &mut Errors,
    ) -> Option<Route> {
        let before = errs.len();
        let by = Selector::parse(&r.by)
            .map_err(|e| errs.push("route.by", e))
            .ok();
        if r.cases.is_empty() && r.default.is_none() {
            errs.push("route", "a route needs cases, a default, or both");
        }
        let mut cases = HashMap::new();
        for (value, target) in &r.cases {
            let key = format!("route.cases.{}", toml_key(value));
            if let Some(m) = self.load_routed(&dir.join(target), &key, source, limits, errs) {
                cases.insert(value.clone(), m);
            }
        }
        let default = match &r.default {
            Some(target) => {
                self.load_routed(&dir.join(target), "route.default", source, limits, errs)
            }
            None => None,
        };
        match by {
            Some(by) if errs.len() == before => Some(Route { by, cases, default }),
            _ => None,
        }
    }

    fn load_routed(
        &mut self,
        path: &Path,
        key: &str,
        source: &str,
        limits: &Limits,
        errs: &mut Errors,
    ) -> Option<Arc<Mapping>> {
        if !path.is_file() {
            errs.push(key, format!("{} does not exist", self.display(path)));
            return None;
        }
        match self.load(path, source, limits, true) {
            Ok(m) => Some(m),
            Err(more) => {
                // The routed file's own errors name that file; say here that it was refused.
                errs.push(
                    key,
                    format!("{} has errors (listed under its name)", self.display(path)),
                );
                errs.extend(more);
                None
            }
        }
    }
}

/// `lead` when the file has one such block, `lead[i]` when it has several.
fn block_key(kind: &str, i: usize, count: usize) -> String {
    if count == 1 {
        kind.to_string()
    } else {
        format!("{kind}[{i}]")
    }
}

/// A table key as it would be written in TOML (quoted unless bare).
fn toml_key(k: &str) -> String {
    if !k.is_empty()
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        k.to_string()
    } else {
        format!("{k:?}")
    }
}

/// TOML text -> the file's shape; the error is `(key, reason)`.
fn parse_raw(text: &str) -> Result<RawFile, (String, String)> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        let key = e
            .span()
            .map(|s| {
                format!(
                    "line {}",
                    text[..s.start.min(text.len())].matches('\n').count() + 1
                )
            })
            .unwrap_or_default();
        (key, e.message().trim().to_string())
    })?;
    serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
        let key = e.path().to_string();
        let key = if key == "." { String::new() } else { key };
        (key, e.inner().message().trim().to_string())
    })
}

fn compile_block(
    key: String,
    when: Option<toml::Value>,
    for_each: Option<String>,
    email: Option<toml::Value>,
    at: Option<toml::Value>,
    cx: &ParseCx<'_>,
    errs: &mut Errors,
) -> Option<Block> {
    let before = errs.len();
    let when = when.and_then(|w| {
        Condition::parse(&w)
            .map_err(|e| errs.push(format!("{key}.when"), e))
            .ok()
    });
    let for_each = for_each.and_then(|f| {
        Selector::parse(&f)
            .map_err(|e| errs.push(format!("{key}.for_each"), e))
            .ok()
    });
    let email = match email {
        Some(e) => FieldSpec::parse(&e, &format!("{key}.email"), cx, errs),
        None => {
            errs.push(
                format!("{key}.email"),
                "missing: every output needs an email selector (the lead's key)",
            );
            None
        }
    };
    let at = at.and_then(|a| FieldSpec::parse(&a, &format!("{key}.at"), cx, errs));
    match email {
        Some(email) if errs.len() == before => Some(Block {
            key,
            when,
            for_each,
            email,
            at,
        }),
        _ => None,
    }
}

fn compile_lead(
    l: RawLead,
    key: String,
    cx: &ParseCx<'_>,
    errs: &mut Errors,
) -> Option<LeadOutput> {
    let before = errs.len();
    let block = compile_block(key.clone(), l.when, l.for_each, l.email, l.at, cx, errs);
    let mut fields = Vec::new();
    for (name, spec) in flatten_custom(&l.fields) {
        let fkey = format!("{key}.fields.{name}");
        match FieldName::parse(&name) {
            Ok(field) => {
                if let Some(spec) = FieldSpec::parse(spec, &fkey, cx, errs) {
                    fields.push((field, spec));
                }
            }
            Err(reason) => errs.push(fkey, reason),
        }
    }
    match block {
        Some(block) if errs.len() == before => Some(LeadOutput { block, fields }),
        _ => None,
    }
}

/// `custom.timeline = ...` written as a dotted TOML key arrives as a `custom` table; it means the
/// field `custom.timeline`. A quoted `"custom.timeline"` key works too.
pub(crate) fn flatten_custom(t: &toml::Table) -> Vec<(String, &toml::Value)> {
    let mut out = Vec::new();
    for (k, v) in t {
        match (k.as_str(), v) {
            ("custom", toml::Value::Table(inner)) => {
                for (ck, cv) in inner {
                    out.push((format!("custom.{ck}"), cv));
                }
            }
            _ => out.push((k.clone(), v)),
        }
    }
    out
}

fn compile_engagement(
    e: RawEngagement,
    key: String,
    cx: &ParseCx<'_>,
    errs: &mut Errors,
) -> Option<EngagementOutput> {
    let before = errs.len();
    let kind = match e.kind.as_deref() {
        Some(k) => EngagementKind::parse(k)
            .map_err(|r| errs.push(format!("{key}.kind"), r))
            .ok(),
        None => {
            errs.push(
                format!("{key}.kind"),
                "missing: say what the lead did, e.g. kind = \"email_click\"",
            );
            None
        }
    };
    let block = compile_block(key.clone(), e.when, e.for_each, e.email, e.at, cx, errs);
    let mut detail = Vec::new();
    for (name, spec) in &e.detail {
        let dkey = format!("{key}.detail.{name}");
        if name.is_empty()
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            errs.push(dkey, "detail names use a-z, 0-9 and _");
            continue;
        }
        if let Some(spec) = FieldSpec::parse(spec, &dkey, cx, errs) {
            detail.push((name.clone(), spec));
        }
    }
    match (kind, block) {
        (Some(kind), Some(block)) if errs.len() == before => Some(EngagementOutput {
            block,
            kind,
            detail,
        }),
        _ => None,
    }
}
