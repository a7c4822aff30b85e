//! `leadgate map --source S --payload F`: a dry run of one event through the pipeline. The
//! payload file is decoded as ingest decodes that source's bodies, mapped with the source's
//! mapping, qualified against the rules as a new lead, and printed as JSON:
//! `{"source", "mapped": {"leads", "engagements"}, "qualification": [...], "crm": {"connector",
//! "requests", "withheld"}}` where `crm.requests` are the exact requests the configured connector
//! would send (credentials redacted) and `crm.withheld` says, per lead, why nothing is sent for it
//! (`disqualified (...)`, or no change `queue_on` sends). Nothing is stored or sent. An event that cannot be mapped prints `"mapped": null`
//! and the reason, and exits 1.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use leadgate::deliver::crm::preview;
use leadgate::ingest::decode;
use leadgate::mapping::{guess_content_type, MappingSet};
use leadgate::pipeline::{by_lead, crm_update_for};
use leadgate::qualify::{qualify, Rules};
use serde_json::json;

#[derive(clap::Args)]
pub struct Args {
    /// The source (its `name` in the settings) whose mapping to use.
    #[arg(long)]
    source: String,
    /// A body exactly as the provider sends it.
    #[arg(long)]
    payload: PathBuf,
    /// Content type; guessed from the file (.json, .form/.txt urlencoded, .multipart) when absent.
    #[arg(long)]
    content_type: Option<String>,
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    // A dry run verifies and sends nothing, so it needs no secrets.
    let config = super::load_config_without_secrets(config)?;
    let (mapping, limits) = config.source_mapping(&args.source).with_context(|| {
        format!(
            "{}: sources: no source named {:?}",
            config.origin, args.source
        )
    })?;
    let mapping = mapping.with_context(|| {
        format!(
            "{}: source {:?} has no mapping; add mapping = \"mappings/<file>.toml\" to it",
            config.origin, args.source
        )
    })?;
    // Only this source's mapping: another source's broken file does not stop a dry run.
    let set = MappingSet::load_file(&args.source, mapping, &config.mapping).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("error: {e}")).collect();
        anyhow::anyhow!("the mapping has errors:\n{}", lines.join("\n"))
    })?;

    let body = std::fs::read(&args.payload)
        .with_context(|| format!("{}: cannot read", args.payload.display()))?;
    let content_type = match args.content_type {
        Some(t) => t,
        None => guess_content_type(&args.payload, &body).with_context(|| {
            format!(
                "{}: cannot guess the content type from the extension; pass --content-type",
                args.payload.display()
            )
        })?,
    };
    let value = decode::decode(Some(&content_type), &body, limits)
        .with_context(|| {
            format!(
                "{}: does not decode as {content_type}",
                args.payload.display()
            )
        })?
        .value;

    let rules = Rules::load(config.qualification.rules.as_deref()).map_err(|errs| {
        let lines: Vec<String> = errs.iter().map(|e| format!("error: {e}")).collect();
        anyhow::anyhow!("the rules have errors:\n{}", lines.join("\n"))
    })?;
    let now = chrono::Utc::now();
    let (out, code) = match set.map(&args.source, &value, now) {
        Ok(mapped) => {
            let mut decisions = Vec::new();
            let mut updates = Vec::new();
            let mut withheld = Vec::new();
            for (email, (patches, engagements)) in by_lead(mapped.clone()) {
                let d = qualify(&rules, None, &patches, &engagements, now)?;
                // A new lead: the CRM has never heard of it.
                match crm_update_for(&d, &rules, &config.crm, 1, false) {
                    Ok(update) => updates.push(update),
                    Err(why) => withheld.push(json!({ "email": email, "reason": why.to_string() })),
                }
                decisions.push(json!({ "email": email, "decision": d }));
            }
            let requests = preview(&config.crm, &updates)?;
            (
                json!({
                    "source": args.source,
                    "mapped": mapped,
                    "qualification": decisions,
                    "crm": {
                        "connector": config.crm.target.as_str(),
                        "requests": requests,
                        "withheld": withheld,
                    },
                }),
                ExitCode::SUCCESS,
            )
        }
        Err(why) => (
            json!({ "source": args.source, "mapped": null, "unmappable": why.to_string() }),
            ExitCode::FAILURE,
        ),
    };
    let text = serde_json::to_string_pretty(&out)?;
    // `leadgate map ... | head` closes the pipe early; that is not an error worth a panic.
    match writeln!(std::io::stdout().lock(), "{text}") {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(code),
    }
}
