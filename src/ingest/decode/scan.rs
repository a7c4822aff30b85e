//! The ingest path's JSON check: one pass over the bytes that proves the body is valid JSON, not
//! nested deeper than the limit, and picks out the provider's event id — without building the
//! value. JSON bodies are stored as they arrived, so ingest never needs the value itself; building
//! it (allocating every object and string, then dropping it) was the largest cost of a webhook.
//!
//! The event id is found by a *plain* path: `$` followed by member names and array indices
//! (`$.event_id`, `$.payload.uri`, `$['a b'][0].id`), which covers every provider's id. Any other
//! RFC 9535 query falls back to building the value and running the full JSONPath.

use std::fmt;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::Value;
use serde_json_path::JsonPath;

/// One step of a plain path.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Name(String),
    Index(usize),
}

/// A JSONPath made only of member names and array indices.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PlainPath(Vec<Step>);

impl PlainPath {
    /// Recognises `$` then any of `.name`, `['name']`, `["name"]`, `[n]`; None for anything else
    /// (wildcards, filters, slices, descendants, escapes), which the general JSONPath handles.
    pub fn parse(s: &str) -> Option<PlainPath> {
        let mut rest = s.strip_prefix('$')?;
        let mut steps = Vec::new();
        while !rest.is_empty() {
            if let Some(r) = rest.strip_prefix('.') {
                let end = r.find(['.', '[']).unwrap_or(r.len());
                let name = &r[..end];
                // RFC 9535 member-name-shorthand: a letter or `_` (or non-ASCII), then also digits.
                let ok = !name.is_empty()
                    && !name.starts_with(|c: char| c.is_ascii_digit())
                    && name.chars().all(|c| c.is_alphanumeric() || c == '_');
                if !ok {
                    return None;
                }
                steps.push(Step::Name(name.to_string()));
                rest = &r[end..];
            } else if let Some(r) = rest.strip_prefix('[') {
                let close = r.find(']')?;
                let inner = &r[..close];
                let quoted = |q: char| {
                    inner
                        .strip_prefix(q)
                        .and_then(|x| x.strip_suffix(q))
                        .filter(|x| !x.contains(['\\', '\'', '"']))
                };
                if let Some(name) = quoted('\'').or_else(|| quoted('"')) {
                    steps.push(Step::Name(name.to_string()));
                } else if !inner.is_empty()
                    && inner.bytes().all(|b| b.is_ascii_digit())
                    && (inner == "0" || !inner.starts_with('0'))
                {
                    steps.push(Step::Index(inner.parse().ok()?));
                } else {
                    return None;
                }
                rest = &r[close + 1..];
            } else {
                return None;
            }
        }
        Some(PlainPath(steps))
    }

    /// The scalar at this path in an already built value (form and multipart bodies).
    pub fn find(&self, value: &Value) -> Option<String> {
        let mut v = value;
        for step in &self.0 {
            v = match step {
                Step::Name(n) => v.get(n.as_str())?,
                Step::Index(i) => v.get(*i)?,
            };
        }
        scalar(v)
    }
}

fn scalar(v: &Value) -> Option<String> {
    match v {
        Value::String(s) if !s.is_empty() => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Where a source's event id is: a plain path (fast) or any RFC 9535 query.
#[derive(Debug, Clone)]
pub enum EventIdPath {
    Plain(PlainPath),
    General(JsonPath),
}

impl EventIdPath {
    /// Parses a JSONPath; every path is validated as RFC 9535 first.
    pub fn parse(s: &str) -> Result<EventIdPath, serde_json_path::ParseError> {
        let general = JsonPath::parse(s)?;
        Ok(match PlainPath::parse(s) {
            Some(p) => EventIdPath::Plain(p),
            None => EventIdPath::General(general),
        })
    }

    /// The first string or number the path selects in a built value.
    pub fn find(&self, value: &Value) -> Option<String> {
        match self {
            EventIdPath::Plain(p) => p.find(value),
            EventIdPath::General(q) => q.query(value).first().and_then(scalar),
        }
    }
}

/// Why a scan failed: the JSON error, or the nesting limit.
pub(super) enum ScanError {
    Json(serde_json::Error),
    TooDeep,
}

/// Validates `body` as JSON nested at most `max_depth` levels and returns the scalar at `path`.
pub(super) fn scan(
    body: &[u8],
    max_depth: usize,
    path: Option<&PlainPath>,
) -> Result<Option<String>, ScanError> {
    let mut found = Found::default();
    let mut de = serde_json::Deserializer::from_slice(body);
    let seed = Node {
        budget: max_depth,
        path: path.map(|p| p.0.as_slice()),
        found: &mut found,
    };
    match seed.deserialize(&mut de).and_then(|()| de.end()) {
        Ok(()) => Ok(found.id),
        Err(_) if found.too_deep => Err(ScanError::TooDeep),
        Err(e) => Err(ScanError::Json(e)),
    }
}

/// What the scan learnt.
#[derive(Default)]
struct Found {
    id: Option<String>,
    /// The nesting limit stopped the scan (reported as such, not as a JSON error).
    too_deep: bool,
}

/// One JSON value: checked for depth; captured when the remaining path is empty.
struct Node<'p, 'f> {
    /// Containers still allowed below this point.
    budget: usize,
    /// The rest of the id path, if this node lies on it.
    path: Option<&'p [Step]>,
    found: &'f mut Found,
}

impl<'de> DeserializeSeed<'de> for Node<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        self.capture(|| v.to_string());
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        self.capture(|| v.to_string());
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.capture(|| {
            serde_json::Number::from_f64(v)
                .map(|n| n.to_string())
                .unwrap_or_default()
        });
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        if !v.is_empty() {
            self.capture(|| v.to_string());
        }
        Ok(())
    }

    fn visit_map<A: MapAccess<'de>>(mut self, mut map: A) -> Result<(), A::Error> {
        let budget = self.descend()?;
        let want = match self.path {
            Some([Step::Name(n), rest @ ..]) => Some((n.as_str(), rest)),
            _ => None,
        };
        let found = self.found;
        while let Some(key) = map.next_key::<Key>()? {
            let path = match want {
                Some((n, rest)) if key.0 == n => Some(rest),
                _ => None,
            };
            map.next_value_seed(Node {
                budget,
                path,
                found: &mut *found,
            })?;
        }
        Ok(())
    }

    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        let budget = self.descend()?;
        let want = match self.path {
            Some([Step::Index(i), rest @ ..]) => Some((*i, rest)),
            _ => None,
        };
        let found = self.found;
        let mut i = 0;
        loop {
            let path = match want {
                Some((at, rest)) if at == i => Some(rest),
                _ => None,
            };
            let node = Node {
                budget,
                path,
                found: &mut *found,
            };
            if seq.next_element_seed(node)?.is_none() {
                break;
            }
            i += 1;
        }
        Ok(())
    }
}

impl Node<'_, '_> {
    /// Keeps the first scalar found at the end of the path.
    fn capture(self, v: impl FnOnce() -> String) {
        if matches!(self.path, Some([])) && self.found.id.is_none() {
            self.found.id = Some(v());
        }
    }

    /// The budget for this container's children, or an error past the nesting limit.
    fn descend<E: de::Error>(&mut self) -> Result<usize, E> {
        match self.budget.checked_sub(1) {
            Some(b) => Ok(b),
            None => {
                self.found.too_deep = true;
                Err(E::custom("nested too deep"))
            }
        }
    }
}

/// A member name, borrowed from the input when it has no escapes.
struct Key<'a>(std::borrow::Cow<'a, str>);

impl<'de> de::Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a member name")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Key<'de>, E> {
                Ok(Key(std::borrow::Cow::Owned(v.to_string())))
            }
        }
        d.deserialize_str(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn id(body: &str, path: &str) -> Option<String> {
        let p = PlainPath::parse(path).expect("plain path");
        match scan(body.as_bytes(), 64, Some(&p)) {
            Ok(v) => v,
            Err(_) => panic!("valid JSON"),
        }
    }

    #[test]
    fn plain_paths_are_recognised_and_others_left_to_jsonpath() {
        for p in [
            "$",
            "$.event_id",
            "$.payload.uri",
            "$['a b'][0].id",
            "$[\"x\"][10]",
            "$.entry[0].changes[0].value.leadgen_id",
        ] {
            assert!(PlainPath::parse(p).is_some(), "{p}");
        }
        for p in [
            "$..id",
            "$.a[*]",
            "$.a[?@.b]",
            "$.a[0:2]",
            "$.a[-1]",
            "$['a\\'b']",
            "$.a-b",
            "$.0a",
            "$[01]",
            "event_id",
            "$.a.",
        ] {
            assert!(PlainPath::parse(p).is_none(), "{p}");
        }
    }

    #[test]
    fn the_scan_finds_what_the_full_jsonpath_finds() {
        let body = r#"{"event_id":"01HZ","payload":{"uri":"https://x/1","n":[1,{"id":42}]},"a b":[{"id":"z"}],"s":"","entry":[{"changes":[{"value":{"leadgen_id":7.5}}]}]}"#;
        let value: Value = serde_json::from_str(body).unwrap();
        for p in [
            "$.event_id",
            "$.payload.uri",
            "$.payload.n[1].id",
            "$['a b'][0].id",
            "$.entry[0].changes[0].value.leadgen_id",
            "$.s",
            "$.missing",
            "$.payload",
            "$.payload.n[5]",
        ] {
            let general = EventIdPath::General(JsonPath::parse(p).unwrap()).find(&value);
            assert_eq!(id(body, p), general, "{p}");
            assert_eq!(PlainPath::parse(p).unwrap().find(&value), general, "{p}");
        }
        assert_eq!(id(body, "$.event_id").as_deref(), Some("01HZ"));
        assert_eq!(id(body, "$.payload.n[1].id").as_deref(), Some("42"));
    }

    #[test]
    fn escaped_member_names_still_match() {
        assert_eq!(
            id(r#"{"ev\u0065nt_id":"x"}"#, "$.event_id").as_deref(),
            Some("x")
        );
    }

    #[test]
    fn invalid_json_and_excess_nesting_are_refused_without_building_anything() {
        assert!(matches!(
            scan(b"{\"a\": ", 64, None),
            Err(ScanError::Json(_))
        ));
        assert!(matches!(scan(b"{} {}", 64, None), Err(ScanError::Json(_))));
        let deep = format!("{}{}", "[".repeat(5), "]".repeat(5));
        assert!(scan(deep.as_bytes(), 5, None).is_ok());
        assert!(matches!(
            scan(deep.as_bytes(), 4, None),
            Err(ScanError::TooDeep)
        ));
        let v = json!({"a": {"b": {"c": 1}}}).to_string();
        assert!(scan(v.as_bytes(), 3, None).is_ok());
        assert!(matches!(
            scan(v.as_bytes(), 2, None),
            Err(ScanError::TooDeep)
        ));
    }
}
