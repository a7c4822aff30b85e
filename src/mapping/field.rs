//! One value in a mapping (a lead field, an email, a time, an engagement detail): where it comes
//! from and how it is transformed. Written in any of these forms:
//!
//! ```toml
//! company = "$.payload.company"                        # one selector
//! company = ["$.a.company", "$.b.organisation"]        # first non-empty
//! phone = { select = "$.phone", transform = ["phone"], on_error = "skip" }
//! lead_source = { value = "typeform" }                 # a constant
//! first_name = ["$.first", { select = "$.name", transform = [{ split_name = "first" }] }]
//! custom.full = { vars = { f = "$.first", l = "$.last" }, transform = [{ template = "{f} {l}" }] }
//! ```
//! A list holds alternatives: the first whose result (after its own transforms) is non-empty wins.

use serde_json::Value;

use super::file::Errors;
use super::selector::{is_empty, Scope, Selector, Selectors};
use super::transform::{scalar, ParseCx, Transform, TransformCx};

const TABLE_KEYS: &str = "select, value, vars, transform, on_error";

#[derive(Debug, Clone)]
pub(crate) struct FieldSpec {
    alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone)]
struct Alternative {
    source: Source,
    vars: Vec<Selectors>,
    transforms: Vec<Transform>,
    /// `on_error = "skip"`: a transform error makes this alternative empty instead of failing
    /// the event (a mistyped phone number should not hold back the lead).
    skip_errors: bool,
}

#[derive(Debug, Clone)]
enum Source {
    Select(Selectors),
    Value(Value),
    /// Only `vars` feed it (through a template).
    Nothing,
}

impl FieldSpec {
    /// Parses a field written at `key`; problems are added to `errs` (all of them) and `None`
    /// is returned when there were any.
    pub fn parse(
        v: &toml::Value,
        key: &str,
        cx: &ParseCx<'_>,
        errs: &mut Errors,
    ) -> Option<FieldSpec> {
        let before = errs.len();
        let alternatives: Vec<Alternative> = match v {
            toml::Value::String(_) | toml::Value::Table(_) => {
                Alternative::parse(v, key, cx, errs).into_iter().collect()
            }
            toml::Value::Array(list) if list.is_empty() => {
                errs.push(key, "an empty list selects nothing");
                Vec::new()
            }
            toml::Value::Array(list) => list
                .iter()
                .enumerate()
                .filter_map(|(i, item)| {
                    let k = format!("{key}[{i}]");
                    match item {
                        toml::Value::String(_) | toml::Value::Table(_) => {
                            Alternative::parse(item, &k, cx, errs)
                        }
                        _ => {
                            errs.push(k, "each alternative is a JSONPath string or a table");
                            None
                        }
                    }
                })
                .collect(),
            _ => {
                errs.push(
                    key,
                    format!(
                        "expected a JSONPath string, a list of them, or a table with {TABLE_KEYS}"
                    ),
                );
                Vec::new()
            }
        };
        (errs.len() == before).then_some(FieldSpec { alternatives })
    }

    /// The value, or `None` when nothing was found; `Err` carries a reason that never quotes
    /// the value.
    pub fn eval(&self, scope: Scope<'_>) -> Result<Option<Value>, String> {
        for alt in &self.alternatives {
            match alt.eval(scope) {
                Ok(Some(v)) => return Ok(Some(v)),
                Ok(None) => {}
                Err(_) if alt.skip_errors => {}
                Err(e) => return Err(e),
            }
        }
        Ok(None)
    }

    /// Why [`eval`](Self::eval) found nothing, in the admin's terms.
    pub fn nothing_reason(&self, scope: Scope<'_>) -> &'static str {
        let selectors: Vec<&Selectors> = self
            .alternatives
            .iter()
            .filter_map(|a| match &a.source {
                Source::Select(s) => Some(s),
                _ => None,
            })
            .collect();
        if selectors.iter().any(|s| s.first(scope).is_some()) {
            "empty after its transforms"
        } else if selectors.iter().map(|s| s.len()).sum::<usize>() == 1 {
            "selector matched nothing"
        } else {
            "no selector matched"
        }
    }
}

impl Alternative {
    fn parse(
        v: &toml::Value,
        key: &str,
        cx: &ParseCx<'_>,
        errs: &mut Errors,
    ) -> Option<Alternative> {
        if let toml::Value::String(s) = v {
            return match Selector::parse(s) {
                Ok(sel) => Some(Alternative::select(Selectors::new(vec![sel]))),
                Err(e) => {
                    errs.push(key, e);
                    None
                }
            };
        }
        let t = v.as_table()?;
        let before = errs.len();
        for k in t.keys() {
            if !["select", "value", "vars", "transform", "on_error"].contains(&k.as_str()) {
                errs.push(
                    format!("{key}.{k}"),
                    format!("unknown key; a field table takes {TABLE_KEYS}"),
                );
            }
        }
        let source = match (t.get("select"), t.get("value")) {
            (Some(_), Some(_)) => {
                errs.push(key, "give either select or value, not both");
                Source::Nothing
            }
            (Some(sel), None) => {
                Source::Select(parse_selectors(sel, &format!("{key}.select"), errs))
            }
            (None, Some(val)) => match scalar(val) {
                Some(v) => Source::Value(v),
                None => {
                    errs.push(
                        format!("{key}.value"),
                        "a value is a string, number or boolean",
                    );
                    Source::Nothing
                }
            },
            (None, None) => {
                if !t.contains_key("vars") {
                    errs.push(
                        key,
                        "a field table needs select, value, or vars with a template",
                    );
                }
                Source::Nothing
            }
        };
        let mut var_names = Vec::new();
        let mut vars = Vec::new();
        if let Some(vt) = t.get("vars") {
            match vt.as_table() {
                Some(vt) => {
                    for (name, sel) in vt {
                        var_names.push(name.clone());
                        vars.push(parse_selectors(sel, &format!("{key}.vars.{name}"), errs));
                    }
                }
                None => errs.push(format!("{key}.vars"), "vars is a table of name = JSONPath"),
            }
        }
        let tcx = TransformCx {
            file: cx,
            vars: &var_names,
        };
        let mut transforms = Vec::new();
        match t.get("transform") {
            None => {}
            Some(toml::Value::Array(list)) => {
                for (i, tv) in list.iter().enumerate() {
                    match Transform::parse(tv, &tcx) {
                        Ok(tr) => transforms.push(tr),
                        Err(e) => errs.push(format!("{key}.transform[{i}]"), e),
                    }
                }
            }
            // A single transform need not be wrapped in a list.
            Some(one) => match Transform::parse(one, &tcx) {
                Ok(tr) => transforms.push(tr),
                Err(e) => errs.push(format!("{key}.transform"), e),
            },
        }
        if !vars.is_empty()
            && !transforms
                .iter()
                .any(|t| matches!(t, Transform::Template(_)))
        {
            errs.push(
                format!("{key}.vars"),
                "vars are only read by a template transform",
            );
        }
        let skip_errors = match t.get("on_error").map(|v| v.as_str()) {
            None => false,
            Some(Some("fail")) => false,
            Some(Some("skip")) => true,
            Some(_) => {
                errs.push(
                    format!("{key}.on_error"),
                    "on_error is \"fail\" (the default) or \"skip\"",
                );
                false
            }
        };
        (errs.len() == before).then_some(Alternative {
            source,
            vars,
            transforms,
            skip_errors,
        })
    }

    fn select(s: Selectors) -> Alternative {
        Alternative {
            source: Source::Select(s),
            vars: Vec::new(),
            transforms: Vec::new(),
            skip_errors: false,
        }
    }

    fn eval(&self, scope: Scope<'_>) -> Result<Option<Value>, String> {
        let vars: Vec<Option<String>> = self
            .vars
            .iter()
            .map(|s| {
                s.first(scope)
                    .and_then(|v| super::transform::text(v).ok().flatten())
            })
            .collect();
        let mut v = match &self.source {
            Source::Select(s) => s.first(scope).cloned(),
            Source::Value(v) => Some(v.clone()),
            Source::Nothing => None,
        };
        for t in &self.transforms {
            v = t.apply(v, &vars)?;
        }
        Ok(v.filter(|v| !is_empty(v)))
    }
}

fn parse_selectors(v: &toml::Value, key: &str, errs: &mut Errors) -> Selectors {
    let mut out = Vec::new();
    match v {
        toml::Value::String(s) => match Selector::parse(s) {
            Ok(sel) => out.push(sel),
            Err(e) => errs.push(key, e),
        },
        toml::Value::Array(list) if !list.is_empty() => {
            for (i, item) in list.iter().enumerate() {
                match item.as_str().map(Selector::parse) {
                    Some(Ok(sel)) => out.push(sel),
                    Some(Err(e)) => errs.push(format!("{key}[{i}]"), e),
                    None => errs.push(format!("{key}[{i}]"), "a selector is a JSONPath string"),
                }
            }
        }
        _ => errs.push(
            key,
            "a selector is a JSONPath string or a non-empty list of them",
        ),
    }
    Selectors::new(out)
}

/// A lead field's final value: one scalar. A list of one value is that value; longer lists and
/// objects are refused with what to do about them.
pub(crate) fn one_value(v: Value) -> Result<Option<Value>, String> {
    match v {
        Value::Array(mut items) if items.len() == 1 => one_value(items.remove(0)),
        Value::Array(_) => {
            Err("found a list of values; add a join transform to keep them all".into())
        }
        Value::Object(_) => Err("found an object; select one of its keys".into()),
        Value::String(s) => {
            let t = s.trim();
            Ok((!t.is_empty()).then(|| Value::String(t.to_string())))
        }
        Value::Null => Ok(None),
        other => Ok(Some(other)),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn spec(src: &str) -> Result<FieldSpec, Vec<String>> {
        let doc: toml::Table = format!("f = {src}").parse().unwrap();
        let mut errs = Errors::new("m.toml");
        let lookups = std::collections::HashMap::new();
        let cx = ParseCx {
            region: "US".parse().unwrap(),
            lookups: &lookups,
        };
        FieldSpec::parse(&doc["f"], "lead.fields.f", &cx, &mut errs)
            .ok_or_else(|| errs.into_vec().into_iter().map(|e| e.to_string()).collect())
    }

    fn eval(src: &str, v: &Value) -> Result<Option<Value>, String> {
        spec(src).unwrap().eval(Scope::new(v))
    }

    #[test]
    fn the_written_forms_all_work() {
        let v = json!({"a": "", "b": "B", "first": "Kin", "last": "Lee", "full": "Ada Lovelace"});
        assert_eq!(eval("\"$.b\"", &v).unwrap(), Some(json!("B")));
        assert_eq!(
            eval("[\"$.a\", \"$.zz\", \"$.b\"]", &v).unwrap(),
            Some(json!("B"))
        );
        assert_eq!(
            eval(
                "{ select = [\"$.a\", \"$.b\"], transform = [\"lower\"] }",
                &v
            )
            .unwrap(),
            Some(json!("b"))
        );
        assert_eq!(
            eval("{ value = \"typeform\" }", &v).unwrap(),
            Some(json!("typeform"))
        );
        assert_eq!(
            eval("{ vars = { f = \"$.first\", l = \"$.last\" }, transform = [{ template = \"{f} {l}\" }] }", &v).unwrap(),
            Some(json!("Kin Lee"))
        );
        assert_eq!(
            eval("[\"$.first_name\", { select = \"$.full\", transform = [{ split_name = \"first\" }] }]", &v).unwrap(),
            Some(json!("Ada"))
        );
        assert_eq!(
            eval(
                "{ select = \"$.zz\", transform = [{ default = \"web\" }] }",
                &v
            )
            .unwrap(),
            Some(json!("web"))
        );
    }

    #[test]
    fn alternatives_fall_through_on_empty_results_not_on_errors_unless_skipped() {
        let v = json!({"phone": "12", "mobile": "+44 20 7183 8750"});
        let strict = "[{ select = \"$.phone\", transform = [\"phone\"] }, { select = \"$.mobile\", transform = [\"phone\"] }]";
        assert_eq!(eval(strict, &v).unwrap_err(), "not a valid phone number");
        let lenient = "[{ select = \"$.phone\", transform = [\"phone\"], on_error = \"skip\" }, { select = \"$.mobile\", transform = [\"phone\"] }]";
        assert_eq!(eval(lenient, &v).unwrap(), Some(json!("+442071838750")));
        let only = "{ select = \"$.phone\", transform = \"phone\", on_error = \"skip\" }";
        assert_eq!(eval(only, &v).unwrap(), None);
    }

    #[test]
    fn nothing_is_explained_in_the_admins_terms() {
        let v = json!({"a": "   "});
        let one = spec("\"$.email\"").unwrap();
        assert_eq!(
            one.nothing_reason(Scope::new(&v)),
            "selector matched nothing"
        );
        let two = spec("[\"$.email\", \"$.mail\"]").unwrap();
        assert_eq!(two.nothing_reason(Scope::new(&v)), "no selector matched");
        let v = json!({"a": "no digits"});
        let emptied = spec("{ select = \"$.a\", transform = [{ regex = \"\\\\d+\" }] }").unwrap();
        assert_eq!(
            emptied.nothing_reason(Scope::new(&v)),
            "empty after its transforms"
        );
    }

    #[test]
    fn every_problem_in_a_field_is_reported_with_its_key() {
        let errs = spec("{ select = [\"$.a[\", \"$.b\"], transform = [\"e164\", { split_name = \"middle\" }], on_eror = \"skip\" }")
            .unwrap_err();
        assert_eq!(errs.len(), 4, "{errs:#?}");
        assert_eq!(errs[0], "m.toml: lead.fields.f.on_eror: unknown key; a field table takes select, value, vars, transform, on_error");
        assert!(
            errs[1]
                .starts_with("m.toml: lead.fields.f.select[0]: \"$.a[\" is not a valid JSONPath"),
            "{}",
            errs[1]
        );
        assert!(
            errs[2].starts_with("m.toml: lead.fields.f.transform[0]: unknown transform \"e164\""),
            "{}",
            errs[2]
        );
        assert_eq!(
            errs[3],
            "m.toml: lead.fields.f.transform[1]: split_name is \"first\" or \"last\""
        );
        assert_eq!(
            spec("[]").unwrap_err(),
            vec!["m.toml: lead.fields.f: an empty list selects nothing"]
        );
        assert_eq!(
            spec("{ select = \"$.a\", value = 1 }").unwrap_err(),
            vec!["m.toml: lead.fields.f: give either select or value, not both"]
        );
    }

    #[test]
    fn final_values_are_single_scalars() {
        assert_eq!(one_value(json!(["x"])).unwrap(), Some(json!("x")));
        assert_eq!(one_value(json!(" x ")).unwrap(), Some(json!("x")));
        assert_eq!(one_value(json!(3)).unwrap(), Some(json!(3)));
        assert!(one_value(json!(["x", "y"]))
            .unwrap_err()
            .contains("add a join transform"));
        assert!(one_value(json!({"first": "Kin"}))
            .unwrap_err()
            .contains("select one of its keys"));
    }
}
