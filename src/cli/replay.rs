//! `leadgate replay --dead-letters [--id N ...] [--list]`: list dead letters, or put them back in
//! the outbox (all, or the given ids) once whatever refused them is fixed. Works beside a running
//! `leadgate serve`, which picks the re-queued updates up at its next poll.

use std::path::Path;
use std::process::ExitCode;

use leadgate::startup::open_store;
use leadgate::store::Store;

#[derive(clap::Args)]
pub struct Args {
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
    if !args.dead_letters {
        anyhow::bail!("nothing to replay: pass --dead-letters (re-processing stored events is not available yet)");
    }
    let config = super::load_config(config)?;
    let ids = (!args.ids.is_empty()).then_some(args.ids);
    super::runtime()?.block_on(async move {
        let store = open_store(&config)?;
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
