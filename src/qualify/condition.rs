//! Structured conditions on a lead, written as TOML tables:
//!
//! ```toml
//! { field = "job_title", matches = "(?i)\\bvp\\b" }
//! { field = "country", in = ["US", "CA"] }
//! { field = "company_size_min", range = { min = 51, max = 200 } }
//! { field = "custom.need", exists = true }
//! { field = "consent", equals = true }
//! { email = "free_mail" }              # free_mail | disposable | role | competitor | reserved
//! { all = [ ... ] }  { any = [ ... ] }  { not = { ... } }
//! ```
//!
//! Structured tables rather than an expression language: every key is checked by serde, field
//! names by [`FieldName`], regexes are compiled once here, and `leadgate check` can point at the
//! exact key that is wrong. Evaluation never parses anything.

use std::collections::BTreeMap;

use regex::Regex;
use serde::Deserialize;
use serde_json::Value;

use super::disqualify::{EmailClass, EmailClasses};
use super::rules::Errors;
use super::state::FieldValue;
use crate::lead::{Email, FieldName};

/// A condition as written in the file; [`build`] turns it into a [`Condition`].
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCondition {
    field: Option<String>,
    equals: Option<toml::Value>,
    #[serde(rename = "in")]
    in_list: Option<Vec<toml::Value>>,
    matches: Option<String>,
    range: Option<RawRange>,
    exists: Option<bool>,
    email: Option<String>,
    all: Option<Vec<RawCondition>>,
    any: Option<Vec<RawCondition>>,
    not: Option<Box<RawCondition>>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRange {
    min: Option<f64>,
    max: Option<f64>,
}

/// A parsed condition: field names resolved, regexes compiled, literals normalised.
#[derive(Debug, Clone)]
pub enum Condition {
    Field { field: FieldName, test: FieldTest },
    Email(EmailClass),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

/// What a field-condition checks about the field's (non-empty) value.
#[derive(Debug, Clone)]
pub enum FieldTest {
    Equals(Scalar),
    In(Vec<Scalar>),
    Matches(Regex),
    /// Inclusive bounds; at least one is set.
    Range {
        min: Option<f64>,
        max: Option<f64>,
    },
    Exists(bool),
}

/// A literal from the rules file. Text is kept trimmed and lower-cased: `equals`/`in` compare
/// text case-insensitively, because form tools and CRMs disagree about capitalisation.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar {
    Text(String),
    Number(f64),
    Bool(bool),
}

/// What a condition looks at: the lead's email and merged fields.
pub(crate) struct Lead<'a> {
    pub email: &'a Email,
    pub fields: &'a BTreeMap<FieldName, FieldValue>,
    pub classes: EmailClasses,
}

impl Lead<'_> {
    /// The field's value, if present and non-empty.
    fn value(&self, f: &FieldName) -> Option<&Value> {
        self.fields
            .get(f)
            .map(|v| &v.value)
            .filter(|v| !is_empty_value(v))
    }
}

/// `null`, `""` and whitespace-only strings carry no information: they never overwrite a value
/// and never satisfy `exists`.
pub(crate) fn is_empty_value(v: &Value) -> bool {
    match v {
        Value::Null => true,
        Value::String(s) => s.trim().is_empty(),
        _ => false,
    }
}

impl Condition {
    pub(crate) fn holds(&self, lead: &Lead<'_>) -> bool {
        match self {
            Condition::Field { field, test } => test.holds(lead.value(field)),
            Condition::Email(class) => lead.classes.has(*class),
            Condition::All(cs) => cs.iter().all(|c| c.holds(lead)),
            Condition::Any(cs) => cs.iter().any(|c| c.holds(lead)),
            Condition::Not(c) => !c.holds(lead),
        }
    }
}

impl FieldTest {
    fn holds(&self, v: Option<&Value>) -> bool {
        match (self, v) {
            (FieldTest::Exists(want), v) => v.is_some() == *want,
            (_, None) => false,
            (FieldTest::Equals(s), Some(v)) => s.matches(v),
            (FieldTest::In(list), Some(v)) => list.iter().any(|s| s.matches(v)),
            (FieldTest::Matches(re), Some(v)) => as_text(v).is_some_and(|t| re.is_match(t.trim())),
            (FieldTest::Range { min, max }, Some(v)) => as_number(v)
                .is_some_and(|n| min.is_none_or(|m| n >= m) && max.is_none_or(|m| n <= m)),
        }
    }
}

impl Scalar {
    fn matches(&self, v: &Value) -> bool {
        match self {
            Scalar::Text(t) => as_text(v).is_some_and(|s| s.trim().to_lowercase() == *t),
            Scalar::Number(n) => as_number(v).is_some_and(|x| x == *n),
            Scalar::Bool(b) => match v {
                Value::Bool(x) => x == b,
                Value::String(s) => {
                    s.trim()
                        .eq_ignore_ascii_case(if *b { "true" } else { "false" })
                }
                _ => false,
            },
        }
    }
}

/// A scalar value as text (numbers and booleans in their JSON spelling).
fn as_text(v: &Value) -> Option<std::borrow::Cow<'_, str>> {
    match v {
        Value::String(s) => Some(s.as_str().into()),
        Value::Number(n) => Some(n.to_string().into()),
        Value::Bool(b) => Some(b.to_string().into()),
        _ => None,
    }
}

/// A number, or a string holding one (thousands separators `,` and spaces are ignored, so a form's
/// "1,000" counts).
fn as_number(v: &Value) -> Option<f64> {
    match v {
        Value::Number(n) => n.as_f64(),
        Value::String(s) => {
            let cleaned: String = s
                .chars()
                .filter(|c| *c != ',' && !c.is_whitespace())
                .collect();
            cleaned.parse::<f64>().ok().filter(|n| n.is_finite())
        }
        _ => None,
    }
}

/// Parses a condition; problems are pushed to `errs` under `key` and `None` is returned.
pub(crate) fn build(raw: &RawCondition, key: &str, errs: &mut Errors) -> Option<Condition> {
    let field_ops = [
        raw.equals.is_some(),
        raw.in_list.is_some(),
        raw.matches.is_some(),
        raw.range.is_some(),
        raw.exists.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    let kinds = [
        raw.field.is_some() || field_ops > 0,
        raw.email.is_some(),
        raw.all.is_some(),
        raw.any.is_some(),
        raw.not.is_some(),
    ]
    .iter()
    .filter(|b| **b)
    .count();
    if kinds != 1 {
        errs.push(
            key,
            "a condition needs exactly one of: field (with equals, in, matches, range or exists), \
             email, all, any, not",
        );
        return None;
    }
    if let Some(list) = &raw.all {
        return build_list(list, &format!("{key}.all"), errs).map(Condition::All);
    }
    if let Some(list) = &raw.any {
        return build_list(list, &format!("{key}.any"), errs).map(Condition::Any);
    }
    if let Some(inner) = &raw.not {
        return build(inner, &format!("{key}.not"), errs).map(|c| Condition::Not(Box::new(c)));
    }
    if let Some(class) = &raw.email {
        return match EmailClass::parse(class) {
            Ok(c) => Some(Condition::Email(c)),
            Err(reason) => {
                errs.push(format!("{key}.email"), reason);
                None
            }
        };
    }
    let Some(name) = &raw.field else {
        errs.push(
            format!("{key}.field"),
            "a field test needs `field = \"<name>\"`",
        );
        return None;
    };
    let field = match FieldName::parse(name) {
        Ok(f) => Some(f),
        Err(reason) => {
            errs.push(format!("{key}.field"), reason);
            None
        }
    };
    if field_ops != 1 {
        errs.push(
            key,
            "a field test needs exactly one of: equals, in, matches, range, exists",
        );
        return None;
    }
    let test = if let Some(v) = &raw.equals {
        scalar(v, &format!("{key}.equals"), errs).map(FieldTest::Equals)
    } else if let Some(list) = &raw.in_list {
        if list.is_empty() {
            errs.push(
                format!("{key}.in"),
                "the list is empty, so it can never match",
            );
            None
        } else {
            let items: Vec<Option<Scalar>> = list
                .iter()
                .enumerate()
                .map(|(i, v)| scalar(v, &format!("{key}.in[{i}]"), errs))
                .collect();
            items
                .into_iter()
                .collect::<Option<Vec<_>>>()
                .map(FieldTest::In)
        }
    } else if let Some(pattern) = &raw.matches {
        match Regex::new(pattern) {
            Ok(re) => Some(FieldTest::Matches(re)),
            Err(e) => {
                errs.push(format!("{key}.matches"), regex_reason(&e));
                None
            }
        }
    } else if let Some(r) = &raw.range {
        range(r, &format!("{key}.range"), errs)
    } else {
        raw.exists.map(FieldTest::Exists)
    };
    Some(Condition::Field {
        field: field?,
        test: test?,
    })
}

fn build_list(list: &[RawCondition], key: &str, errs: &mut Errors) -> Option<Vec<Condition>> {
    if list.is_empty() {
        errs.push(key, "the list is empty; write at least one condition");
        return None;
    }
    let built: Vec<Option<Condition>> = list
        .iter()
        .enumerate()
        .map(|(i, c)| build(c, &format!("{key}[{i}]"), errs))
        .collect();
    built.into_iter().collect()
}

fn range(r: &RawRange, key: &str, errs: &mut Errors) -> Option<FieldTest> {
    match (r.min, r.max) {
        (None, None) => {
            errs.push(key, "a range needs min, max or both");
            None
        }
        (Some(lo), Some(hi)) if lo > hi => {
            errs.push(
                key,
                format!("thresholds out of order: min {lo} is greater than max {hi}"),
            );
            None
        }
        (min, max)
            if min.is_some_and(|v| !v.is_finite()) || max.is_some_and(|v| !v.is_finite()) =>
        {
            errs.push(key, "bounds must be finite numbers");
            None
        }
        (min, max) => Some(FieldTest::Range { min, max }),
    }
}

fn scalar(v: &toml::Value, key: &str, errs: &mut Errors) -> Option<Scalar> {
    match v {
        toml::Value::String(s) => Some(Scalar::Text(s.trim().to_lowercase())),
        toml::Value::Integer(i) => Some(Scalar::Number(*i as f64)),
        toml::Value::Float(f) if f.is_finite() => Some(Scalar::Number(*f)),
        toml::Value::Boolean(b) => Some(Scalar::Bool(*b)),
        other => {
            errs.push(
                key,
                format!(
                    "expected a string, number or boolean, found {}",
                    other.type_str()
                ),
            );
            None
        }
    }
}

/// The regex crate's message is a multi-line picture; the last line says what is wrong.
fn regex_reason(e: &regex::Error) -> String {
    let text = e.to_string();
    let why = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error:"))
        .map(str::trim)
        .unwrap_or(text.trim());
    format!("bad regex: {why}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{DateTime, Utc};
    use serde_json::json;

    fn raw(text: &str) -> RawCondition {
        let t: toml::Table = format!("c = {text}").parse().unwrap();
        t["c"].clone().try_into().unwrap()
    }

    fn parse(text: &str) -> Result<Condition, Vec<super::super::rules::RulesError>> {
        let mut errs = Errors::new("t.toml");
        let c = build(&raw(text), "when", &mut errs);
        errs.finish(c.unwrap_or(Condition::All(vec![])))
    }

    fn lead_with(fields: &[(&str, Value)], f: impl FnOnce(&Lead<'_>)) {
        let email = Email::parse("pat@acme-corp.io").unwrap();
        let at = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        let map = fields
            .iter()
            .map(|(k, v)| {
                (
                    FieldName::parse(k).unwrap(),
                    FieldValue {
                        value: v.clone(),
                        at,
                        source: "t".into(),
                    },
                )
            })
            .collect();
        let lead = Lead {
            email: &email,
            fields: &map,
            classes: EmailClasses::default(),
        };
        f(&lead)
    }

    #[test]
    fn field_tests_compare_the_way_the_docs_say() {
        let cases: &[(&str, Value, bool)] = &[
            (
                r#"{ field = "country", equals = "us" }"#,
                json!(" US "),
                true,
            ),
            (
                r#"{ field = "country", in = ["CA", "GB"] }"#,
                json!("gb"),
                true,
            ),
            (
                r#"{ field = "country", in = ["CA", "GB"] }"#,
                json!("US"),
                false,
            ),
            (
                r#"{ field = "job_title", matches = "(?i)\\bvp\\b" }"#,
                json!("VP Sales"),
                true,
            ),
            (
                r#"{ field = "job_title", matches = "\\bvp\\b" }"#,
                json!("VP Sales"),
                false,
            ),
            (
                r#"{ field = "company_size_min", range = { min = 51, max = 200 } }"#,
                json!(51),
                true,
            ),
            (
                r#"{ field = "company_size_min", range = { min = 51, max = 200 } }"#,
                json!("1,000"),
                false,
            ),
            (
                r#"{ field = "company_size_min", range = { min = 201 } }"#,
                json!("1,000"),
                true,
            ),
            (
                r#"{ field = "company_size_min", range = { max = 10 } }"#,
                json!("ten"),
                false,
            ),
            (
                r#"{ field = "consent", equals = true }"#,
                json!("TRUE"),
                true,
            ),
            (
                r#"{ field = "company_size_min", equals = 50 }"#,
                json!(50.0),
                true,
            ),
            (
                r#"{ field = "custom.need", exists = true }"#,
                json!("  "),
                false,
            ),
            (
                r#"{ field = "custom.need", exists = false }"#,
                json!(""),
                true,
            ),
            (
                r#"{ not = { field = "country", equals = "US" } }"#,
                json!("US"),
                false,
            ),
        ];
        for (text, value, want) in cases {
            let c = parse(text).unwrap();
            let field = raw(text).field.unwrap_or_else(|| "country".into());
            lead_with(&[(field.as_str(), value.clone())], |lead| {
                assert_eq!(c.holds(lead), *want, "{text} on {value}");
            });
        }
    }

    #[test]
    fn all_and_any_nest() {
        let c = parse(
            r#"{ all = [ { field = "country", equals = "US" },
                         { any = [ { field = "industry", equals = "saas" },
                                   { field = "company_size_min", range = { min = 100 } } ] } ] }"#,
        )
        .unwrap();
        lead_with(
            &[("country", json!("US")), ("company_size_min", json!(150))],
            |l| assert!(c.holds(l)),
        );
        lead_with(
            &[("country", json!("US")), ("company_size_min", json!(50))],
            |l| assert!(!c.holds(l)),
        );
        lead_with(
            &[("country", json!("DE")), ("industry", json!("SaaS"))],
            |l| assert!(!c.holds(l)),
        );
    }

    #[test]
    fn mistakes_are_reported_with_their_key() {
        let cases: &[(&str, &str, &str)] = &[
            (
                r#"{ field = "jobtitle", exists = true }"#,
                "when.field",
                "unknown field \"jobtitle\"",
            ),
            (
                r#"{ field = "job_title", matches = "(unclosed" }"#,
                "when.matches",
                "bad regex: unclosed group",
            ),
            (
                r#"{ field = "x.y", range = { min = 5, max = 1 } }"#,
                "when.field",
                "unknown field",
            ),
            (
                r#"{ field = "company_size_min", range = { min = 5, max = 1 } }"#,
                "when.range",
                "min 5 is greater than max 1",
            ),
            (r#"{ field = "country", in = [] }"#, "when.in", "empty"),
            (r#"{ field = "country" }"#, "when", "exactly one of: equals"),
            (
                r#"{ field = "country", equals = "US", exists = true }"#,
                "when",
                "exactly one of",
            ),
            (r#"{ email = "gmail" }"#, "when.email", "free_mail"),
            (r#"{ any = [] }"#, "when.any", "empty"),
            (
                r#"{ all = [ { field = "country", equals = [1] } ] }"#,
                "when.all[0].equals",
                "found array",
            ),
        ];
        for (text, key, reason) in cases {
            let errs = parse(text).unwrap_err();
            assert!(
                errs.iter()
                    .any(|e| e.key == *key && e.reason.contains(reason)),
                "{text}: {errs:?}"
            );
        }
    }
}
