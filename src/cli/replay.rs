//! `leadgate replay`:
//! - `--source S [--since T] [--all]`: put stored events back in the pipeline's queue after a
//!   mapping fix (unmappable ones; `--all` also those already processed, which is safe because
//!   merging is idempotent and engagement events are deduplicated);
//! - `--dead-letters [--id N ...] [--list]`: list dead letters, or put them back in the outbox
//!   (all, or the given ids) once whatever refused them is fixed.
//!
//! Both work beside a running `leadgate serve`, which picks the work up at its next poll (or at
//! its next start).

use std::path::Path;
use std::process::ExitCode;

use leadgate::startup::open_store;
use leadgate::store::ReplayFilter;

#[derive(clap::Args)]
pub struct Args {
    /// Re-process this source's stored events (unmappable ones unless --all).
    #[arg(long, conflicts_with = "dead_letters")]
    source: Option<String>,
    /// Only events received since this time (RFC 3339, or a date like 2026-11-20).
    #[arg(long, requires = "source")]
    since: Option<String>,
    /// Also re-process events that were processed before.
    #[arg(long, requires = "source")]
    all: bool,
    /// Re-deliver CRM updates from the dead letters.
    #[arg(long)]
    dead_letters: bool,
    /// Only these dead letters (repeat the flag); default all.
    #[arg(long = "id", value_name = "ID")]
    ids: Vec<i64>,
    /// List them (id, CRM, attempts, time, the CRM's message) instead of re-queueing.
    #[arg(long)]
    list: bool,
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    if let Some(source) = args.source {
        return replay_events(config, source, args.since, args.all);
    }
    if !args.dead_letters {
        anyhow::bail!("nothing to replay: pass --source NAME (stored events) or --dead-letters");
    }
    let config = super::load_config_without_secrets(config)?;
    let ids = (!args.ids.is_empty()).then_some(args.ids);
    super::runtime()?.block_on(async move {
        let store = open_store(&config).await?;
        let code = if args.list {
            let letters = store.dead_letters(ids).await?;
            for l in &letters {
                let at = chrono::DateTime::from_timestamp_millis(l.dead_at_ms)
                    .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
                    .unwrap_or_default();
                println!(
                    "{}\t{}\t{}\tv{}\t{} attempts\t{}\t{}",
                    l.id, l.crm, l.email, l.version, l.attempts, at, l.message
                );
            }
            println!("{} dead letters", letters.len());
            ExitCode::SUCCESS
        } else {
            let r = store.requeue_dead_letters(ids).await?;
            println!(
                "re-queued {}, already superseded by a newer state {}",
                r.requeued, r.superseded
            );
            if r.not_found.is_empty() {
                ExitCode::SUCCESS
            } else {
                let ids: Vec<String> = r.not_found.iter().map(i64::to_string).collect();
                eprintln!("error: no dead letters with id {}", ids.join(", "));
                ExitCode::FAILURE
            }
        };
        store.close().await?;
        Ok(code)
    })
}

fn parse_since(s: &str) -> anyhow::Result<i64> {
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(s) {
        return Ok(t.timestamp_millis());
    }
    let day = chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d").map_err(|_| {
        anyhow::anyhow!("--since {s:?} is not an RFC 3339 time or a date like 2026-11-20")
    })?;
    Ok(day
        .and_time(chrono::NaiveTime::MIN)
        .and_utc()
        .timestamp_millis())
}

fn replay_events(
    config: Option<&Path>,
    source: String,
    since: Option<String>,
    all: bool,
) -> anyhow::Result<ExitCode> {
    let config = super::load_config_without_secrets(config)?;
    if config.source_mapping(&source).is_none() {
        anyhow::bail!("{}: sources: no source named {source:?}", config.origin);
    }
    let since_ms = since.as_deref().map(parse_since).transpose()?;
    super::runtime()?.block_on(async move {
        let store = open_store(&config).await?;
        let n = store
            .replay_events(ReplayFilter {
                source: Some(source),
                since_ms,
                include_processed: all,
            })
            .await?;
        store.close().await?;
        println!("{n} events queued for processing again");
        Ok(ExitCode::SUCCESS)
    })
}
