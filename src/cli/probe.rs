//! `leadgate probe --url URL`: GET a URL and exit 0 on `200`, 1 otherwise. The runtime image is
//! distroless (no shell, no curl), so container health checks run the binary itself:
//! `leadgate probe --url http://127.0.0.1:8080/readyz`.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

#[derive(clap::Args)]
pub struct Args {
    /// The URL to GET, e.g. http://127.0.0.1:8080/readyz.
    #[arg(long)]
    url: String,
    /// Give up (exit 1) after this many seconds.
    #[arg(long, default_value_t = 5)]
    timeout_secs: u64,
}

pub fn run(_config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let url = reqwest::Url::parse(&args.url)
        .map_err(|e| anyhow::anyhow!("--url {:?} is not a URL: {e}", args.url))?;
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(args.timeout_secs.max(1)))
        .build()?;
    super::runtime()?.block_on(async move {
        match client.get(url.clone()).send().await {
            Ok(res) => {
                let status = res.status();
                println!("{} {}", status.as_u16(), redact(&url));
                Ok(if status == reqwest::StatusCode::OK {
                    ExitCode::SUCCESS
                } else {
                    ExitCode::FAILURE
                })
            }
            Err(e) => {
                // Connection refused or timed out: unhealthy, not a crash.
                eprintln!("error: GET {} failed: {e}", redact(&url));
                Ok(ExitCode::FAILURE)
            }
        }
    })
}

/// The URL without its query string, which may carry a token.
fn redact(url: &reqwest::Url) -> String {
    let mut u = url.clone();
    u.set_query(None);
    u.to_string()
}
