//! `LEADGATE_<SECTION>__<KEY>[__<KEY>...]` environment overrides, applied to the parsed TOML tree
//! before it is turned into typed settings.
//!
//! Sources are addressed by name: `LEADGATE_SOURCES__TYPEFORM__SECRET_ENV=TF_SECRET` changes the
//! source named `typeform` (dashes in names are written as underscores). Values are read as TOML
//! scalars or arrays when they parse as such (`100`, `true`, `["A","B"]`), otherwise as strings.
//! Variables without a `__` (such as `LEADGATE_ADMIN_TOKEN`) are not overrides.

use std::collections::BTreeMap;

use toml::{Table, Value};

pub const PREFIX: &str = "LEADGATE_";

/// One override that could not be applied.
#[derive(Debug)]
pub struct OverrideError {
    pub var: String,
    pub reason: String,
}

/// Applies every override in `vars` to `root`; returns, for each dotted key set, the variable that
/// set it, so later errors can name the variable rather than the file.
pub fn apply(
    root: &mut Table,
    vars: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, OverrideError> {
    let mut origin = BTreeMap::new();
    for (var, raw) in vars {
        let Some(rest) = var.strip_prefix(PREFIX) else {
            continue;
        };
        if !rest.contains("__") {
            continue;
        }
        let path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.iter().any(|p| p.is_empty()) {
            return Err(OverrideError {
                var: var.clone(),
                reason: "empty key segment".into(),
            });
        }
        let key = set(root, &path, parse_value(raw)).map_err(|reason| OverrideError {
            var: var.clone(),
            reason,
        })?;
        origin.insert(key, var.clone());
    }
    Ok(origin)
}

fn parse_value(raw: &str) -> Value {
    // A bare word like `0.0.0.0:8080` is not TOML, so it stays a string.
    match format!("v = {raw}").parse::<Table>() {
        Ok(mut t) => t
            .remove("v")
            .unwrap_or_else(|| Value::String(raw.to_string())),
        Err(_) => Value::String(raw.to_string()),
    }
}

/// Sets `path` in `root`, creating tables on the way; returns the dotted key that was set.
fn set(root: &mut Table, path: &[String], value: Value) -> Result<String, String> {
    let (section, rest) = path.split_first().ok_or("empty key")?;
    if section == "sources" {
        let (name, key) = rest
            .split_first()
            .ok_or("sources overrides name the source: LEADGATE_SOURCES__<NAME>__<KEY>")?;
        if key.is_empty() {
            return Err("name a key after the source name".into());
        }
        let list = root
            .get_mut("sources")
            .and_then(Value::as_array_mut)
            .ok_or("there are no [[sources]] to override")?;
        let (idx, table) = list
            .iter_mut()
            .enumerate()
            .find_map(|(i, s)| {
                let t = s.as_table_mut()?;
                let n = t
                    .get("name")?
                    .as_str()?
                    .replace('-', "_")
                    .to_ascii_lowercase();
                (n == *name).then_some((i, t))
            })
            .ok_or_else(|| format!("no source named {name:?}"))?;
        set_in(table, key, value)?;
        return Ok(format!("sources[{idx}].{}", key.join(".")));
    }
    set_in(root, path, value)?;
    Ok(path.join("."))
}

fn set_in(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut t = table;
    for p in parents {
        let entry = t
            .entry(p.clone())
            .or_insert_with(|| Value::Table(Table::new()));
        t = entry
            .as_table_mut()
            .ok_or_else(|| format!("{p} is not a table"))?;
    }
    t.insert(last.clone(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn nested_keys_typed_values_and_sources_by_name() {
        let mut root: Table = r#"
            [server]
            listen = "0.0.0.0:8080"
            [[sources]]
            name = "cal-com"
            scheme = "cal-com"
        "#
        .parse()
        .unwrap();
        let origin = apply(
            &mut root,
            &vars(&[
                ("LEADGATE_SERVER__LISTEN", "127.0.0.1:9000"),
                ("LEADGATE_SERVER__WORKERS", "3"),
                ("LEADGATE_SOURCES__CAL_COM__SECRET_ENV", r#"["A","B"]"#),
                ("LEADGATE_ADMIN_TOKEN", "not-an-override"),
                ("OTHER", "x"),
            ]),
        )
        .unwrap();
        assert_eq!(root["server"]["listen"].as_str(), Some("127.0.0.1:9000"));
        assert_eq!(root["server"]["workers"].as_integer(), Some(3));
        let src = &root["sources"].as_array().unwrap()[0];
        assert_eq!(src["secret_env"].as_array().unwrap().len(), 2);
        assert_eq!(
            origin["sources[0].secret_env"],
            "LEADGATE_SOURCES__CAL_COM__SECRET_ENV"
        );
        assert!(!root.contains_key("admin"));
    }

    #[test]
    fn an_override_for_an_unknown_source_names_the_variable() {
        let mut root: Table = "[[sources]]\nname = \"a\"\n".parse().unwrap();
        let e = apply(&mut root, &vars(&[("LEADGATE_SOURCES__B__SCHEME", "x")])).unwrap_err();
        assert_eq!(e.var, "LEADGATE_SOURCES__B__SCHEME");
        assert!(e.reason.contains("no source named"));
    }
}
