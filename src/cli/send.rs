//! `leadgate send`: sign a payload file the way the source's provider does and POST it, to see a
//! verified webhook land (quick start, smoke tests, demos).

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context;
use leadgate::ingest::verify::Outbound;

#[derive(clap::Args)]
pub struct Args {
    /// The source (its `name` in the settings) whose scheme signs the request.
    #[arg(long)]
    source: String,
    /// The body to send, exactly as the provider would.
    #[arg(long)]
    payload: PathBuf,
    /// Where to POST; default http://127.0.0.1:<listen port>/webhooks/<source>.
    #[arg(long)]
    url: Option<String>,
    /// Content type; guessed from the file (.json, .form/.txt urlencoded, .multipart) when absent.
    #[arg(long)]
    content_type: Option<String>,
}

pub fn run(config: Option<&Path>, args: Args) -> anyhow::Result<ExitCode> {
    let config = super::load_config(config)?;
    let source = config.source(&args.source).with_context(|| {
        format!(
            "{}: sources: no source named {:?} (is its secret variable set?)",
            config.origin, args.source
        )
    })?;
    let body = std::fs::read(&args.payload)
        .with_context(|| format!("{}: cannot read", args.payload.display()))?;
    let content_type = match args.content_type {
        Some(t) => t,
        None => guess_content_type(&args.payload, &body)?,
    };
    let url = args.url.unwrap_or_else(|| {
        format!(
            "http://127.0.0.1:{}/webhooks/{}",
            config.server.listen.port(),
            source.name
        )
    });
    let mut out = Outbound::new(url, content_type, body);
    source
        .verifier
        .sign(&mut out)
        .with_context(|| format!("source {:?} cannot sign", args.source))?;

    super::runtime()?.block_on(async move {
        let client = reqwest::Client::new();
        let mut req = client
            .post(&out.url)
            .header(reqwest::header::CONTENT_TYPE, &out.content_type)
            .body(out.body.clone());
        for (k, v) in &out.headers {
            req = req.header(k, v);
        }
        let res = req
            .send()
            .await
            .with_context(|| format!("POST {} failed", redact(&out.url)))?;
        let status = res.status();
        let text = res.text().await.unwrap_or_default();
        println!("{} {}", status.as_u16(), text);
        Ok(if status.is_success() {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        })
    })
}

/// Hides a query string, which may carry a token.
fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((base, _)) => format!("{base}?..."),
        None => url.to_string(),
    }
}

fn guess_content_type(path: &Path, body: &[u8]) -> anyhow::Result<String> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    Ok(match ext {
        "json" => "application/json".into(),
        "form" | "txt" | "urlencoded" => "application/x-www-form-urlencoded".into(),
        "multipart" => {
            // The first line of a multipart body is `--<boundary>`.
            let first = body.split(|b| *b == b'\n').next().unwrap_or_default();
            let boundary = std::str::from_utf8(first)
                .ok()
                .and_then(|l| l.trim_end_matches('\r').strip_prefix("--"))
                .filter(|b| !b.is_empty())
                .with_context(|| {
                    format!(
                        "{}: no multipart boundary on the first line",
                        path.display()
                    )
                })?;
            format!("multipart/form-data; boundary={boundary}")
        }
        _ => anyhow::bail!(
            "{}: cannot guess the content type from the extension; pass --content-type",
            path.display()
        ),
    })
}
