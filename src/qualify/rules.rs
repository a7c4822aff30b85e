//! The rules file: TOML text -> typed [`Rules`], parsed once at start.
//!
//! Structural mistakes (unknown keys, wrong types) are found by serde with `deny_unknown_fields`
//! and reported with their key path; everything else (unknown fields, stage names and engagement
//! kinds, bad regexes, thresholds out of order, ...) is checked afterwards and **all** problems
//! are returned at once, each as `file: key: reason`.

use std::fmt;
use std::path::Path;

use serde::Deserialize;
use sha2::{Digest, Sha256};

use super::disqualify::{self, Disqualifiers, RawDisqualify};
use super::funnel::{self, Funnel, RawBant, RawRecycle, RawStage, StageDef};
use super::score::{self, EngagementModel, FitModel, RawEngagement, RawFit};
use super::state::{self, FieldPrecedence, RawFields};
use crate::config::CrmKind;
use crate::lead::EngagementKind;

/// The shipped default rules (`rules.toml` at the repository root), used when the settings name
/// no rules file.
pub const EMBEDDED_RULES: &str = include_str!("../../rules.toml");

/// How errors name the embedded rules.
pub const EMBEDDED_ORIGIN: &str = "<embedded rules.toml>";

/// One problem in a rules file: where (file and dotted key) and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct RulesError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for RulesError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

/// Collects errors while building; the builders keep going so one run reports everything.
pub(crate) struct Errors {
    file: String,
    list: Vec<RulesError>,
}

impl Errors {
    pub(crate) fn new(file: &str) -> Errors {
        Errors {
            file: file.to_string(),
            list: Vec::new(),
        }
    }

    pub(crate) fn push(&mut self, key: impl Into<String>, reason: impl Into<String>) {
        self.list.push(RulesError {
            file: self.file.clone(),
            key: key.into(),
            reason: reason.into(),
        });
    }

    /// `value` if nothing was reported.
    pub(crate) fn finish<T>(self, value: T) -> Result<T, Vec<RulesError>> {
        if self.list.is_empty() {
            Ok(value)
        } else {
            Err(self.list)
        }
    }
}

pub(crate) fn parse_kind(s: &str, key: &str, errs: &mut Errors) -> Option<EngagementKind> {
    EngagementKind::parse(s)
        .map_err(|reason| errs.push(key, reason))
        .ok()
}

/// Parses a list of engagement kinds; unknown ones are reported as `key[i]` and left out.
pub(crate) fn parse_kinds(list: &[String], key: &str, errs: &mut Errors) -> Vec<EngagementKind> {
    list.iter()
        .enumerate()
        .filter_map(|(i, s)| parse_kind(s, &format!("{key}[{i}]"), errs))
        .collect()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRules {
    #[serde(default = "default_disqualified_stage")]
    disqualified_stage: String,
    #[serde(default)]
    stages: Vec<RawStage>,
    #[serde(default)]
    fields: RawFields,
    #[serde(default)]
    fit: RawFit,
    #[serde(default)]
    engagement: RawEngagement,
    bant: Option<RawBant>,
    #[serde(default)]
    disqualify: RawDisqualify,
    #[serde(default)]
    recycle: Vec<RawRecycle>,
}

fn default_disqualified_stage() -> String {
    "disqualified".to_string()
}

/// The agreed funnel definition, parsed and checked. Cheap to share (`Arc<Rules>`); evaluation
/// never parses strings or compiles regexes.
#[derive(Debug)]
pub struct Rules {
    origin: String,
    version: String,
    pub(crate) funnel: Funnel,
    pub(crate) fields: FieldPrecedence,
    pub(crate) fit: FitModel,
    pub(crate) engagement: EngagementModel,
    pub(crate) disqualify: Disqualifiers,
}

impl Rules {
    /// Loads the rules file at `path`, or the embedded default when `None`.
    pub fn load(path: Option<&Path>) -> Result<Rules, Vec<RulesError>> {
        match path {
            None => Rules::parse(EMBEDDED_RULES, EMBEDDED_ORIGIN),
            Some(p) => {
                let origin = p.display().to_string();
                let text = std::fs::read_to_string(p).map_err(|e| {
                    vec![RulesError {
                        file: origin.clone(),
                        key: String::new(),
                        reason: format!("cannot read: {e}"),
                    }]
                })?;
                Rules::parse(&text, &origin)
            }
        }
    }

    /// Parses rules from TOML text; `origin` names the file in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Rules, Vec<RulesError>> {
        let mut errs = Errors::new(origin);
        let tree: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                errs.push(syntax_error_key(text, &e), e.message().to_string());
                return Err(errs.list);
            }
        };
        let raw: RawRules = match serde_path_to_error::deserialize(toml::Value::Table(tree)) {
            Ok(r) => r,
            Err(e) => {
                let key = e.path().to_string();
                let key = if key == "." { String::new() } else { key };
                errs.push(key, e.inner().message().to_string());
                return Err(errs.list);
            }
        };
        let disqualify = disqualify::build(raw.disqualify, &mut errs);
        let fields = state::build_precedence(raw.fields, &mut errs);
        let fit = score::build_fit(raw.fit, &mut errs);
        let engagement = score::build_engagement(raw.engagement, &mut errs);
        let funnel = funnel::build(
            &raw.disqualified_stage,
            raw.stages,
            raw.bant,
            raw.recycle,
            &mut errs,
        );
        errs.finish(Rules {
            origin: origin.to_string(),
            version: version_of(text.as_bytes()),
            funnel,
            fields,
            fit,
            engagement,
            disqualify,
        })
    }

    /// The rules version: the first 12 hex digits of the SHA-256 of the file's bytes. Recorded on
    /// every decision, so a lead's history says which agreement put it where it is.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// Where the rules came from (a path or [`EMBEDDED_ORIGIN`]).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    /// The funnel's stages in order (position = rank).
    pub fn stages(&self) -> &[StageDef] {
        self.funnel.stages()
    }

    /// Stages a recycle rule can move leads out of; leads there are re-checked periodically,
    /// because "no activity for 120 days" becomes true without any new event.
    pub fn recycle_sources(&self) -> Vec<String> {
        self.funnel
            .recycle_sources()
            .into_iter()
            .map(str::to_string)
            .collect()
    }

    /// The stage disqualifiers move a lead to (validated to be the last one).
    pub fn disqualified_rank(&self) -> u32 {
        self.stages().len().saturating_sub(1) as u32
    }

    pub fn stage(&self, name: &str) -> Option<&StageDef> {
        self.funnel.id(name).map(|id| self.funnel.get(id))
    }

    /// The CRM property values the rules give `stage` for one connector.
    pub fn stage_values(
        &self,
        stage: &str,
        crm: CrmKind,
    ) -> std::collections::BTreeMap<String, String> {
        self.stage(stage)
            .map(|s| s.crm_values(crm))
            .unwrap_or_default()
    }
}

pub(crate) fn version_of(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut hex = hex::encode(digest);
    hex.truncate(12);
    hex
}

/// A TOML syntax error has a position, not a key: name the line.
fn syntax_error_key(text: &str, e: &toml::de::Error) -> String {
    match e.span() {
        Some(span) => {
            let before = &text.as_bytes()[..span.start.min(text.len())];
            format!(
                "line {}",
                before.iter().filter(|b| **b == b'\n').count() + 1
            )
        }
        None => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAGES: &str = r#"
[[stages]]
name = "new"
owner = "marketing"
[[stages]]
name = "warm"
owner = "marketing"
enter = { fit_min = 10 }
[[stages]]
name = "hot"
owner = "marketing"
enter = { fit_min = 20 }
[[stages]]
name = "disqualified"
owner = "marketing"
"#;

    /// The errors for `STAGES` plus `extra`, as (key, reason).
    fn errors(extra: &str) -> Vec<(String, String)> {
        let text = format!("{STAGES}\n{extra}");
        match Rules::parse(&text, "rules.toml") {
            Ok(_) => vec![],
            Err(errs) => errs
                .into_iter()
                .inspect(|e| assert_eq!(e.file, "rules.toml"))
                .map(|e| (e.key, e.reason))
                .collect(),
        }
    }

    fn has(errs: &[(String, String)], key: &str, reason: &str) -> bool {
        errs.iter().any(|(k, r)| k == key && r.contains(reason))
    }

    #[test]
    fn a_minimal_file_and_both_shipped_files_load() {
        assert_eq!(errors(""), Vec::<(String, String)>::new());
        let r = Rules::load(None).unwrap();
        assert_eq!(r.origin(), EMBEDDED_ORIGIN);
        assert_eq!(r.version(), version_of(EMBEDDED_RULES.as_bytes()));
        let w = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/rules/waterfall.toml"));
        assert!(Rules::load(Some(w)).is_ok());
    }

    #[test]
    fn unknown_fields_are_named() {
        let e = errors(
            "[[fit.rules]]\nname = \"t\"\npoints = 1\nwhen = { field = \"jobtitle\", exists = true }",
        );
        assert!(
            has(&e, "fit.rules[0].when.field", "unknown field \"jobtitle\""),
            "{e:?}"
        );
    }

    #[test]
    fn bad_regexes_are_named() {
        let e = errors(
            "[[fit.rules]]\nname = \"t\"\npoints = 1\nwhen = { field = \"job_title\", matches = \"(vp\" }",
        );
        assert_eq!(
            e,
            [(
                "fit.rules[0].when.matches".to_string(),
                "bad regex: unclosed group".to_string()
            )]
        );
    }

    #[test]
    fn unknown_stage_names_are_named() {
        let e =
            errors("[[recycle]]\nname = \"r\"\nfrom = [\"hot\"]\nto = \"cold\"\ninactive_days = 5");
        assert_eq!(
            e,
            [(
                "recycle[0].to".to_string(),
                "unknown stage \"cold\"; the stages are new, warm, hot, disqualified".to_string()
            )]
        );
        let e = errors(
            "[[stages]]\nname = \"sal\"\nowner = \"sales\"\nenter = { requires_stage = \"accepted\" }",
        );
        assert!(
            has(
                &e,
                "stages[4].enter.requires_stage",
                "unknown stage \"accepted\""
            ),
            "{e:?}"
        );
        let e = Rules::parse(
            &format!("disqualified_stage = \"junk\"\n{STAGES}"),
            "r.toml",
        )
        .unwrap_err();
        assert_eq!(e[0].key, "disqualified_stage");
        assert!(e[0].reason.starts_with("unknown stage \"junk\""));
    }

    #[test]
    fn thresholds_out_of_order_are_named() {
        let text = STAGES.replace("enter = { fit_min = 20 }", "enter = { fit_min = 5 }");
        let e = Rules::parse(&text, "r.toml").unwrap_err();
        assert_eq!(e[0].key, "stages[2].enter.fit_min");
        assert_eq!(
            e[0].reason,
            "thresholds out of order: 5 is lower than the 10 that the earlier stage \"warm\" requires"
        );
        let e = errors(
            "[bant]\nthreshold = 3\nneed = { field = \"custom.need\", exists = true }\n\
             timeline = { field = \"custom.timeline\", exists = true }",
        );
        assert!(
            has(
                &e,
                "bant.threshold",
                "3 must be between 1 and the 2 criteria"
            ),
            "{e:?}"
        );
        let e = errors(
            "[[fit.rules]]\nname = \"t\"\npoints = 1\n\
             when = { field = \"company_size_min\", range = { min = 200, max = 51 } }",
        );
        assert!(
            has(
                &e,
                "fit.rules[0].when.range",
                "min 200 is greater than max 51"
            ),
            "{e:?}"
        );
        let e =
            errors("[[recycle]]\nname = \"r\"\nfrom = [\"warm\"]\nto = \"hot\"\ninactive_days = 5");
        assert!(
            has(&e, "recycle[0].from[0]", "does not rank below \"warm\""),
            "{e:?}"
        );
    }

    #[test]
    fn unknown_engagement_kinds_are_named() {
        let e = errors("[[engagement.rules]]\nname = \"v\"\npoints = 1\nkinds = [\"page_view\"]");
        assert!(
            has(
                &e,
                "engagement.rules[0].kinds[0]",
                "unknown engagement kind \"page_view\""
            ),
            "{e:?}"
        );
        let text = STAGES.replace(
            "enter = { fit_min = 10 }",
            "enter = { events = { kinds = [\"form_fill\"] } }",
        );
        let e = Rules::parse(&text, "r.toml").unwrap_err();
        assert_eq!(e[0].key, "stages[1].enter.events.kinds[0]");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_named() {
        let e = errors("[fit]\ncaps = 3");
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].0, "fit.caps");
        assert!(e[0].1.contains("unknown field `caps`"), "{e:?}");
        let e = errors("[[stages]\nname = 1");
        assert_eq!(e[0].0, "line 17"); // the broken table header
        let e = Rules::load(Some(Path::new("/nonexistent/rules.toml"))).unwrap_err();
        assert_eq!(
            e[0].to_string().split(": ").next(),
            Some("/nonexistent/rules.toml")
        );
        assert!(e[0].reason.starts_with("cannot read"));
    }

    #[test]
    fn the_funnel_shape_is_checked() {
        // An automatic stage after one only sales sets must wait for it.
        let e = errors(
            "[[stages]]\nname = \"sal\"\nowner = \"sales\"\n\
             [[stages]]\nname = \"won\"\nowner = \"sales\"\nenter = { fit_min = 50 }",
        );
        assert!(
            has(&e, "stages[5].enter", "add requires_stage = \"sal\""),
            "{e:?}"
        );
        // ... and the disqualified stage must be last.
        assert!(
            has(&e, "disqualified_stage", "must be the last stage"),
            "{e:?}"
        );
        let text = STAGES.replacen(
            "name = \"new\"\nowner = \"marketing\"",
            "name = \"new\"\nowner = \"marketing\"\nenter = { fit_min = 1 }",
            1,
        );
        let e = Rules::parse(&text, "r.toml").unwrap_err();
        assert_eq!(e[0].key, "stages[0].enter");
        let text = STAGES.replace("enter = { fit_min = 10 }", "enter = {}");
        let e = Rules::parse(&text, "r.toml").unwrap_err();
        assert!(e[0].reason.starts_with("no criteria"), "{e:?}");
        let e = errors("[[stages]]\nname = \"Hot Leads\"\nowner = \"sales\"");
        assert!(has(&e, "stages[4].name", "is not a stage name"), "{e:?}");
        let e = errors("[[stages]]\nname = \"x\"\nowner = \"sales\"\ncrm.hubspotx = { a = \"b\" }");
        assert!(
            has(&e, "stages[4].crm.hubspotx", "unknown CRM connector"),
            "{e:?}"
        );
    }

    #[test]
    fn every_problem_is_reported_in_one_run() {
        let e = errors(
            "[[fit.rules]]\nname = \"a\"\npoints = 1\nwhen = { field = \"jobtitle\", exists = true }\n\
             [[fit.rules]]\nname = \"b\"\npoints = 1\nwhen = { field = \"job_title\", matches = \"[\" }\n\
             [[engagement.rules]]\nname = \"c\"\npoints = 1\nkinds = [\"click\"]\n\
             [[recycle]]\nname = \"r\"\nfrom = [\"hott\"]\nto = \"new\"\ninactive_days = 1",
        );
        let keys: Vec<&str> = e.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "fit.rules[0].when.field",
                "fit.rules[1].when.matches",
                "engagement.rules[0].kinds[0]",
                "recycle[0].from[0]",
            ]
        );
    }

    #[test]
    fn errors_display_as_file_key_reason() {
        let e = RulesError {
            file: "rules.toml".into(),
            key: "fit.rules[0].when.field".into(),
            reason: "unknown field".into(),
        };
        assert_eq!(
            e.to_string(),
            "rules.toml: fit.rules[0].when.field: unknown field"
        );
    }
}
