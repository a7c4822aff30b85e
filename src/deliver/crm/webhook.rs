//! Generic webhook: POSTs each lead as JSON to a configured URL, signed with the Standard
//! Webhooks scheme (`webhook-id`, `webhook-timestamp`, `webhook-signature: v1,<base64>`) through
//! the same verifier code that checks inbound Standard Webhooks, so both sides agree by
//! construction. `webhook-id` is stable per lead version, so a receiver can drop redeliveries.

use std::sync::Arc;
use std::time::SystemTime;

use async_trait::async_trait;
use reqwest::Method;
use serde_json::{json, Value};
use sha2::Digest;

use super::{BuildError, Connector, Delivered, Http, Item, PreparedRequest, Request};
use crate::config::{CrmAuth, CrmConfig, CrmKind, RateLimit};
use crate::deliver::limiter::PauseReason;
use crate::deliver::retry::{classify_status, retry_after, Failure, StatusClass};
use crate::ingest::verify::{self, Outbound, SchemeOptions, Verifier};

/// The event type in the payload.
pub const EVENT_TYPE: &str = "lead.updated";

pub struct Webhook {
    http: Http,
    url: String,
    signer: Option<Arc<dyn Verifier>>,
    batch_size: usize,
    /// The signing secret's variable, for the refused-credentials alarm.
    credentials: String,
}

impl std::fmt::Debug for Webhook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhook")
            .field("batch_size", &self.batch_size)
            .finish()
    }
}

impl Webhook {
    pub fn new(config: &CrmConfig, http: Http) -> Result<Self, BuildError> {
        let signer = match &config.auth {
            CrmAuth::SigningSecret(s) => Some(Arc::from(
                verify::build(
                    "standard-webhooks",
                    &SchemeOptions::default(),
                    vec![s.clone()],
                )
                .map_err(|e| BuildError::Config(format!("crm.secret_env: {}", e.reason)))?,
            )),
            _ => None,
        };
        Ok(Self {
            http,
            url: config.base_url.clone(),
            signer,
            batch_size: config.batch_size,
            credentials: config.credentials.clone(),
        })
    }

    /// `{"type", "timestamp", "data"}`, the Standard Webhooks payload shape. A withheld stage
    /// (it would lower the receiver's) is left out of `data`.
    pub fn payload(item: &Item) -> Value {
        let mut data = serde_json::to_value(&item.update).unwrap_or(Value::Null);
        if !item.send_stage {
            if let Some(o) = data.as_object_mut() {
                for k in ["stage", "stage_rank", "stage_values"] {
                    o.remove(k);
                }
            }
        }
        // The event's time, not the send time: the same in every retry of one webhook-id.
        if let Some(o) = data.as_object_mut() {
            o.remove("at");
        }
        let at = item.update.at.unwrap_or_else(chrono::Utc::now);
        json!({
            "type": EVENT_TYPE,
            "timestamp": at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true),
            "data": data,
        })
    }

    /// Stable per lead version and free of personal data: a hash of the email plus the version.
    pub fn message_id(item: &Item) -> String {
        let h = sha2::Sha256::digest(item.update.email.as_str().as_bytes());
        format!("msg_{}_{}", hex::encode(&h[..8]), item.update.version)
    }

    /// The POST for one lead, signed at `now` (the Standard Webhooks headers over the exact
    /// body), or for a preview (`now`: None) with placeholders for the time and signature.
    fn request(&self, item: &Item, now: Option<SystemTime>) -> Result<Request, Failure> {
        let payload = Self::payload(item);
        let id = Self::message_id(item);
        let req = Request::new(Method::POST, self.url.clone())
            .json(payload.clone())
            .header("webhook-id", id.clone());
        let Some(now) = now else {
            return Ok(req
                .header("webhook-timestamp", "<unix seconds>")
                .credential("webhook-signature", "v1,", None));
        };
        let Some(signer) = &self.signer else {
            return Err(Failure::Permanent(
                "webhook: no signing secret configured".into(),
            ));
        };
        let body = serde_json::to_vec(&payload)
            .map_err(|e| Failure::Permanent(format!("webhook: cannot encode the lead: {e}")))?;
        let mut out = Outbound::new(self.url.clone(), "application/json", body);
        out.now = now;
        out.set_header("webhook-id", id);
        signer
            .sign(&mut out)
            .map_err(|e| Failure::Permanent(format!("webhook: cannot sign: {e}")))?;
        let signed = |name: &str| out.header(name).unwrap_or_default().to_string();
        Ok(req
            .header("webhook-timestamp", signed("webhook-timestamp"))
            .header("webhook-signature", signed("webhook-signature")))
    }

    async fn one(&self, item: &Item) -> Result<Delivered, Failure> {
        let req = self.request(item, Some(SystemTime::now()))?;
        let a = self.http.send(&req).await?;
        if (300..400).contains(&a.status) {
            return Err(Failure::Permanent(format!(
                "webhook {}: a redirect; leadgate does not follow redirects (Standard Webhooks): set crm.url to the final URL, then replay",
                a.status
            )));
        }
        if a.status == 410 {
            // Standard Webhooks: the receiver says this endpoint is gone for good. Stop sending
            // there until an operator resumes; this lead waits in dead letters.
            self.http
                .limiter
                .pause_until_resumed(PauseReason::EndpointGone);
            tracing::error!(
                crm = "webhook",
                status = 410,
                "the webhook receiver answered 410 Gone: delivery is stopped; fix crm.url or the receiver, then run `leadgate replay --dead-letters` (or POST /admin/dead-letters/{{id}}/replay) to resume"
            );
            return Err(Failure::Permanent(
                "webhook 410 Gone: the receiver no longer accepts deliveries at this URL; delivery is stopped until dead letters are replayed".into(),
            ));
        }
        match classify_status(a.status) {
            StatusClass::Success => Ok(Delivered::default()),
            StatusClass::RateLimited => {
                let wait = retry_after(&a.headers).unwrap_or(std::time::Duration::from_secs(5));
                self.http.limiter.pause_for(wait, PauseReason::RateLimited);
                Err(Failure::Paused(format!("webhook {}", a.status)))
            }
            StatusClass::Transient => Err(Failure::Transient(format!("webhook {}", a.status))),
            // A receiver refusing our signature is a configuration problem: dead letters keep
            // the leads until it is fixed and they are replayed.
            StatusClass::Auth => {
                self.http.limiter.alarm_credentials(
                    "webhook",
                    a.status,
                    &format!(
                        "the receiver refused the request; it must verify the Standard Webhooks signature with the secret in {}. The refused leads are dead letters: replay them once fixed",
                        self.credentials
                    ),
                );
                Err(Failure::Permanent(format!(
                    "webhook {}: {}",
                    a.status,
                    super::describe_text(&a.text)
                )))
            }
            StatusClass::Permanent => Err(Failure::Permanent(format!(
                "webhook {}: {}",
                a.status,
                super::describe_text(&a.text)
            ))),
        }
    }
}

#[async_trait]
impl Connector for Webhook {
    fn name(&self) -> &'static str {
        "webhook"
    }

    fn batch_size(&self) -> usize {
        self.batch_size
    }

    fn default_quota(&self) -> RateLimit {
        CrmKind::Webhook.default_rate_limit()
    }

    fn prepare(&self, batch: &[Item]) -> Vec<PreparedRequest> {
        batch
            .iter()
            .filter_map(|item| self.request(item, None).ok())
            .map(|r| r.preview())
            .collect()
    }

    async fn send(&self, batch: &[Item]) -> Vec<Result<Delivered, Failure>> {
        let mut out = Vec::with_capacity(batch.len());
        let mut stopped: Option<Failure> = None;
        for item in batch {
            if let Some(f) = &stopped {
                out.push(Err(f.clone()));
                continue;
            }
            let r = self.one(item).await;
            if let Err(f @ Failure::Paused(_)) = &r {
                stopped = Some(f.clone());
            }
            out.push(r);
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::deliver::crm::test_support::update;

    #[test]
    fn message_ids_are_stable_per_version_and_hide_the_email() {
        let mut a = Item::new(update("ada@example.com", "mql", 3));
        let id = Webhook::message_id(&a);
        assert_eq!(id, Webhook::message_id(&a));
        assert!(!id.contains("ada"));
        a.update.version = 2;
        assert_ne!(id, Webhook::message_id(&a));
    }

    #[test]
    fn a_withheld_stage_is_left_out_of_the_payload() {
        let mut a = Item::new(update("ada@example.com", "lead", 2));
        assert_eq!(Webhook::payload(&a)["data"]["stage"], "lead");
        a.send_stage = false;
        let p = Webhook::payload(&a);
        assert!(p["data"].get("stage").is_none());
        assert_eq!(p["data"]["email"], "ada@example.com");
        assert_eq!(p["type"], EVENT_TYPE);
    }
}
