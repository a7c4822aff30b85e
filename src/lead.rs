//! Domain types shared by map -> qualify -> outbox -> deliver: the lead's key ([`Email`]), its
//! fields ([`FieldName`]), what a mapping produces from one event ([`LeadPatch`], [`Engagement`]).
//! Values are parsed once, where they enter; later stages never re-check strings.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// A normalised email address: trimmed, lower-cased, syntactically valid, with a dotted domain.
/// It is the lead's key, so two spellings of one address are one lead.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Email(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not a valid email address: {0}")]
pub struct EmailError(&'static str);

impl Email {
    pub fn parse(raw: &str) -> Result<Email, EmailError> {
        let s = raw.trim().trim_start_matches("mailto:").to_lowercase();
        if s.is_empty() {
            return Err(EmailError("empty"));
        }
        if s.len() > 254 {
            return Err(EmailError("longer than 254 characters"));
        }
        let opts = email_address::Options::default()
            .without_display_text()
            .without_domain_literal()
            .with_required_tld();
        email_address::EmailAddress::parse_with_options(&s, opts)
            .map_err(|_| EmailError("not of the form name@example.com"))?;
        if s.contains('"') || s.contains(' ') {
            return Err(EmailError("quoted or spaced local parts are not accepted"));
        }
        Ok(Email(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The part before `@`.
    pub fn local(&self) -> &str {
        self.0.rsplit_once('@').map(|(l, _)| l).unwrap_or("")
    }

    /// The domain, e.g. `example.com`.
    pub fn domain(&self) -> &str {
        self.0.rsplit_once('@').map(|(_, d)| d).unwrap_or("")
    }
}

impl fmt::Display for Email {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for Email {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Email {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Email::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// The lead fields leadgate knows the meaning of. Anything else is a custom field, written
/// `custom.<name>` (e.g. `custom.timeline`), so a typo in a known name is caught by `check`.
pub const KNOWN_FIELDS: &[&str] = &[
    "first_name",
    "last_name",
    "company",
    "job_title",
    "phone",
    "country",
    "company_size_min",
    "company_size_max",
    "industry",
    "website",
    "domain",
    "lead_source",
    "campaign",
    "utm_source",
    "utm_medium",
    "utm_campaign",
    "utm_term",
    "utm_content",
    "consent",
    "form_id",
    "submission_id",
];

/// A lead field name: one of [`KNOWN_FIELDS`] or `custom.<name>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FieldName(String);

impl FieldName {
    pub fn parse(s: &str) -> Result<FieldName, String> {
        if KNOWN_FIELDS.contains(&s) {
            return Ok(FieldName(s.to_string()));
        }
        match s.strip_prefix("custom.") {
            Some(rest)
                if !rest.is_empty()
                    && rest.len() <= 64
                    && rest
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-') =>
            {
                Ok(FieldName(s.to_string()))
            }
            _ => Err(format!(
                "unknown field {s:?}; known fields are {}, or custom.<name> for your own",
                KNOWN_FIELDS.join(", ")
            )),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    pub fn is_custom(&self) -> bool {
        self.0.starts_with("custom.")
    }
}

impl FromStr for FieldName {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        FieldName::parse(s)
    }
}

impl fmt::Display for FieldName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Serialize for FieldName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for FieldName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        FieldName::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// New values for one lead from one event. Values are JSON scalars (string, number, bool).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LeadPatch {
    pub email: Email,
    pub fields: BTreeMap<FieldName, Value>,
    /// When the provider captured the data (submission time), for "newer value wins".
    pub at: DateTime<Utc>,
    /// The source (provider) it came from, for per-field source precedence.
    pub source: String,
}

/// Something a lead did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EngagementKind {
    FormSubmit,
    ContentDownload,
    WebinarSignup,
    MeetingBooked,
    /// An explicit request to be contacted or shown a demo: buying intent.
    DemoRequest,
    ContactRequest,
    EmailOpen,
    EmailClick,
    EmailReply,
    Bounce,
    SpamComplaint,
    Unsubscribe,
}

impl EngagementKind {
    pub const ALL: &'static [EngagementKind] = &[
        EngagementKind::FormSubmit,
        EngagementKind::ContentDownload,
        EngagementKind::WebinarSignup,
        EngagementKind::MeetingBooked,
        EngagementKind::DemoRequest,
        EngagementKind::ContactRequest,
        EngagementKind::EmailOpen,
        EngagementKind::EmailClick,
        EngagementKind::EmailReply,
        EngagementKind::Bounce,
        EngagementKind::SpamComplaint,
        EngagementKind::Unsubscribe,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            EngagementKind::FormSubmit => "form_submit",
            EngagementKind::ContentDownload => "content_download",
            EngagementKind::WebinarSignup => "webinar_signup",
            EngagementKind::MeetingBooked => "meeting_booked",
            EngagementKind::DemoRequest => "demo_request",
            EngagementKind::ContactRequest => "contact_request",
            EngagementKind::EmailOpen => "email_open",
            EngagementKind::EmailClick => "email_click",
            EngagementKind::EmailReply => "email_reply",
            EngagementKind::Bounce => "bounce",
            EngagementKind::SpamComplaint => "spam_complaint",
            EngagementKind::Unsubscribe => "unsubscribe",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        EngagementKind::ALL
            .iter()
            .copied()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| {
                let all: Vec<&str> = EngagementKind::ALL.iter().map(|k| k.as_str()).collect();
                format!(
                    "unknown engagement kind {s:?}; expected one of {}",
                    all.join(", ")
                )
            })
    }
}

/// One engagement event for one lead.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Engagement {
    pub email: Email,
    pub kind: EngagementKind,
    pub at: DateTime<Utc>,
    pub source: String,
    /// Small descriptive attributes (campaign, URL, form id); never personal data.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub detail: BTreeMap<String, String>,
}

/// Everything one stored event mapped to: zero or more lead patches and engagement events.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Mapped {
    pub leads: Vec<LeadPatch>,
    pub engagements: Vec<Engagement>,
}

impl Mapped {
    pub fn is_empty(&self) -> bool {
        self.leads.is_empty() && self.engagements.is_empty()
    }

    /// Every email this event touches, once each, in order.
    pub fn emails(&self) -> Vec<&Email> {
        let mut out: Vec<&Email> = Vec::new();
        for e in self
            .leads
            .iter()
            .map(|l| &l.email)
            .chain(self.engagements.iter().map(|e| &e.email))
        {
            if !out.contains(&e) {
                out.push(e);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_normalised_and_invalid_ones_refused() {
        assert_eq!(
            Email::parse("  Ada.Lovelace@Example.COM ")
                .unwrap()
                .as_str(),
            "ada.lovelace@example.com"
        );
        assert_eq!(Email::parse("mailto:a@b.io").unwrap().as_str(), "a@b.io");
        let e = Email::parse("Ada+leads@sub.example.co.uk").unwrap();
        assert_eq!((e.local(), e.domain()), ("ada+leads", "sub.example.co.uk"));
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "ada@localhost",
            "a b@example.com",
            "Ada <a@b.io>",
            "a@[1.2.3.4]",
        ] {
            assert!(Email::parse(bad).is_err(), "{bad:?} should be refused");
        }
    }

    #[test]
    fn field_names_are_known_or_custom() {
        assert!(FieldName::parse("job_title").is_ok());
        assert!(FieldName::parse("custom.timeline").is_ok());
        let e = FieldName::parse("jobtitle").unwrap_err();
        assert!(e.contains("unknown field \"jobtitle\""), "{e}");
        assert!(FieldName::parse("custom.").is_err());
        assert!(FieldName::parse("custom.a b").is_err());
    }

    #[test]
    fn engagement_kinds_round_trip_their_names() {
        for k in EngagementKind::ALL {
            assert_eq!(EngagementKind::parse(k.as_str()), Ok(*k));
            assert_eq!(
                serde_json::to_value(k).unwrap(),
                Value::String(k.as_str().into())
            );
        }
        assert!(EngagementKind::parse("click").is_err());
    }

    #[test]
    fn mapped_lists_each_email_once() {
        let a = Email::parse("a@x.io").unwrap();
        let at = DateTime::<Utc>::from_timestamp(0, 0).unwrap();
        let m = Mapped {
            leads: vec![LeadPatch {
                email: a.clone(),
                fields: BTreeMap::new(),
                at,
                source: "s".into(),
            }],
            engagements: vec![Engagement {
                email: a.clone(),
                kind: EngagementKind::FormSubmit,
                at,
                source: "s".into(),
                detail: BTreeMap::new(),
            }],
        };
        assert_eq!(m.emails(), vec![&a]);
    }
}
