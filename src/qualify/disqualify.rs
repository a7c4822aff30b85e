//! Disqualifiers: facts that mean "never hand this lead over", whatever its points say.
//!
//! - the address: a disposable or reserved domain, a role mailbox (`info@`), a competitor's
//!   domain, optionally a free-mail domain (the shipped rules score free mail with negative
//!   points instead);
//! - what happened to it: a bounce, a spam complaint, an unsubscribe;
//! - named conditions on its fields (e.g. "student or intern").
//!
//! The free-mail and disposable lists ship as data files (`data/*.txt`) built into the binary;
//! a rules file can add domains but not remove shipped ones.
//! Disqualification is sticky: once any reason held, the lead stays disqualified (see
//! [`super::state::Disqualification`]).

use std::collections::BTreeSet;
use std::fmt;

use serde::{Deserialize, Serialize};

use super::condition::{self, Condition, Lead, RawCondition};
use super::rules::{parse_kind, Errors};
use super::state::EngagementHistory;
use crate::lead::{Email, EngagementKind};

const FREE_MAIL: &str = include_str!("data/free_mail.txt");
const DISPOSABLE: &str = include_str!("data/disposable.txt");

/// `[disqualify]` as written. Everything is off unless the rules file turns it on: the rules
/// file is the agreement, so nothing disqualifies a lead that it does not name.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(crate) struct RawDisqualify {
    free_mail: bool,
    disposable: bool,
    reserved: bool,
    role_addresses: Vec<String>,
    competitor_domains: Vec<String>,
    extra_free_mail_domains: Vec<String>,
    extra_disposable_domains: Vec<String>,
    events: Vec<String>,
    rules: Vec<RawDqRule>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDqRule {
    name: String,
    when: RawCondition,
}

/// What kind of address an email is; usable in conditions as `{ email = "<class>" }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EmailClass {
    FreeMail,
    Disposable,
    Role,
    Competitor,
    Reserved,
}

impl EmailClass {
    const NAMES: &'static [(&'static str, EmailClass)] = &[
        ("free_mail", EmailClass::FreeMail),
        ("disposable", EmailClass::Disposable),
        ("role", EmailClass::Role),
        ("competitor", EmailClass::Competitor),
        ("reserved", EmailClass::Reserved),
    ];

    pub(crate) fn parse(s: &str) -> Result<EmailClass, String> {
        Self::NAMES
            .iter()
            .find(|(n, _)| *n == s)
            .map(|(_, c)| *c)
            .ok_or_else(|| {
                let names: Vec<&str> = Self::NAMES.iter().map(|(n, _)| *n).collect();
                format!(
                    "unknown email class {s:?}; expected one of {}",
                    names.join(", ")
                )
            })
    }
}

/// The classes one address belongs to, computed once per decision.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct EmailClasses {
    pub free_mail: bool,
    pub disposable: bool,
    pub role: bool,
    pub competitor: bool,
    pub reserved: bool,
}

impl EmailClasses {
    pub(crate) fn has(&self, c: EmailClass) -> bool {
        match c {
            EmailClass::FreeMail => self.free_mail,
            EmailClass::Disposable => self.disposable,
            EmailClass::Role => self.role,
            EmailClass::Competitor => self.competitor,
            EmailClass::Reserved => self.reserved,
        }
    }
}

/// Why a lead is disqualified. Ordered by how strong the evidence is, so the first reason of a
/// sorted list is the one to show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DqCode {
    Reserved,
    Disposable,
    Competitor,
    Role,
    FreeMail,
    Bounce,
    SpamComplaint,
    Unsubscribe,
    Rule,
    SalesFeedback,
}

/// One disqualification reason: a code and what triggered it (a domain, `info@`, a rule name).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct DqReason {
    pub code: DqCode,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub detail: String,
}

impl fmt::Display for DqReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let d = &self.detail;
        match self.code {
            DqCode::Reserved => write!(f, "reserved domain, not a real address ({d})"),
            DqCode::Disposable => write!(f, "disposable email domain ({d})"),
            DqCode::Competitor => write!(f, "competitor domain ({d})"),
            DqCode::Role => write!(f, "role address ({d})"),
            DqCode::FreeMail => write!(f, "free-mail address ({d})"),
            DqCode::Bounce => f.write_str("email bounced"),
            DqCode::SpamComplaint => f.write_str("spam complaint"),
            DqCode::Unsubscribe => f.write_str("unsubscribed"),
            DqCode::Rule => f.write_str(d),
            DqCode::SalesFeedback => f.write_str("disqualified by sales"),
        }
    }
}

/// A set of domains; an entry matches itself and its subdomains.
#[derive(Debug, Clone, Default)]
struct DomainList(BTreeSet<String>);

impl DomainList {
    fn from_text(text: &str) -> DomainList {
        DomainList(
            text.lines()
                .map(|l| l.split('#').next().unwrap_or("").trim().to_lowercase())
                .filter(|l| !l.is_empty())
                .collect(),
        )
    }

    /// The listed domain `domain` falls under, if any.
    fn find<'a>(&self, domain: &'a str) -> Option<&'a str> {
        let mut d = domain;
        loop {
            if self.0.contains(d) {
                return Some(d);
            }
            d = d.split_once('.')?.1;
        }
    }
}

/// `[disqualify]`, parsed.
#[derive(Debug)]
pub(crate) struct Disqualifiers {
    free_mail: DomainList,
    disposable: DomainList,
    competitors: DomainList,
    role_local_parts: BTreeSet<String>,
    free_mail_disqualifies: bool,
    disposable_disqualifies: bool,
    reserved_disqualifies: bool,
    events: Vec<EngagementKind>,
    rules: Vec<(String, Condition)>,
}

/// RFC 2606 / 6761 names: nobody receives mail there, so a lead with one typed a fake address.
fn is_reserved(domain: &str) -> bool {
    const SECOND_LEVEL: &[&str] = &["example.com", "example.net", "example.org"];
    const TLDS: &[&str] = &["test", "example", "invalid", "localhost", "local"];
    SECOND_LEVEL
        .iter()
        .any(|s| domain == *s || domain.ends_with(&format!(".{s}")))
        || domain
            .rsplit('.')
            .next()
            .is_some_and(|tld| TLDS.contains(&tld))
}

impl Disqualifiers {
    pub(crate) fn classify(&self, email: &Email) -> EmailClasses {
        let domain = email.domain();
        let local = email.local();
        // `info+leads@` is still the info mailbox.
        let base = local.split('+').next().unwrap_or(local);
        EmailClasses {
            free_mail: self.free_mail.find(domain).is_some(),
            disposable: self.disposable.find(domain).is_some(),
            role: self.role_local_parts.contains(base),
            competitor: self.competitors.find(domain).is_some(),
            reserved: is_reserved(domain),
        }
    }

    /// Every disqualifier that holds for the lead now, sorted strongest first.
    pub(crate) fn check(&self, lead: &Lead<'_>, history: &EngagementHistory) -> Vec<DqReason> {
        let mut out = Vec::new();
        let domain = lead.email.domain();
        let c = lead.classes;
        let reason = |code, detail: &str| DqReason {
            code,
            detail: detail.to_string(),
        };
        if self.reserved_disqualifies && c.reserved {
            out.push(reason(DqCode::Reserved, domain));
        }
        if self.disposable_disqualifies {
            if let Some(d) = self.disposable.find(domain) {
                out.push(reason(DqCode::Disposable, d));
            }
        }
        if let Some(d) = self.competitors.find(domain) {
            out.push(reason(DqCode::Competitor, d));
        }
        if c.role {
            let base = lead.email.local().split('+').next().unwrap_or("");
            out.push(reason(DqCode::Role, &format!("{base}@")));
        }
        if self.free_mail_disqualifies {
            if let Some(d) = self.free_mail.find(domain) {
                out.push(reason(DqCode::FreeMail, d));
            }
        }
        for kind in &self.events {
            if history.count(*kind) > 0 {
                let code = match kind {
                    EngagementKind::Bounce => DqCode::Bounce,
                    EngagementKind::SpamComplaint => DqCode::SpamComplaint,
                    _ => DqCode::Unsubscribe,
                };
                out.push(reason(code, ""));
            }
        }
        for (name, cond) in &self.rules {
            if cond.holds(lead) {
                out.push(reason(DqCode::Rule, name));
            }
        }
        out.sort();
        out.dedup();
        out
    }
}

/// The engagement kinds that can disqualify: the ones that say the address does not work or its
/// owner does not want to hear from us.
const DQ_EVENTS: &[EngagementKind] = &[
    EngagementKind::Bounce,
    EngagementKind::SpamComplaint,
    EngagementKind::Unsubscribe,
];

pub(crate) fn build(raw: RawDisqualify, errs: &mut Errors) -> Disqualifiers {
    let mut free_mail = DomainList::from_text(FREE_MAIL);
    let mut disposable = DomainList::from_text(DISPOSABLE);
    let mut competitors = DomainList::default();
    let lists = [
        (
            "extra_free_mail_domains",
            &raw.extra_free_mail_domains,
            &mut free_mail,
        ),
        (
            "extra_disposable_domains",
            &raw.extra_disposable_domains,
            &mut disposable,
        ),
        (
            "competitor_domains",
            &raw.competitor_domains,
            &mut competitors,
        ),
    ];
    for (name, input, list) in lists {
        for (i, d) in input.iter().enumerate() {
            let d = d.trim().to_lowercase();
            if !looks_like_domain(&d) {
                errs.push(
                    format!("disqualify.{name}[{i}]"),
                    format!("{d:?} is not a domain like example.com (no @, at least one dot)"),
                );
            } else {
                list.0.insert(d);
            }
        }
    }
    let mut role_local_parts = BTreeSet::new();
    for (i, r) in raw.role_addresses.iter().enumerate() {
        let r = r.trim().trim_end_matches('@').to_lowercase();
        if r.is_empty() || r.contains('@') || r.contains(char::is_whitespace) {
            errs.push(
                format!("disqualify.role_addresses[{i}]"),
                "expected the part before @, e.g. \"info\"",
            );
        } else {
            role_local_parts.insert(r);
        }
    }
    let mut events = Vec::new();
    for (i, k) in raw.events.iter().enumerate() {
        let key = format!("disqualify.events[{i}]");
        let Some(k) = parse_kind(k, &key, errs) else {
            continue;
        };
        if DQ_EVENTS.contains(&k) {
            events.push(k);
        } else {
            errs.push(
                key,
                format!(
                    "{} cannot disqualify; only bounce, spam_complaint and unsubscribe can",
                    k.as_str()
                ),
            );
        }
    }
    let mut rules = Vec::new();
    let mut names = BTreeSet::new();
    for (i, r) in raw.rules.iter().enumerate() {
        let key = format!("disqualify.rules[{i}]");
        if r.name.trim().is_empty() || !names.insert(r.name.clone()) {
            errs.push(
                format!("{key}.name"),
                "each rule needs a unique, non-empty name (it is the reason shown)",
            );
        }
        if let Some(c) = condition::build(&r.when, &format!("{key}.when"), errs) {
            rules.push((r.name.clone(), c));
        }
    }
    Disqualifiers {
        free_mail,
        disposable,
        competitors,
        role_local_parts,
        free_mail_disqualifies: raw.free_mail,
        disposable_disqualifies: raw.disposable,
        reserved_disqualifies: raw.reserved,
        events,
        rules,
    }
}

fn looks_like_domain(d: &str) -> bool {
    d.contains('.')
        && !d.starts_with('.')
        && !d.ends_with('.')
        && d.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dq(toml_text: &str) -> Disqualifiers {
        let raw: RawDisqualify = toml::from_str(toml_text).unwrap();
        let mut errs = Errors::new("t.toml");
        let d = build(raw, &mut errs);
        errs.finish(d).unwrap()
    }

    fn classes(d: &Disqualifiers, email: &str) -> EmailClasses {
        d.classify(&Email::parse(email).unwrap())
    }

    #[test]
    fn shipped_lists_load_and_match_subdomains() {
        let d = dq("");
        assert!(d.free_mail.0.len() > 100, "{}", d.free_mail.0.len());
        assert!(d.disposable.0.len() > 50, "{}", d.disposable.0.len());
        assert!(classes(&d, "a@gmail.com").free_mail);
        assert!(classes(&d, "a@eu.mailinator.com").disposable);
        assert!(!classes(&d, "a@notgmail.com").free_mail);
        assert!(classes(&d, "a@shop.example.com").reserved);
        assert!(classes(&d, "a@x.test").reserved);
        assert!(!classes(&d, "a@examples.com").reserved);
    }

    #[test]
    fn role_addresses_ignore_plus_tags_and_competitors_match_subdomains() {
        let d = dq(r#"role_addresses = ["info", "sales@"]
                      competitor_domains = ["Rival.io"]"#);
        assert!(classes(&d, "info+leads@acme.io").role);
        assert!(classes(&d, "sales@acme.io").role);
        assert!(!classes(&d, "information@acme.io").role);
        assert!(classes(&d, "pat@eu.rival.io").competitor);
    }

    #[test]
    fn bad_entries_are_named() {
        let raw: RawDisqualify = toml::from_str(
            r#"competitor_domains = ["rival"]
               role_addresses = [" "]
               events = ["email_open", "click"]"#,
        )
        .unwrap();
        let mut errs = Errors::new("t.toml");
        let d = build(raw, &mut errs);
        let errs = errs.finish(d).unwrap_err();
        let keys: Vec<&str> = errs.iter().map(|e| e.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "disqualify.competitor_domains[0]",
                "disqualify.role_addresses[0]",
                "disqualify.events[0]",
                "disqualify.events[1]",
            ]
        );
        assert!(errs[2].reason.contains("email_open cannot disqualify"));
        assert!(errs[3].reason.contains("unknown engagement kind \"click\""));
    }
}
