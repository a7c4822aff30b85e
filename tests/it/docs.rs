//! README.md is the operators' manual: it keeps the two set-up commands CI runs, names every
//! metric the code emits and every admin route, and every settings example in it loads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use leadgate::config::{Config, EnvVars};
use leadgate::telemetry::METRIC_DOCS;

use crate::ops::ADMIN_ROUTES;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn readme() -> String {
    std::fs::read_to_string(root().join("README.md")).unwrap()
}

/// The fenced blocks of one language, in order.
fn blocks(text: &str, lang: &str) -> Vec<String> {
    let open = format!("```{lang}");
    let mut out = Vec::new();
    let mut cur: Option<String> = None;
    for line in text.lines() {
        match &mut cur {
            None if line.trim_end() == open => cur = Some(String::new()),
            Some(_) if line.trim_end() == "```" => out.extend(cur.take()),
            Some(b) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn the_readme_starts_with_the_title_and_the_two_set_up_commands() {
    let text = readme();
    let mut lines = text.lines();
    assert_eq!(lines.next(), Some("# leadgate"));
    assert_eq!(lines.next(), Some(""));
    let first = &blocks(&text, "sh")[0];
    assert_eq!(
        first, "cargo run --release -- serve\ncargo test --workspace --locked\n",
        ".ci/run runs the second line"
    );
    assert!(text.contains("## Benchmarks"));
}

#[test]
fn the_readme_documents_every_metric_and_admin_route() {
    let text = readme();
    let names =
        regex::Regex::new(r#"metrics::(?:counter|gauge|histogram)!\(\s*"([a-z_]+)""#).unwrap();
    let mut found = BTreeSet::new();
    let mut stack = vec![root().join("src")];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let src = std::fs::read_to_string(&path).unwrap();
                found.extend(names.captures_iter(&src).map(|c| c[1].to_string()));
            }
        }
    }
    assert!(found.len() >= 10, "the metric macros were found: {found:?}");
    let documented: BTreeSet<&str> = METRIC_DOCS.iter().map(|m| m.name).collect();
    for name in &found {
        assert!(
            documented.contains(name.as_str()),
            "{name} is recorded but not in telemetry::METRIC_DOCS (no HELP line)"
        );
    }
    // README's metric table is METRIC_DOCS: names, types, labels and, without the backticks,
    // the words of each HELP line.
    let rows: Vec<Vec<String>> = text
        .lines()
        .filter(|l| l.starts_with("| `leadgate_"))
        .map(|l| {
            l.trim_matches('|')
                .split('|')
                .map(|c| c.trim().to_string())
                .collect()
        })
        .collect();
    assert_eq!(rows.len(), METRIC_DOCS.len(), "README rows: {rows:?}");
    for (row, m) in rows.iter().zip(METRIC_DOCS) {
        let name = row[0].trim_matches('`');
        assert_eq!(name, m.name, "README's table is in METRIC_DOCS order");
        assert_eq!(row[1], m.kind.as_str(), "{name}: type");
        let labels: Vec<&str> = row[2]
            .split(", ")
            .map(|l| l.trim_matches('`'))
            .filter(|l| !l.is_empty())
            .collect();
        assert_eq!(labels, m.labels, "{name}: labels");
        assert_eq!(row[3].replace('`', ""), m.help, "{name}: meaning vs HELP");
    }
    for (method, path) in ADMIN_ROUTES {
        let route = path
            .split('?')
            .next()
            .unwrap()
            .replace("ada.lovelace@analytical-engines.io", "{email}")
            .replace("/1/", "/{id}/");
        assert!(
            text.contains(&format!("`{method} {route}")),
            "README.md does not document {method} {route}"
        );
    }
}

/// A value for every variable an example names: secrets, and SendGrid's verification key
/// (the key from SendGrid's own library tests).
fn example_env(table: &toml::Table, env: &mut EnvVars) {
    for (k, v) in table {
        match v {
            toml::Value::Table(t) => example_env(t, env),
            toml::Value::Array(items) => {
                for i in items {
                    if let toml::Value::Table(t) = i {
                        example_env(t, env);
                    }
                }
            }
            toml::Value::String(var) if k == "public_key_env" => {
                env.insert(
                    var.clone(),
                    "MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAEEDr2LjtURuePQzplybdC+u4CwrqDqBaWjcMMsTbhdbcwHBcepxo7yAQGhHPTnlvFYPAZFceEu/1FwCM/QmGUhA==".into(),
                );
            }
            toml::Value::String(var) if k.ends_with("_env") => {
                env.insert(var.clone(), "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw".into());
            }
            _ => {}
        }
    }
}

#[test]
fn every_settings_example_in_the_readme_loads() {
    const SECTIONS: &[&str] = &[
        "server",
        "store",
        "admin",
        "log",
        "sources",
        "mapping",
        "qualification",
        "pipeline",
        "crm",
    ];
    let text = readme();
    let mut checked = 0;
    let mut schemes = BTreeSet::new();
    for block in blocks(&text, "toml") {
        let table: toml::Table = block
            .parse()
            .unwrap_or_else(|e| panic!("a README toml block does not parse: {e}\n{block}"));
        if !table.keys().all(|k| SECTIONS.contains(&k.as_str())) {
            continue; // a mapping or rules example
        }
        let mut env = EnvVars::new();
        example_env(&table, &mut env);
        let config = Config::from_toml(&block, "README.md", &root(), &env)
            .unwrap_or_else(|e| panic!("README example does not load: {e}\n{block}"));
        for s in table
            .get("sources")
            .and_then(|s| s.as_array())
            .into_iter()
            .flatten()
        {
            schemes.insert(s["scheme"].as_str().unwrap().to_string());
            if let Some(m) = s.get("mapping").and_then(|m| m.as_str()) {
                // Shipped mappings must exist; the Gravity Forms example is the reader's own copy.
                assert!(
                    Path::new(&root()).join(m).exists() || m.contains("gravity"),
                    "{m} is not in the repository"
                );
            }
        }
        assert!(config.warnings.is_empty(), "{:?}", config.warnings);
        checked += 1;
    }
    assert!(checked >= 20, "only {checked} settings examples found");
    // Every scheme leadgate knows has an example.
    for scheme in leadgate::ingest::verify::SCHEMES {
        if *scheme == "stripe" {
            continue; // described with the generic schemes; Calendly is its worked example
        }
        assert!(
            schemes.contains(*scheme),
            "no README example uses scheme {scheme}"
        );
    }
}

/// The shipped rules files are read as documentation too: what they say the CRM gets on a
/// backward move (a recycle) must be what the delivery worker does and README.md says: a lower
/// stage is withheld, the rest of the record is still sent.
#[test]
fn the_shipped_rules_files_say_a_lower_stage_is_withheld_from_the_crm() {
    const RULE: &str = "a lower stage is withheld";
    assert!(readme().contains(RULE), "README.md no longer says {RULE:?}");
    let asks_backwards =
        regex::Regex::new(r"(?i)\basks?\b[^.;:]*\b(back|backwards|recycle)\b").unwrap();
    let mut files = vec![root().join("rules.toml")];
    for entry in std::fs::read_dir(root().join("rules")).unwrap() {
        files.push(entry.unwrap().path());
    }
    for file in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "toml"))
    {
        let text = std::fs::read_to_string(file).unwrap();
        // Comments only, joined so a sentence can span lines.
        let comments: String = text
            .lines()
            .filter_map(|l| l.trim_start().strip_prefix('#'))
            .map(|l| format!("{} ", l.trim()))
            .collect();
        assert!(
            !asks_backwards.is_match(&comments),
            "{} says leadgate asks the CRM to move a stage back: {:?}",
            file.display(),
            asks_backwards.find(&comments).map(|m| m.as_str())
        );
        if text.contains("[[recycle]]") {
            assert!(
                comments.contains(RULE),
                "{} has recycle rules but does not say {RULE:?}",
                file.display()
            );
        }
    }
}
