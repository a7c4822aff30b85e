//! Transforms: the fixed set of value changes a mapping may apply, in order, to what its
//! selector found. Each is parsed once at load (regexes compiled, lookup keys normalised, date
//! formats checked); applying one never re-parses the mapping.
//!
//! Error messages never quote the value being transformed: they end up in `Unmappable` reasons,
//! which are stored and logged, and the value may be personal data.

use std::collections::HashMap;

mod datetime;
mod name;
mod range;

use chrono::format::{Item, StrftimeItems};
use phonenumber::country::Id as Region;
use regex::Regex;
use serde_json::{Number, Value};

pub(crate) use self::datetime::{format_datetime, parse_datetime, DateFormat};
use self::name::split_name;
use self::range::parse_range;
use crate::lead::Email;

/// Every transform name, for error messages and the docs.
pub(crate) const NAMES: &[&str] = &[
    "trim",
    "lower",
    "upper",
    "split_name",
    "email",
    "phone",
    "domain",
    "number",
    "boolean",
    "range",
    "lookup",
    "default",
    "template",
    "join",
    "regex",
    "datetime",
    "tally_options",
];

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NamePart {
    First,
    Last,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Bound {
    Min,
    Max,
}

/// Value -> value table; keys match ignoring case and surrounding spaces.
#[derive(Debug, Clone)]
pub(crate) struct Lookup {
    table: HashMap<String, Value>,
    /// The `"*"` entry: what any other value becomes. Without it, other values pass unchanged.
    otherwise: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Value,
    Var(usize),
}

/// `"{value}"` and `"{var}"` placeholders; `{{` and `}}` are literal braces.
#[derive(Debug, Clone)]
pub(crate) struct Template(Vec<Piece>);

#[derive(Debug, Clone)]
pub(crate) enum Transform {
    Trim,
    Lower,
    Upper,
    SplitName(NamePart),
    Email,
    Phone(Region),
    Domain,
    Number,
    Boolean,
    Range(Bound),
    Lookup(Lookup),
    Default(Value),
    Template(Template),
    Join(String),
    Regex(Regex),
    DateTime(DateFormat),
    TallyOptions,
}

/// What every value in a file is parsed with: settings and the file's named lookup tables.
pub(crate) struct ParseCx<'a> {
    /// `[mapping] default_phone_region` from the settings.
    pub region: Region,
    /// The file's `[lookup.<name>]` tables.
    pub lookups: &'a HashMap<String, Lookup>,
}

/// What parsing a transform needs to know about its surroundings.
pub(crate) struct TransformCx<'a> {
    pub file: &'a ParseCx<'a>,
    /// Names of the field's `vars`, which templates may use.
    pub vars: &'a [String],
}

impl Transform {
    /// Parses one entry of a `transform` list: a name (`"trim"`) or a one-key table
    /// (`{ lookup = { ... } }`).
    pub fn parse(v: &toml::Value, cx: &TransformCx<'_>) -> Result<Transform, String> {
        match v {
            toml::Value::String(name) => Self::parse_bare(name, cx),
            toml::Value::Table(t) if t.len() == 1 => {
                let (name, arg) = t.iter().next().ok_or("empty table")?;
                Self::parse_with_arg(name, arg, cx)
            }
            _ => Err(
                "a transform is a name like \"trim\" or a one-key table like { default = \"x\" }"
                    .into(),
            ),
        }
    }

    fn parse_bare(name: &str, cx: &TransformCx<'_>) -> Result<Transform, String> {
        Ok(match name {
            "trim" => Transform::Trim,
            "lower" => Transform::Lower,
            "upper" => Transform::Upper,
            "email" => Transform::Email,
            "phone" => Transform::Phone(cx.file.region),
            "domain" => Transform::Domain,
            "number" => Transform::Number,
            "boolean" => Transform::Boolean,
            "join" => Transform::Join(", ".into()),
            "datetime" => Transform::DateTime(DateFormat::Auto),
            "tally_options" => Transform::TallyOptions,
            "split_name" => {
                return Err(
                    "split_name needs the part: { split_name = \"first\" } or { split_name = \"last\" }"
                        .into(),
                )
            }
            "range" => {
                return Err("range needs the bound: { range = \"min\" } or { range = \"max\" }".into())
            }
            "lookup" | "default" | "template" | "regex" => {
                return Err(format!(
                    "{name} needs an argument, e.g. {{ {name} = ... }}; see mappings/README.md"
                ))
            }
            other => return Err(unknown(other)),
        })
    }

    fn parse_with_arg(
        name: &str,
        arg: &toml::Value,
        cx: &TransformCx<'_>,
    ) -> Result<Transform, String> {
        let text = || {
            arg.as_str()
                .ok_or_else(|| format!("{name} takes a string argument"))
        };
        Ok(match name {
            "split_name" => Transform::SplitName(match text()? {
                "first" => NamePart::First,
                "last" => NamePart::Last,
                _ => return Err("split_name is \"first\" or \"last\"".into()),
            }),
            "range" => Transform::Range(match text()? {
                "min" => Bound::Min,
                "max" => Bound::Max,
                _ => return Err("range is \"min\" or \"max\"".into()),
            }),
            "phone" => {
                let r = text()?;
                Transform::Phone(r.parse::<Region>().map_err(|_| {
                    format!("{r:?} is not a region code; use two capital letters like US or GB")
                })?)
            }
            "join" => Transform::Join(text()?.to_string()),
            "regex" => {
                let re = text()?;
                Transform::Regex(
                    Regex::new(re).map_err(|e| format!("{re:?} is not a valid regex: {e}"))?,
                )
            }
            "datetime" => Transform::DateTime(match text()? {
                "auto" => DateFormat::Auto,
                "unix" => DateFormat::UnixSeconds,
                "unix_ms" => DateFormat::UnixMillis,
                pattern => {
                    if StrftimeItems::new(pattern).any(|i| matches!(i, Item::Error)) {
                        return Err(format!("{pattern:?} is not a valid date format"));
                    }
                    DateFormat::Pattern(pattern.to_string())
                }
            }),
            "default" => {
                Transform::Default(scalar(arg).ok_or("default takes a string, number or boolean")?)
            }
            "lookup" => Transform::Lookup(match arg {
                // A named table: `[lookup.countries]` in the same file.
                toml::Value::String(name) => {
                    cx.file.lookups.get(name).cloned().ok_or_else(|| {
                        let mut known: Vec<&str> =
                            cx.file.lookups.keys().map(String::as_str).collect();
                        known.sort_unstable();
                        if known.is_empty() {
                            format!("no [lookup.{name}] table in this file")
                        } else {
                            format!(
                                "no [lookup.{name}] table in this file (it has {})",
                                known.join(", ")
                            )
                        }
                    })?
                }
                inline => Lookup::parse(inline)?,
            }),
            "template" => Transform::Template(Template::parse(text()?, cx.vars)?),
            "trim" | "lower" | "upper" | "email" | "domain" | "number" | "boolean"
            | "tally_options" => {
                return Err(format!("{name} takes no argument: write it as \"{name}\""))
            }
            other => return Err(unknown(other)),
        })
    }

    /// Applies the transform. `None` is "nothing found"; only `default` and `template` act on it.
    /// `vars` are the field's `vars`, already evaluated, in declaration order.
    pub fn apply(
        &self,
        v: Option<Value>,
        vars: &[Option<String>],
    ) -> Result<Option<Value>, String> {
        match self {
            Transform::Default(d) => return Ok(v.or_else(|| Some(d.clone()))),
            Transform::Template(t) => return Ok(t.render(v.as_ref(), vars)),
            _ => {}
        }
        let Some(v) = v else { return Ok(None) };
        match self {
            Transform::Join(sep) => Ok(join(v, sep)),
            Transform::TallyOptions => tally_options(v),
            _ => each(v, |x| self.apply_scalar(x)),
        }
    }

    /// The transforms that act on one scalar at a time (a list has each element transformed).
    fn apply_scalar(&self, v: Value) -> Result<Option<Value>, String> {
        match self {
            Transform::Trim => Ok(map_string(v, |s| s.trim().to_string())),
            Transform::Lower => Ok(map_string(v, |s| s.to_lowercase())),
            Transform::Upper => Ok(map_string(v, |s| s.to_uppercase())),
            Transform::SplitName(part) => Ok(text(&v)?.and_then(|s| {
                let (first, last) = split_name(&s);
                match part {
                    NamePart::First => first,
                    NamePart::Last => last,
                }
                .map(Value::String)
            })),
            Transform::Email => match text(&v)? {
                None => Ok(None),
                Some(s) => Email::parse(&s)
                    .map(|e| Some(Value::String(e.as_str().to_string())))
                    .map_err(|_| "not a valid email address".to_string()),
            },
            Transform::Phone(region) => match text(&v)? {
                None => Ok(None),
                Some(s) => e164(&s, *region).map(|p| Some(Value::String(p))),
            },
            Transform::Domain => match text(&v)? {
                None => Ok(None),
                Some(s) => domain(&s)
                    .map(|d| Some(Value::String(d)))
                    .ok_or_else(|| "neither an email address nor a web address".to_string()),
            },
            Transform::Number => to_number(&v).map(Some),
            Transform::Boolean => to_bool(&v),
            Transform::Range(bound) => {
                if let Value::Number(_) = v {
                    return Ok(Some(v));
                }
                let Some(s) = text(&v)? else { return Ok(None) };
                let (min, max) = parse_range(&s).ok_or_else(|| {
                    "not a size range like 51-200, 1,001-5,000, 10000+ or <10".to_string()
                })?;
                Ok(match bound {
                    Bound::Min => min,
                    Bound::Max => max,
                }
                .map(|n| Value::Number(n.into())))
            }
            Transform::Lookup(l) => l.apply(v),
            Transform::Regex(re) => Ok(text(&v)?.and_then(|s| {
                let caps = re.captures(&s)?;
                let m = caps.get(1).or_else(|| caps.get(0))?;
                let found = m.as_str().trim();
                (!found.is_empty()).then(|| Value::String(found.to_string()))
            })),
            Transform::DateTime(format) => {
                let at = parse_datetime(&v, format)?;
                Ok(Some(Value::String(format_datetime(at))))
            }
            // Handled in `apply`.
            Transform::Default(_)
            | Transform::Template(_)
            | Transform::Join(_)
            | Transform::TallyOptions => Ok(Some(v)),
        }
    }
}

fn unknown(name: &str) -> String {
    format!(
        "unknown transform {name:?}; known transforms are {}",
        NAMES.join(", ")
    )
}

/// A TOML scalar as JSON (strings, numbers, booleans; dates as their text).
pub(crate) fn scalar(v: &toml::Value) -> Option<Value> {
    match v {
        toml::Value::String(s) => Some(Value::String(s.clone())),
        toml::Value::Integer(i) => Some(Value::Number((*i).into())),
        toml::Value::Float(f) => Number::from_f64(*f).map(Value::Number),
        toml::Value::Boolean(b) => Some(Value::Bool(*b)),
        toml::Value::Datetime(d) => Some(Value::String(d.to_string())),
        toml::Value::Array(_) | toml::Value::Table(_) => None,
    }
}

/// Applies `f` to a scalar, or to each element of a list (dropping what becomes nothing).
fn each(
    v: Value,
    f: impl Fn(Value) -> Result<Option<Value>, String>,
) -> Result<Option<Value>, String> {
    match v {
        Value::Array(items) => {
            let mut out = Vec::with_capacity(items.len());
            for item in items {
                if let Some(x) = f(item)? {
                    out.push(x);
                }
            }
            Ok((!out.is_empty()).then_some(Value::Array(out)))
        }
        Value::Null => Ok(None),
        other => f(other),
    }
}

fn map_string(v: Value, f: impl Fn(&str) -> String) -> Option<Value> {
    match v {
        Value::String(s) => {
            let out = f(&s);
            (!out.trim().is_empty()).then_some(Value::String(out))
        }
        other => Some(other),
    }
}

/// The text of a scalar; blank is nothing. Lists and objects are refused with a hint.
pub(crate) fn text(v: &Value) -> Result<Option<String>, String> {
    match v {
        Value::String(s) => Ok((!s.trim().is_empty()).then(|| s.trim().to_string())),
        Value::Number(n) => Ok(Some(n.to_string())),
        Value::Bool(b) => Ok(Some(b.to_string())),
        Value::Null => Ok(None),
        Value::Array(_) => Err("found a list where one value was expected".into()),
        Value::Object(_) => {
            Err("found an object where one value was expected; select one of its keys".into())
        }
    }
}

/// Text for templates and joins: a list becomes its values joined with ", ".
fn loose_text(v: &Value) -> Option<String> {
    match v {
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(loose_text).collect();
            (!parts.is_empty()).then(|| parts.join(", "))
        }
        Value::Object(_) => None,
        other => text(other).ok().flatten(),
    }
}

fn join(v: Value, sep: &str) -> Option<Value> {
    match v {
        Value::Array(items) => {
            let parts: Vec<String> = items.iter().filter_map(loose_text).collect();
            (!parts.is_empty()).then(|| Value::String(parts.join(sep)))
        }
        other => Some(other),
    }
}

impl Lookup {
    pub fn parse(arg: &toml::Value) -> Result<Lookup, String> {
        let t = arg.as_table().ok_or(
            "lookup takes a table: { lookup = { \"from\" = \"to\", \"*\" = \"otherwise\" } }",
        )?;
        let mut table = HashMap::with_capacity(t.len());
        let mut seen: HashMap<String, &str> = HashMap::new();
        let mut otherwise = None;
        for (k, v) in t {
            let to = scalar(v).ok_or_else(|| {
                format!("lookup value for {k:?} must be a string, number or boolean")
            })?;
            if k == "*" {
                otherwise = Some(to);
                continue;
            }
            let key = lookup_key(k);
            if let Some(first) = seen.insert(key.clone(), k) {
                return Err(format!(
                    "lookup keys {first:?} and {k:?} are the same key (keys ignore case and surrounding spaces)"
                ));
            }
            table.insert(key, to);
        }
        Ok(Lookup { table, otherwise })
    }

    fn apply(&self, v: Value) -> Result<Option<Value>, String> {
        let Some(t) = text(&v)? else { return Ok(None) };
        Ok(Some(
            match self.table.get(&lookup_key(&t)).or(self.otherwise.as_ref()) {
                Some(to) => to.clone(),
                None => v,
            },
        ))
    }
}

fn lookup_key(s: &str) -> String {
    s.trim().to_lowercase()
}

impl Template {
    fn parse(src: &str, vars: &[String]) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = String::new();
        let mut chars = src.chars().peekable();
        while let Some(c) = chars.next() {
            match c {
                '{' if chars.peek() == Some(&'{') => {
                    chars.next();
                    lit.push('{');
                }
                '}' if chars.peek() == Some(&'}') => {
                    chars.next();
                    lit.push('}');
                }
                '{' => {
                    let mut name = String::new();
                    loop {
                        match chars.next() {
                            Some('}') => break,
                            Some(ch) => name.push(ch),
                            None => return Err(format!("template {src:?} has an unclosed {{")),
                        }
                    }
                    if !lit.is_empty() {
                        pieces.push(Piece::Text(std::mem::take(&mut lit)));
                    }
                    let name = name.trim();
                    if name == "value" {
                        pieces.push(Piece::Value);
                    } else if let Some(i) = vars.iter().position(|v| v == name) {
                        pieces.push(Piece::Var(i));
                    } else {
                        let known = if vars.is_empty() {
                            "this field has no vars".to_string()
                        } else {
                            format!("vars are {}", vars.join(", "))
                        };
                        return Err(format!(
                            "template placeholder {{{name}}} is neither {{value}} nor a var ({known})"
                        ));
                    }
                }
                '}' => {
                    return Err(format!(
                        "template {src:?} has a }} without a {{; write }}}} for a brace"
                    ))
                }
                other => lit.push(other),
            }
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Template(pieces))
    }

    /// Nothing when every placeholder is empty, so "{first} {last}" of nothing is not " ".
    fn render(&self, value: Option<&Value>, vars: &[Option<String>]) -> Option<Value> {
        let mut out = String::new();
        let mut placeholders = 0;
        let mut filled = 0;
        for p in &self.0 {
            let part = match p {
                Piece::Text(t) => {
                    out.push_str(t);
                    continue;
                }
                Piece::Value => value.and_then(loose_text),
                Piece::Var(i) => vars.get(*i).cloned().flatten(),
            };
            placeholders += 1;
            if let Some(s) = part {
                filled += 1;
                out.push_str(&s);
            }
        }
        let out = out.split_whitespace().collect::<Vec<_>>().join(" ");
        if (placeholders > 0 && filled == 0) || out.is_empty() {
            return None;
        }
        Some(Value::String(out))
    }
}

/// E.164 (`+442071838750`), with `region` for numbers written without a country code.
fn e164(s: &str, region: Region) -> Result<String, String> {
    let n =
        phonenumber::parse(Some(region), s).map_err(|_| "not a valid phone number".to_string())?;
    if !phonenumber::is_valid(&n) {
        return Err("not a valid phone number".into());
    }
    Ok(n.format().mode(phonenumber::Mode::E164).to_string())
}

/// The domain of an email address or web address, lower-cased, without `www.`.
pub(crate) fn domain(s: &str) -> Option<String> {
    let s = s.trim();
    let host = if !s.contains("://") && s.contains('@') {
        Email::parse(s).ok()?.domain().to_string()
    } else {
        let with_scheme = if s.contains("://") {
            s.to_string()
        } else {
            format!("https://{s}")
        };
        let url = reqwest::Url::parse(&with_scheme).ok()?;
        url.host_str()?.to_lowercase()
    };
    let host = host.trim_end_matches('.');
    let host = host.strip_prefix("www.").unwrap_or(host);
    (host.contains('.') && !host.starts_with('.')).then(|| host.to_string())
}

fn to_number(v: &Value) -> Result<Value, String> {
    let err = || "not a number".to_string();
    match v {
        Value::Number(_) => Ok(v.clone()),
        Value::String(s) => {
            // Thousands separators and spaces ("1,200", "1 200") are common in form answers.
            let cleaned: String = s
                .chars()
                .filter(|c| !matches!(c, ',' | ' ' | '_'))
                .collect();
            if let Ok(i) = cleaned.parse::<i64>() {
                return Ok(Value::Number(i.into()));
            }
            let f: f64 = cleaned.parse().map_err(|_| err())?;
            Number::from_f64(f).map(Value::Number).ok_or_else(err)
        }
        _ => Err(err()),
    }
}

fn to_bool(v: &Value) -> Result<Option<Value>, String> {
    let b = match v {
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0),
        Value::String(s) => match s.trim().to_lowercase().as_str() {
            "" => return Ok(None),
            "true" | "yes" | "y" | "1" | "on" | "checked" | "agree" | "agreed" | "accept"
            | "accepted" | "opt-in" | "opted in" => true,
            "false" | "no" | "n" | "0" | "off" | "unchecked" | "disagree" | "declined"
            | "opt-out" | "opted out" => false,
            _ => return Err("not a yes/no value".into()),
        },
        _ => return Err("not a yes/no value".into()),
    };
    Ok(Some(Value::Bool(b)))
}

/// A Tally field object (`{key, label, type, value, options}`) -> its answer, with option ids
/// turned into their labels. One choice comes out as text, several as a list.
fn tally_options(v: Value) -> Result<Option<Value>, String> {
    let Value::Object(field) = v else {
        return Err(
            "tally_options needs the whole Tally field: select the field, not its value".into(),
        );
    };
    let options = field.get("options").and_then(Value::as_array);
    let label = |id: &Value| -> Value {
        options
            .and_then(|opts| opts.iter().find(|o| o.get("id") == Some(id)))
            .and_then(|o| o.get("text"))
            .cloned()
            .unwrap_or_else(|| id.clone())
    };
    Ok(match field.get("value") {
        None | Some(Value::Null) => None,
        Some(Value::Array(ids)) => {
            let labels: Vec<Value> = ids.iter().map(label).collect();
            match labels.len() {
                0 => None,
                1 => labels.into_iter().next(),
                _ => Some(Value::Array(labels)),
            }
        }
        Some(id @ Value::String(_)) => Some(label(id)),
        Some(other) => Some(other.clone()),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn region(s: &str) -> Region {
        s.parse().unwrap()
    }

    fn parse(src: &str) -> Result<Transform, String> {
        parse_with_vars(src, &[])
    }

    fn parse_with_vars(src: &str, vars: &[&str]) -> Result<Transform, String> {
        let doc: toml::Table = format!("t = {src}").parse().unwrap();
        let vars: Vec<String> = vars.iter().map(|s| s.to_string()).collect();
        let lookups = HashMap::from([(
            "countries".to_string(),
            Lookup::parse(&toml::Value::Table(
                "\"United Kingdom\" = \"GB\"".parse().unwrap(),
            ))
            .unwrap(),
        )]);
        let file = ParseCx {
            region: region("US"),
            lookups: &lookups,
        };
        Transform::parse(
            &doc["t"],
            &TransformCx {
                file: &file,
                vars: &vars,
            },
        )
    }

    fn run(src: &str, v: Value) -> Result<Option<Value>, String> {
        parse(src).unwrap().apply(Some(v), &[])
    }

    fn ok(src: &str, v: Value) -> Value {
        run(src, v).unwrap().unwrap()
    }

    #[test]
    fn trim_lower_upper_act_on_text_and_each_list_element() {
        assert_eq!(ok("\"trim\"", json!("  Ada ")), json!("Ada"));
        assert_eq!(ok("\"lower\"", json!("ADA@X.IO")), json!("ada@x.io"));
        assert_eq!(ok("\"upper\"", json!(["gb", "us"])), json!(["GB", "US"]));
        assert_eq!(ok("\"trim\"", json!(5)), json!(5));
        assert_eq!(run("\"trim\"", json!("   ")).unwrap(), None);
        // Nothing stays nothing.
        assert_eq!(parse("\"trim\"").unwrap().apply(None, &[]).unwrap(), None);
    }

    #[test]
    fn split_name_picks_a_part() {
        assert_eq!(
            ok("{ split_name = \"first\" }", json!("Ada Lovelace")),
            json!("Ada")
        );
        assert_eq!(
            ok("{ split_name = \"last\" }", json!("Ada Lovelace")),
            json!("Lovelace")
        );
        assert_eq!(
            run("{ split_name = \"last\" }", json!("Cher")).unwrap(),
            None
        );
    }

    #[test]
    fn emails_are_normalised_and_invalid_ones_refused_without_quoting_them() {
        assert_eq!(
            ok("\"email\"", json!(" Ada@Example.COM ")),
            json!("ada@example.com")
        );
        let e = run("\"email\"", json!("ada at example")).unwrap_err();
        assert_eq!(e, "not a valid email address");
    }

    #[test]
    fn phones_become_e164_with_the_default_or_given_region() {
        assert_eq!(
            ok("\"phone\"", json!("(415) 555-2671")),
            json!("+14155552671")
        );
        assert_eq!(
            ok("\"phone\"", json!("+44 20 7183 8750")),
            json!("+442071838750")
        );
        assert_eq!(
            ok("{ phone = \"GB\" }", json!("020 7183 8750")),
            json!("+442071838750")
        );
        assert_eq!(
            ok("{ phone = \"DE\" }", json!("030 901820")),
            json!("+4930901820")
        );
        let e = run("\"phone\"", json!("12")).unwrap_err();
        assert_eq!(e, "not a valid phone number");
        assert!(parse("{ phone = \"XX\" }")
            .unwrap_err()
            .contains("not a region code"));
    }

    #[test]
    fn domains_come_from_emails_and_urls() {
        assert_eq!(
            ok("\"domain\"", json!("ada@Analytical-Engines.io")),
            json!("analytical-engines.io")
        );
        assert_eq!(
            ok("\"domain\"", json!("https://www.example.co.uk/pricing?x=1")),
            json!("example.co.uk")
        );
        assert_eq!(
            ok("\"domain\"", json!("www.example.com")),
            json!("example.com")
        );
        assert_eq!(
            ok("\"domain\"", json!("example.com/about")),
            json!("example.com")
        );
        assert_eq!(
            run("\"domain\"", json!("not a site")).unwrap_err(),
            "neither an email address nor a web address"
        );
    }

    #[test]
    fn numbers_accept_thousands_separators() {
        assert_eq!(ok("\"number\"", json!("1,200")), json!(1200));
        assert_eq!(ok("\"number\"", json!(" 3.5 ")), json!(3.5));
        assert_eq!(ok("\"number\"", json!(7)), json!(7));
        assert_eq!(
            run("\"number\"", json!("lots")).unwrap_err(),
            "not a number"
        );
    }

    #[test]
    fn booleans_read_form_checkbox_words() {
        assert_eq!(ok("\"boolean\"", json!("Yes")), json!(true));
        assert_eq!(ok("\"boolean\"", json!("on")), json!(true));
        assert_eq!(ok("\"boolean\"", json!("0")), json!(false));
        assert_eq!(ok("\"boolean\"", json!(true)), json!(true));
        assert_eq!(
            run("\"boolean\"", json!("maybe")).unwrap_err(),
            "not a yes/no value"
        );
    }

    #[test]
    fn range_picks_an_end() {
        assert_eq!(ok("{ range = \"min\" }", json!("51-200")), json!(51));
        assert_eq!(ok("{ range = \"max\" }", json!("51-200")), json!(200));
        assert_eq!(run("{ range = \"max\" }", json!("10000+")).unwrap(), None);
        assert_eq!(ok("{ range = \"min\" }", json!(12)), json!(12));
        assert!(run("{ range = \"min\" }", json!("lots"))
            .unwrap_err()
            .contains("not a size range"));
    }

    #[test]
    fn lookups_ignore_case_and_fall_back_to_star_or_the_value() {
        let t = "{ lookup = { \"Yes\" = true, \"No\" = false } }";
        assert_eq!(ok(t, json!(" yes ")), json!(true));
        assert_eq!(ok(t, json!("NO")), json!(false));
        assert_eq!(ok(t, json!("perhaps")), json!("perhaps"));
        let t = "{ lookup = { \"1-10\" = \"small\", \"*\" = \"large\" } }";
        assert_eq!(ok(t, json!("1-10")), json!("small"));
        assert_eq!(ok(t, json!("5000")), json!("large"));
        let e = parse("{ lookup = { \"Yes\" = 1, \" yes\" = 2 } }").unwrap_err();
        assert!(e.contains("are the same key"), "{e}");
        assert_eq!(
            ok("{ lookup = \"countries\" }", json!("united kingdom")),
            json!("GB")
        );
        assert_eq!(
            parse("{ lookup = \"regions\" }").unwrap_err(),
            "no [lookup.regions] table in this file (it has countries)"
        );
    }

    #[test]
    fn default_fills_only_nothing() {
        let d = parse("{ default = \"web\" }").unwrap();
        assert_eq!(d.apply(None, &[]).unwrap(), Some(json!("web")));
        assert_eq!(
            d.apply(Some(json!("ads")), &[]).unwrap(),
            Some(json!("ads"))
        );
    }

    #[test]
    fn templates_combine_the_value_and_vars() {
        let t = parse_with_vars("{ template = \"{first} {last}\" }", &["first", "last"]).unwrap();
        let vars = [Some("Kin".to_string()), Some("Lee".to_string())];
        assert_eq!(t.apply(None, &vars).unwrap(), Some(json!("Kin Lee")));
        assert_eq!(
            t.apply(None, &[Some("Kin".into()), None]).unwrap(),
            Some(json!("Kin"))
        );
        assert_eq!(t.apply(None, &[None, None]).unwrap(), None);
        let t = parse("{ template = \"https://{value}/ {{x}}\" }").unwrap();
        assert_eq!(
            t.apply(Some(json!("example.com")), &[]).unwrap(),
            Some(json!("https://example.com/ {x}"))
        );
        let e = parse_with_vars("{ template = \"{frist}\" }", &["first"]).unwrap_err();
        assert_eq!(
            e,
            "template placeholder {frist} is neither {value} nor a var (vars are first)"
        );
        assert!(parse("{ template = \"{value\" }")
            .unwrap_err()
            .contains("unclosed"));
    }

    #[test]
    fn join_concatenates_lists() {
        assert_eq!(
            ok("\"join\"", json!(["CRM", "", "Email"])),
            json!("CRM, Email")
        );
        assert_eq!(
            ok("{ join = \" | \" }", json!(["a", 1, true])),
            json!("a | 1 | true")
        );
        assert_eq!(ok("\"join\"", json!("one")), json!("one"));
    }

    #[test]
    fn regex_extracts_the_first_group_or_the_match() {
        assert_eq!(
            ok(
                "{ regex = \"utm_source=([^&]+)\" }",
                json!("https://x.io/?utm_source=ads&a=1")
            ),
            json!("ads")
        );
        assert_eq!(
            ok(
                "{ regex = \"^[^?#]*\" }",
                json!("https://x.io/pricing?email=a@b.c")
            ),
            json!("https://x.io/pricing")
        );
        assert_eq!(
            run("{ regex = \"(\\\\d+)\" }", json!("none")).unwrap(),
            None
        );
        assert!(parse("{ regex = \"(\" }")
            .unwrap_err()
            .contains("is not a valid regex"));
    }

    #[test]
    fn datetimes_parse_provider_formats_into_utc() {
        let cases = [
            (json!("2026-11-20T10:16:41Z"), "2026-11-20T10:16:41Z"),
            (json!("2026-11-20T11:16:41+01:00"), "2026-11-20T10:16:41Z"),
            (
                json!("2019-11-05T16:33:54.9070259Z"),
                "2019-11-05T16:33:54.907025900Z",
            ),
            (
                json!("2014-02-19T16:16:31.3700000-05:00"),
                "2014-02-19T21:16:31.370Z",
            ),
            (json!("2009-03-26 21:35:57"), "2009-03-26T21:35:57Z"),
            (json!("2023-06-06"), "2023-06-06T00:00:00Z"),
            (json!(1700000000), "2023-11-14T22:13:20Z"),
            (json!("1700000000123"), "2023-11-14T22:13:20.123Z"),
            (json!(1521472262.908181), "2018-03-19T15:11:02.908Z"),
            (
                json!("Fri, 20 Nov 2026 10:16:41 +0000"),
                "2026-11-20T10:16:41Z",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(ok("\"datetime\"", v.clone()), json!(want), "{v}");
        }
        let t = "{ datetime = \"%Y-%m-%d %I:%M %p UTC\" }";
        assert_eq!(
            ok(t, json!("2023-06-06 10:57 PM UTC")),
            json!("2023-06-06T22:57:00Z")
        );
        assert_eq!(
            ok("{ datetime = \"%d/%m/%Y\" }", json!("06/07/2023")),
            json!("2023-07-06T00:00:00Z")
        );
        assert_eq!(
            ok("{ datetime = \"unix_ms\" }", json!(1700000000000_i64)),
            json!("2023-11-14T22:13:20Z")
        );
        assert_eq!(
            run("\"datetime\"", json!("yesterday")).unwrap_err(),
            "not a date/time"
        );
        assert!(parse("{ datetime = \"%Q\" }")
            .unwrap_err()
            .contains("not a valid date format"));
    }

    #[test]
    fn tally_option_ids_become_their_labels() {
        let field = json!({
            "key": "question_mVGBXL", "label": "Company size", "type": "MULTIPLE_CHOICE",
            "value": ["d9e3f1a2"],
            "options": [{"id": "a71b2c3d", "text": "1-50"}, {"id": "d9e3f1a2", "text": "51-200"}]
        });
        assert_eq!(ok("\"tally_options\"", field), json!("51-200"));
        let many = json!({"value": ["x", "y"], "options": [{"id": "x", "text": "CRM"}, {"id": "y", "text": "Email"}]});
        assert_eq!(ok("\"tally_options\"", many), json!(["CRM", "Email"]));
        let plain = json!({"type": "INPUT_TEXT", "value": "Acme"});
        assert_eq!(ok("\"tally_options\"", plain), json!("Acme"));
        assert_eq!(
            run("\"tally_options\"", json!({"value": null})).unwrap(),
            None
        );
        assert!(run("\"tally_options\"", json!("d9e3f1a2"))
            .unwrap_err()
            .contains("whole Tally field"));
    }

    #[test]
    fn unknown_or_misused_transforms_are_explained() {
        let e = parse("\"e164\"").unwrap_err();
        assert!(
            e.starts_with("unknown transform \"e164\"; known transforms are trim, lower"),
            "{e}"
        );
        assert!(parse("\"split_name\"")
            .unwrap_err()
            .contains("needs the part"));
        assert!(parse("{ trim = true }")
            .unwrap_err()
            .contains("takes no argument"));
        assert!(parse("{ a = 1, b = 2 }")
            .unwrap_err()
            .contains("one-key table"));
        assert!(parse("{ default = [1] }")
            .unwrap_err()
            .contains("default takes"));
    }

    #[test]
    fn transforms_refuse_objects_with_a_hint() {
        let e = run("\"lower\"", json!({"first": "Kin"})).unwrap();
        // Non-text scalars and objects pass through the case transforms untouched...
        assert_eq!(e, Some(json!({"first": "Kin"})));
        // ...but transforms that need text say what to do.
        let e = run("\"email\"", json!({"first": "Kin"})).unwrap_err();
        assert!(e.contains("select one of its keys"), "{e}");
    }
}
