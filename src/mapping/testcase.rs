//! `[[test]]` cases inside a mapping file: a payload and what it must map to, so an admin who
//! changes a mapping proves it with `leadgate check`.
//!
//! ```toml
//! [[test]]
//! name = "demo request"
//! payload = "examples/typeform.json"      # relative to this file; or json = '''{...}''',
//!                                         # or body = "a=1&b=2" with content_type
//! received_at = 2026-11-20T12:00:00Z      # optional; default 2000-01-01T00:00:00Z
//! [[test.lead]]                           # every lead the event maps to, in order
//! email = "ada@example.com"
//! first_name = "Ada"                      # listed fields must be equal...
//! custom.timeline = "This quarter"
//! absent = ["phone"]                      # ...and these must not be set; others are not checked
//! [[test.engagement]]                     # every engagement, in order
//! kind = "form_submit"
//! ```
//! Or `unmappable = "lead.email: selector matched nothing"` for an event that must be refused.
//! Payloads are read and decoded at load, exactly as ingest decodes that source's bodies.

use std::path::Path;

use chrono::{DateTime, Utc};
use serde_json::Value;

use super::file::{flatten_custom, Errors, Mapping};
use super::transform::{format_datetime, scalar};
use crate::ingest::decode::{self, Limits};
use crate::lead::{Email, EngagementKind, FieldName, Mapped};

const KEYS: &str =
    "name, payload, json, body, content_type, received_at, unmappable, lead, engagement";

#[derive(Debug)]
pub(crate) struct TestCase {
    pub name: String,
    value: Value,
    received_at: DateTime<Utc>,
    expect: Expect,
}

#[derive(Debug)]
enum Expect {
    Unmappable(String),
    Mapped {
        leads: Vec<ExpectLead>,
        engagements: Vec<ExpectEngagement>,
    },
}

#[derive(Debug, Default)]
struct ExpectLead {
    email: Option<Email>,
    at: Option<DateTime<Utc>>,
    fields: Vec<(FieldName, Value)>,
    absent: Vec<FieldName>,
}

#[derive(Debug)]
struct ExpectEngagement {
    kind: EngagementKind,
    email: Option<Email>,
    at: Option<DateTime<Utc>>,
    detail: Vec<(String, String)>,
}

/// The received time tests use unless they say otherwise.
fn default_received_at() -> DateTime<Utc> {
    DateTime::from_timestamp(946_684_800, 0).unwrap_or_default()
}

/// The content type of a payload file, from its extension as `leadgate send` reads it:
/// `.json`; `.form`, `.txt`, `.urlencoded`; `.multipart` (boundary from the first line).
pub fn guess_content_type(path: &Path, body: &[u8]) -> Option<String> {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("") {
        "json" => Some("application/json".into()),
        "form" | "txt" | "urlencoded" => Some("application/x-www-form-urlencoded".into()),
        "multipart" => {
            let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
            let boundary = std::str::from_utf8(first)
                .ok()?
                .trim_end_matches('\r')
                .strip_prefix("--")
                .filter(|b| !b.is_empty())?
                .to_string();
            Some(format!("multipart/form-data; boundary={boundary}"))
        }
        _ => None,
    }
}

fn parse_time(v: &toml::Value) -> Result<DateTime<Utc>, String> {
    let s = match v {
        toml::Value::Datetime(d) => d.to_string(),
        toml::Value::String(s) => s.clone(),
        _ => return Err("an RFC 3339 time like 2026-11-20T12:00:00Z".into()),
    };
    DateTime::parse_from_rfc3339(&s)
        .map(|d| d.with_timezone(&Utc))
        .map_err(|_| "an RFC 3339 time like 2026-11-20T12:00:00Z".into())
}

fn parse_email(v: &toml::Value) -> Result<Email, String> {
    v.as_str()
        .ok_or_else(|| "an email address".to_string())
        .and_then(|s| Email::parse(s).map_err(|e| e.to_string()))
}

impl TestCase {
    pub fn parse(
        t: &toml::Table,
        key: &str,
        dir: &Path,
        limits: &Limits,
        errs: &mut Errors,
    ) -> Option<TestCase> {
        let before = errs.len();
        for k in t.keys() {
            if !KEYS.split(", ").any(|known| known == k) {
                errs.push(
                    format!("{key}.{k}"),
                    format!("unknown key; a test takes {KEYS}"),
                );
            }
        }
        let name = match t.get("name").and_then(toml::Value::as_str) {
            Some(n) if !n.trim().is_empty() => n.to_string(),
            _ => {
                errs.push(format!("{key}.name"), "missing: give the test a name");
                String::new()
            }
        };
        let value = Self::payload(t, key, dir, limits, errs);
        let received_at = match t.get("received_at") {
            None => default_received_at(),
            Some(v) => parse_time(v).unwrap_or_else(|e| {
                errs.push(format!("{key}.received_at"), e);
                default_received_at()
            }),
        };
        let leads = list_of_tables(t, "lead", key, errs)
            .into_iter()
            .enumerate()
            .filter_map(|(i, l)| ExpectLead::parse(l, &format!("{key}.lead[{i}]"), errs))
            .collect::<Vec<_>>();
        let engagements = list_of_tables(t, "engagement", key, errs)
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| {
                ExpectEngagement::parse(e, &format!("{key}.engagement[{i}]"), errs)
            })
            .collect::<Vec<_>>();
        let expect = match t.get("unmappable") {
            Some(toml::Value::String(reason)) => {
                if !leads.is_empty() || !engagements.is_empty() {
                    errs.push(key, "an unmappable test expects no lead or engagement");
                }
                Expect::Unmappable(reason.clone())
            }
            Some(_) => {
                errs.push(format!("{key}.unmappable"), "the expected reason, as text");
                Expect::Unmappable(String::new())
            }
            None => Expect::Mapped { leads, engagements },
        };
        match value {
            Some(value) if errs.len() == before => Some(TestCase {
                name,
                value,
                received_at,
                expect,
            }),
            _ => None,
        }
    }

    fn payload(
        t: &toml::Table,
        key: &str,
        dir: &Path,
        limits: &Limits,
        errs: &mut Errors,
    ) -> Option<Value> {
        let content_type = t.get("content_type").and_then(toml::Value::as_str);
        let given: Vec<&str> = ["payload", "json", "body"]
            .into_iter()
            .filter(|k| t.contains_key(*k))
            .collect();
        let (which, (bytes, ct)) = match given.as_slice() {
            [one] => {
                let k = format!("{key}.{one}");
                let Some(text) = t[*one].as_str() else {
                    errs.push(k, "must be a string");
                    return None;
                };
                let loaded = match *one {
                    "payload" => {
                        let path = dir.join(text);
                        match std::fs::read(&path) {
                            Ok(bytes) => {
                                let ct = content_type
                                    .map(String::from)
                                    .or_else(|| guess_content_type(&path, &bytes));
                                (bytes, ct)
                            }
                            Err(e) => {
                                errs.push(k, format!("cannot read {}: {e}", path.display()));
                                return None;
                            }
                        }
                    }
                    "json" => (
                        text.as_bytes().to_vec(),
                        Some(content_type.unwrap_or("application/json").to_string()),
                    ),
                    _ => (text.as_bytes().to_vec(), content_type.map(String::from)),
                };
                (k, loaded)
            }
            [] => {
                errs.push(key, "give the event as payload (a file), json or body");
                return None;
            }
            _ => {
                errs.push(key, "give only one of payload, json and body");
                return None;
            }
        };
        let Some(ct) = ct else {
            errs.push(
                format!("{key}.content_type"),
                "missing: say how the body is encoded (application/x-www-form-urlencoded, ...)",
            );
            return None;
        };
        match decode::decode(Some(&ct), &bytes, limits) {
            Ok(d) => Some(d.value),
            Err(e) => {
                errs.push(which, format!("does not decode as {ct}: {e}"));
                None
            }
        }
    }

    /// Maps the payload and compares; each mismatch is one line.
    pub fn run(&self, mapping: &Mapping, source: &str) -> Vec<String> {
        let result = mapping.map(source, &self.value, self.received_at);
        match (&self.expect, result) {
            (Expect::Unmappable(want), Err(f)) => {
                let got = format!("{}: {}", f.failure.key, f.failure.reason);
                if &got == want {
                    Vec::new()
                } else {
                    vec![format!(
                        "expected unmappable {want:?}, got unmappable {got:?}"
                    )]
                }
            }
            (Expect::Unmappable(want), Ok(m)) => vec![format!(
                "expected unmappable {want:?}, but it mapped to {} lead(s) and {} engagement(s)",
                m.leads.len(),
                m.engagements.len()
            )],
            (Expect::Mapped { .. }, Err(f)) => vec![format!(
                "unmappable: {}: {}",
                f.failure.key, f.failure.reason
            )],
            (Expect::Mapped { leads, engagements }, Ok(m)) => compare(leads, engagements, &m),
        }
    }
}

fn list_of_tables<'a>(
    t: &'a toml::Table,
    name: &str,
    key: &str,
    errs: &mut Errors,
) -> Vec<&'a toml::Table> {
    match t.get(name) {
        None => Vec::new(),
        Some(toml::Value::Array(list)) => list
            .iter()
            .enumerate()
            .filter_map(|(i, v)| {
                let tab = v.as_table();
                if tab.is_none() {
                    errs.push(
                        format!("{key}.{name}[{i}]"),
                        format!("write it as [[test.{name}]]"),
                    );
                }
                tab
            })
            .collect(),
        Some(_) => {
            errs.push(
                format!("{key}.{name}"),
                format!("write it as [[test.{name}]]"),
            );
            Vec::new()
        }
    }
}

impl ExpectLead {
    fn parse(t: &toml::Table, key: &str, errs: &mut Errors) -> Option<ExpectLead> {
        let before = errs.len();
        let mut out = ExpectLead::default();
        for (name, v) in flatten_custom(t) {
            let k = format!("{key}.{name}");
            match name.as_str() {
                "email" => out.email = parse_email(v).map_err(|e| errs.push(&k, e)).ok(),
                "at" => out.at = parse_time(v).map_err(|e| errs.push(&k, e)).ok(),
                "absent" => match v.as_array() {
                    Some(list) => {
                        for (i, f) in list.iter().enumerate() {
                            match f.as_str().map(FieldName::parse) {
                                Some(Ok(f)) => out.absent.push(f),
                                Some(Err(e)) => errs.push(format!("{k}[{i}]"), e),
                                None => errs.push(format!("{k}[{i}]"), "a field name"),
                            }
                        }
                    }
                    None => errs.push(k, "a list of field names"),
                },
                _ => match (FieldName::parse(&name), scalar(v)) {
                    (Ok(f), Some(val)) => out.fields.push((f, val)),
                    (Err(e), _) => errs.push(k, e),
                    (Ok(_), None) => {
                        errs.push(k, "the expected value: a string, number or boolean")
                    }
                },
            }
        }
        (errs.len() == before).then_some(out)
    }
}

impl ExpectEngagement {
    fn parse(t: &toml::Table, key: &str, errs: &mut Errors) -> Option<ExpectEngagement> {
        let before = errs.len();
        let mut kind = None;
        let mut email = None;
        let mut at = None;
        let mut detail = Vec::new();
        for (name, v) in t {
            let k = format!("{key}.{name}");
            match name.as_str() {
                "kind" => {
                    kind = v
                        .as_str()
                        .ok_or_else(|| "an engagement kind".to_string())
                        .and_then(EngagementKind::parse)
                        .map_err(|e| errs.push(&k, e))
                        .ok()
                }
                "email" => email = parse_email(v).map_err(|e| errs.push(&k, e)).ok(),
                "at" => at = parse_time(v).map_err(|e| errs.push(&k, e)).ok(),
                "detail" => match v.as_table() {
                    Some(d) => {
                        for (dk, dv) in d {
                            match dv.as_str() {
                                Some(s) => detail.push((dk.clone(), s.to_string())),
                                None => errs.push(format!("{k}.{dk}"), "details are text"),
                            }
                        }
                    }
                    None => errs.push(k, "a table of detail = \"text\""),
                },
                _ => errs.push(
                    k,
                    "unknown key; an expected engagement takes kind, email, at, detail",
                ),
            }
        }
        if kind.is_none() && errs.len() == before {
            errs.push(format!("{key}.kind"), "missing: the expected kind");
        }
        match kind {
            Some(kind) if errs.len() == before => Some(ExpectEngagement {
                kind,
                email,
                at,
                detail,
            }),
            _ => None,
        }
    }
}

fn show(v: &Value) -> String {
    v.to_string()
}

fn same_value(got: &Value, want: &Value) -> bool {
    match (got, want) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        _ => got == want,
    }
}

fn compare(leads: &[ExpectLead], engagements: &[ExpectEngagement], m: &Mapped) -> Vec<String> {
    let mut out = Vec::new();
    if leads.len() != m.leads.len() {
        out.push(format!(
            "expected {} lead(s), got {}",
            leads.len(),
            m.leads.len()
        ));
    }
    for (i, (want, got)) in leads.iter().zip(&m.leads).enumerate() {
        if let Some(e) = &want.email {
            if e != &got.email {
                out.push(format!(
                    "lead[{i}].email: expected {:?}, got {:?}",
                    e.as_str(),
                    got.email.as_str()
                ));
            }
        }
        if let Some(at) = want.at {
            if at != got.at {
                out.push(format!(
                    "lead[{i}].at: expected {}, got {}",
                    format_datetime(at),
                    format_datetime(got.at)
                ));
            }
        }
        for (f, v) in &want.fields {
            match got.fields.get(f) {
                Some(g) if same_value(g, v) => {}
                Some(g) => out.push(format!(
                    "lead[{i}].{f}: expected {}, got {}",
                    show(v),
                    show(g)
                )),
                None => out.push(format!("lead[{i}].{f}: expected {}, got nothing", show(v))),
            }
        }
        for f in &want.absent {
            if let Some(g) = got.fields.get(f) {
                out.push(format!("lead[{i}].{f}: expected absent, got {}", show(g)));
            }
        }
    }
    if engagements.len() != m.engagements.len() {
        out.push(format!(
            "expected {} engagement(s), got {}",
            engagements.len(),
            m.engagements.len()
        ));
    }
    for (i, (want, got)) in engagements.iter().zip(&m.engagements).enumerate() {
        if want.kind != got.kind {
            out.push(format!(
                "engagement[{i}].kind: expected {}, got {}",
                want.kind.as_str(),
                got.kind.as_str()
            ));
        }
        if let Some(e) = &want.email {
            if e != &got.email {
                out.push(format!(
                    "engagement[{i}].email: expected {:?}, got {:?}",
                    e.as_str(),
                    got.email.as_str()
                ));
            }
        }
        if let Some(at) = want.at {
            if at != got.at {
                out.push(format!(
                    "engagement[{i}].at: expected {}, got {}",
                    format_datetime(at),
                    format_datetime(got.at)
                ));
            }
        }
        for (k, v) in &want.detail {
            match got.detail.get(k) {
                Some(g) if g == v => {}
                Some(g) => out.push(format!(
                    "engagement[{i}].detail.{k}: expected {v:?}, got {g:?}"
                )),
                None => out.push(format!(
                    "engagement[{i}].detail.{k}: expected {v:?}, got nothing"
                )),
            }
        }
    }
    out
}
