//! `when` conditions: which outputs an event (or one item of it) produces.
//!
//! ```toml
//! when = { select = "@.event", equals = "click" }
//! when = { select = "@.event", one_of = ["bounce", "dropped"] }
//! when = { select = "$.data.merges.COMPANY", exists = true }
//! when = { select = "@.msg.subject", matches = "(?i)webinar" }
//! when = { all = [ {...}, {...} ] }    # also `any = [...]` and `not = {...}`
//! ```
//! A test holds when any node the selector matches passes it (a list node: any element).

use regex::Regex;
use serde_json::Value;

use super::selector::{is_empty, Scope, Selector};
use super::transform::{scalar, text};

#[derive(Debug, Clone)]
pub(crate) enum Condition {
    OneOf(Selector, Vec<Value>),
    Exists(Selector, bool),
    Matches(Selector, Regex),
    All(Vec<Condition>),
    Any(Vec<Condition>),
    Not(Box<Condition>),
}

const TESTS: &str = "equals, one_of, exists or matches";

impl Condition {
    pub fn parse(v: &toml::Value) -> Result<Condition, String> {
        let t = v.as_table().ok_or_else(|| {
            "a condition is a table like { select = \"@.event\", equals = \"click\" }".to_string()
        })?;
        let keys: Vec<&str> = t.keys().map(String::as_str).collect();
        match keys.as_slice() {
            ["all"] | ["any"] => {
                let name = keys[0];
                let list = t[name]
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or_else(|| format!("{name} takes a non-empty list of conditions"))?;
                let parsed = list
                    .iter()
                    .enumerate()
                    .map(|(i, c)| Condition::parse(c).map_err(|e| format!("{name}[{i}]: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(if name == "all" {
                    Condition::All(parsed)
                } else {
                    Condition::Any(parsed)
                })
            }
            ["not"] => Ok(Condition::Not(Box::new(
                Condition::parse(&t["not"]).map_err(|e| format!("not: {e}"))?,
            ))),
            _ => Self::parse_test(t),
        }
    }

    fn parse_test(t: &toml::Table) -> Result<Condition, String> {
        let select = t
            .get("select")
            .ok_or_else(|| {
                format!("a condition needs select and one of {TESTS} (or all, any, not)")
            })?
            .as_str()
            .ok_or("select is a JSONPath string")?;
        let selector = Selector::parse(select)?;
        let mut tests = t.iter().filter(|(k, _)| k.as_str() != "select");
        let (name, arg) = match (tests.next(), tests.next()) {
            (Some(one), None) => one,
            (None, _) => return Err(format!("a condition needs one of {TESTS} besides select")),
            (Some(_), Some(_)) => return Err(format!("a condition takes only one of {TESTS}")),
        };
        let scalar_of = |v: &toml::Value| {
            scalar(v).ok_or_else(|| format!("{name} compares with a string, number or boolean"))
        };
        Ok(match name.as_str() {
            "equals" => Condition::OneOf(selector, vec![scalar_of(arg)?]),
            "one_of" => {
                let list = arg
                    .as_array()
                    .filter(|a| !a.is_empty())
                    .ok_or("one_of takes a non-empty list")?;
                Condition::OneOf(
                    selector,
                    list.iter().map(scalar_of).collect::<Result<_, _>>()?,
                )
            }
            "exists" => {
                Condition::Exists(selector, arg.as_bool().ok_or("exists is true or false")?)
            }
            "matches" => {
                let re = arg.as_str().ok_or("matches takes a regex string")?;
                Condition::Matches(
                    selector,
                    Regex::new(re).map_err(|e| format!("{re:?} is not a valid regex: {e}"))?,
                )
            }
            other => {
                return Err(format!(
                    "unknown condition key {other:?}; expected {TESTS}, or all, any, not"
                ))
            }
        })
    }

    pub fn holds(&self, scope: Scope<'_>) -> bool {
        match self {
            Condition::OneOf(sel, wanted) => {
                any_scalar(sel, scope, |v| wanted.iter().any(|w| same(v, w)))
            }
            Condition::Exists(sel, want) => sel.first(scope).is_some() == *want,
            Condition::Matches(sel, re) => any_scalar(sel, scope, |v| {
                text(v).ok().flatten().is_some_and(|s| re.is_match(&s))
            }),
            Condition::All(cs) => cs.iter().all(|c| c.holds(scope)),
            Condition::Any(cs) => cs.iter().any(|c| c.holds(scope)),
            Condition::Not(c) => !c.holds(scope),
        }
    }
}

/// Whether `test` passes for any matched node, looking into lists.
fn any_scalar(sel: &Selector, scope: Scope<'_>, test: impl Fn(&Value) -> bool) -> bool {
    sel.query(scope).into_iter().any(|v| match v {
        Value::Array(items) => items.iter().any(&test),
        other => !is_empty(other) && test(other),
    })
}

/// Equal as JSON, or as text when one side is a string ("5" equals 5; forms send text).
fn same(found: &Value, wanted: &Value) -> bool {
    match (found, wanted) {
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) if a == b => true,
        (Value::String(_), _) | (_, Value::String(_)) => {
            matches!((text(found), text(wanted)), (Ok(Some(a)), Ok(Some(b))) if a == b)
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn cond(src: &str) -> Result<Condition, String> {
        let doc: toml::Table = format!("when = {src}").parse().unwrap();
        Condition::parse(&doc["when"])
    }

    fn holds(src: &str, v: &Value) -> bool {
        cond(src).unwrap().holds(Scope::new(v))
    }

    #[test]
    fn equals_and_one_of_compare_values_and_their_text() {
        let ev = json!({"event": "click", "attempt": "2", "tags": ["trial", "webinar"]});
        assert!(holds("{ select = \"@.event\", equals = \"click\" }", &ev));
        assert!(!holds("{ select = \"@.event\", equals = \"open\" }", &ev));
        assert!(holds(
            "{ select = \"@.event\", one_of = [\"open\", \"click\"] }",
            &ev
        ));
        assert!(holds("{ select = \"$.attempt\", equals = 2 }", &ev));
        assert!(holds("{ select = \"$.tags\", equals = \"webinar\" }", &ev));
        assert!(!holds("{ select = \"$.missing\", equals = \"x\" }", &ev));
    }

    #[test]
    fn exists_matches_and_combinators() {
        let ev = json!({"event": "bounce", "reason": "550 mailbox full", "empty": ""});
        assert!(holds("{ select = \"$.reason\", exists = true }", &ev));
        assert!(holds("{ select = \"$.empty\", exists = false }", &ev));
        assert!(holds(
            "{ select = \"$.reason\", matches = \"^5\\\\d\\\\d\" }",
            &ev
        ));
        assert!(holds(
            "{ all = [ { select = \"$.event\", equals = \"bounce\" }, { not = { select = \"$.reason\", matches = \"(?i)spam\" } } ] }",
            &ev
        ));
        assert!(holds(
            "{ any = [ { select = \"$.event\", equals = \"open\" }, { select = \"$.event\", equals = \"bounce\" } ] }",
            &ev
        ));
    }

    #[test]
    fn relative_selectors_see_the_item() {
        let root = json!([{"event": "open"}, {"event": "click"}]);
        let c = cond("{ select = \"@.event\", equals = \"click\" }").unwrap();
        let scope = Scope::new(&root);
        assert!(!c.holds(scope.with_item(&root[0])));
        assert!(c.holds(scope.with_item(&root[1])));
    }

    #[test]
    fn malformed_conditions_are_explained() {
        assert_eq!(
            cond("{ select = \"@.event\" }").unwrap_err(),
            "a condition needs one of equals, one_of, exists or matches besides select"
        );
        assert_eq!(
            cond("{ select = \"@.event\", equal = \"x\" }").unwrap_err(),
            "unknown condition key \"equal\"; expected equals, one_of, exists or matches, or all, any, not"
        );
        assert!(cond("{ select = \"@.event[\", equals = \"x\" }")
            .unwrap_err()
            .contains("is not a valid JSONPath"));
        assert!(cond("\"@.event == 'click'\"")
            .unwrap_err()
            .starts_with("a condition is a table"));
        assert!(cond("{ all = [ { select = \"$.a\" } ] }")
            .unwrap_err()
            .starts_with("all[0]: "));
    }
}
