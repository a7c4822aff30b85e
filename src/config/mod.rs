//! Settings: `leadgate.toml` plus `LEADGATE_...` environment overrides, parsed once at start into
//! typed values. Every error names the file (or variable), the key and the reason.
//!
//! Secrets are never in the file: a source names the environment variable(s) holding its secret
//! (`secret_env`), the admin API its token variable (`token_env`).

mod crm;
mod env;
mod source;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::num::NonZeroU32;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

pub use self::crm::{CrmAuth, CrmConfig, CrmKind, RetrySettings, SalesforceSettings};
use self::source::RawRate;
pub use self::source::{RateLimit, SkippedSource, SourceConfig, SourceName};
use crate::ingest::decode;
use crate::ingest::verify::Secret;

/// The shipped `leadgate.toml`, used when no file is given and none exists in the working directory.
pub const EMBEDDED_DEFAULTS: &str = include_str!("../../leadgate.toml");

/// The file name looked up in the working directory when `--config` is not given.
pub const DEFAULT_FILE: &str = "leadgate.toml";

/// Environment variables as seen at start (tests pass their own).
pub type EnvVars = BTreeMap<String, String>;

/// The process environment (variables that are not valid Unicode are skipped).
pub fn process_env() -> EnvVars {
    std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)))
        .collect()
}

/// What loading does when a secret's environment variable is not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnsetSecrets {
    /// `serve` and the commands that sign or send: an error naming the key and the variable; an
    /// `optional` source is skipped with a warning instead.
    Refuse,
    /// `check` and `map`, which read the settings but never verify or send: a warning per unset
    /// variable. A source without its secret is listed in [`Config::skipped`] (its mapping is
    /// still checked); the CRM connector gets no credentials ([`CrmAuth::None`]).
    Warn,
}

/// A configuration error: where (file or variable), which key, and why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ConfigError {
    pub file: String,
    pub key: String,
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.file, self.reason)
        } else {
            write!(f, "{}: {}: {}", self.file, self.key, self.reason)
        }
    }
}

impl ConfigError {
    pub fn new(file: impl Into<String>, key: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            file: file.into(),
            key: key.into(),
            reason: reason.into(),
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// The public listener: webhooks and probes.
    pub listen: SocketAddr,
    /// Where the operator surface (`/metrics`, `/admin/*`) is served.
    pub admin_listen: AdminListen,
    /// The public base URL providers call; URL-signing schemes sign `<public_url>/webhooks/<name>`.
    pub public_url: String,
    /// HTTP worker threads (default: one per core).
    pub workers: Option<usize>,
    /// How long in-flight requests may take to finish on shutdown.
    pub shutdown_timeout: Duration,
    /// How long to keep serving, unready, after SIGTERM so load balancers stop routing first.
    pub drain: Duration,
}

/// Where the operator surface is served: on a listener of its own (the default, so the port that
/// form providers reach from the internet never exposes metrics or the admin API), or on the
/// public listener when `admin_listen` is the same address as `listen`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminListen {
    Own(SocketAddr),
    SameAsPublic,
}

impl AdminListen {
    fn parse(admin: SocketAddr, public: SocketAddr) -> Result<AdminListen, String> {
        // Port 0 asks for any free port, so two of them are two listeners (tests rely on it).
        if admin.port() == 0 || admin.port() != public.port() {
            return Ok(AdminListen::Own(admin));
        }
        if admin == public {
            return Ok(AdminListen::SameAsPublic);
        }
        // Same port, different addresses: legal only when neither is a wildcard, else the
        // second bind fails at start with a less helpful message.
        if admin.ip().is_unspecified() || public.ip().is_unspecified() {
            return Err(format!(
                "{admin} shares port {} with server.listen ({public}); use another port, or \
                 exactly the listen address to serve everything on one listener",
                admin.port()
            ));
        }
        Ok(AdminListen::Own(admin))
    }
}

#[derive(Debug, Clone)]
pub enum StoreConfig {
    Sqlite {
        path: PathBuf,
    },
    /// Several replicas on one database. `url` may hold a password, so it is kept as a secret;
    /// `at` (`postgres://host:port/database`) is what messages show.
    Postgres {
        url: Secret,
        at: String,
    },
}

#[derive(Debug, Clone)]
pub struct AdminConfig {
    pub token_env: String,
    /// None: the admin API is off.
    pub token: Option<Secret>,
    /// Missing or wrong tokens allowed per client address before it gets 429.
    pub wrong_token_limit: RateLimit,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    Json,
    Text,
}

#[derive(Debug, Clone)]
pub struct LogConfig {
    pub level: String,
    pub format: LogFormat,
}

/// Everything leadgate needs, parsed and checked.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the settings came from (a path, or `<embedded defaults>`).
    pub origin: String,
    /// Directory relative paths in the file are resolved against.
    pub base_dir: PathBuf,
    pub server: ServerConfig,
    pub store: StoreConfig,
    pub admin: AdminConfig,
    pub log: LogConfig,
    pub sources: Vec<SourceConfig>,
    /// Sources not served because their secret variables are unset (see [`UnsetSecrets`]).
    pub skipped: Vec<SkippedSource>,
    pub mapping: MappingSettings,
    pub qualification: QualificationSettings,
    pub pipeline: PipelineSettings,
    pub crm: CrmConfig,
    /// Legal but noteworthy things found while loading (an optional source skipped, ...).
    pub warnings: Vec<String>,
}

// ---- the file's shape ----

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    server: RawServer,
    #[serde(default)]
    store: RawStore,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    log: RawLog,
    #[serde(default)]
    sources: Vec<source::RawSource>,
    #[serde(default)]
    mapping: RawMapping,
    #[serde(default)]
    qualification: RawQualification,
    #[serde(default)]
    pipeline: RawPipeline,
    #[serde(default)]
    crm: toml::Table,
}

/// `[mapping]`: settings shared by every mapping file.
#[derive(Debug, Clone)]
pub struct MappingSettings {
    /// Region for phone numbers written without a country code (ISO 3166 alpha-2, e.g. `US`).
    pub default_phone_region: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawMapping {
    default_phone_region: String,
}

impl Default for RawMapping {
    fn default() -> Self {
        Self {
            default_phone_region: "US".into(),
        }
    }
}

/// `[qualification]`: the rules file (the agreed funnel definition).
#[derive(Debug, Clone)]
pub struct QualificationSettings {
    /// None: the embedded default rules.
    pub rules: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawQualification {
    rules: Option<PathBuf>,
}

/// `[pipeline]`: the background work after the inbox (map -> qualify -> outbox).
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// Stored events taken per step.
    pub batch_size: usize,
    /// How often to look for work when nothing woke the pipeline.
    pub poll_interval: Duration,
    /// How often leads are re-checked against the recycle rules (None: never).
    pub sweep_interval: Option<Duration>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawPipeline {
    batch_size: usize,
    poll_interval_ms: u64,
    sweep_interval_secs: u64,
}

impl Default for RawPipeline {
    fn default() -> Self {
        Self {
            batch_size: 100,
            poll_interval_ms: 1000,
            sweep_interval_secs: 3600,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawServer {
    listen: String,
    admin_listen: String,
    public_url: String,
    workers: Option<usize>,
    shutdown_timeout_secs: u64,
    drain_secs: u64,
    body_limit_bytes: usize,
}

impl Default for RawServer {
    fn default() -> Self {
        Self {
            listen: "0.0.0.0:8080".into(),
            admin_listen: "127.0.0.1:9091".into(),
            public_url: "http://localhost:8080".into(),
            workers: None,
            shutdown_timeout_secs: 30,
            drain_secs: 0,
            body_limit_bytes: 1024 * 1024,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawStore {
    url: String,
}

impl Default for RawStore {
    fn default() -> Self {
        Self {
            url: "sqlite://data/leadgate.db".into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawAdmin {
    token_env: String,
    wrong_token_limit: RawRate,
}

impl Default for RawAdmin {
    fn default() -> Self {
        Self {
            token_env: "LEADGATE_ADMIN_TOKEN".into(),
            // A burst of 10, then one every 6 s: plenty for a person mistyping, useless for
            // guessing.
            wrong_token_limit: RawRate {
                requests: 10,
                per_secs: 60,
            },
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct RawLog {
    level: String,
    format: LogFormat,
}

impl Default for RawLog {
    fn default() -> Self {
        Self {
            level: "info".into(),
            format: LogFormat::Json,
        }
    }
}

/// Positive integers from the file (quotas, sizes).
pub(crate) fn non_zero(v: u32) -> Option<NonZeroU32> {
    NonZeroU32::new(v)
}

impl Config {
    /// Loads settings from `path`, or from `./leadgate.toml`, or from the embedded defaults.
    pub fn load(path: Option<&Path>, env: &EnvVars) -> Result<Config, ConfigError> {
        Self::load_with(path, env, UnsetSecrets::Refuse)
    }

    /// [`load`](Self::load), choosing what an unset secret variable means.
    pub fn load_with(
        path: Option<&Path>,
        env: &EnvVars,
        unset: UnsetSecrets,
    ) -> Result<Config, ConfigError> {
        let (origin, base_dir, text) = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p).map_err(|e| {
                    ConfigError::new(p.display().to_string(), "", format!("cannot read: {e}"))
                })?;
                (p.display().to_string(), parent_dir(p), text)
            }
            None if Path::new(DEFAULT_FILE).exists() => {
                let p = Path::new(DEFAULT_FILE);
                let text = std::fs::read_to_string(p)
                    .map_err(|e| ConfigError::new(DEFAULT_FILE, "", format!("cannot read: {e}")))?;
                (DEFAULT_FILE.to_string(), PathBuf::from("."), text)
            }
            None => (
                "<embedded defaults>".to_string(),
                PathBuf::from("."),
                EMBEDDED_DEFAULTS.to_string(),
            ),
        };
        Self::from_toml_with(&text, &origin, &base_dir, env, unset)
    }

    /// Parses settings from TOML text; `origin` names it in errors, `base_dir` anchors relative paths.
    pub fn from_toml(
        text: &str,
        origin: &str,
        base_dir: &Path,
        env: &EnvVars,
    ) -> Result<Config, ConfigError> {
        Self::from_toml_with(text, origin, base_dir, env, UnsetSecrets::Refuse)
    }

    /// [`from_toml`](Self::from_toml), choosing what an unset secret variable means.
    pub fn from_toml_with(
        text: &str,
        origin: &str,
        base_dir: &Path,
        env: &EnvVars,
        unset: UnsetSecrets,
    ) -> Result<Config, ConfigError> {
        let mut tree: toml::Table = text.parse().map_err(|e: toml::de::Error| {
            ConfigError::new(origin, toml_error_key(text, &e), e.message().to_string())
        })?;
        let from_env =
            env::apply(&mut tree, env).map_err(|e| ConfigError::new(e.var, "", e.reason))?;
        let where_ = |key: &str| -> String {
            from_env
                .iter()
                .find(|(k, _)| key == k.as_str() || key.starts_with(&format!("{k}.")))
                .map(|(_, var)| format!("environment variable {var}"))
                .unwrap_or_else(|| origin.to_string())
        };
        let raw: RawConfig =
            serde_path_to_error::deserialize(toml::Value::Table(tree)).map_err(|e| {
                let key = e.path().to_string();
                let reason = e.inner().message().to_string();
                ConfigError::new(
                    where_(&key),
                    if key == "." { String::new() } else { key },
                    reason,
                )
            })?;
        let err = |key: &str, reason: String| ConfigError::new(where_(key), key, reason);

        let s = raw.server;
        let listen: SocketAddr = s.listen.parse().map_err(|_| {
            err(
                "server.listen",
                format!("{:?} is not an address like 0.0.0.0:8080", s.listen),
            )
        })?;
        let admin_listen: SocketAddr = s.admin_listen.parse().map_err(|_| {
            err(
                "server.admin_listen",
                format!("{:?} is not an address like 127.0.0.1:9091", s.admin_listen),
            )
        })?;
        let admin_listen =
            AdminListen::parse(admin_listen, listen).map_err(|r| err("server.admin_listen", r))?;
        let public_url = parse_base_url(&s.public_url).map_err(|r| err("server.public_url", r))?;
        if s.workers == Some(0) {
            return Err(err("server.workers", "must be at least 1".into()));
        }
        if s.body_limit_bytes == 0 {
            return Err(err("server.body_limit_bytes", "must be at least 1".into()));
        }
        let server = ServerConfig {
            listen,
            admin_listen,
            public_url,
            workers: s.workers,
            shutdown_timeout: Duration::from_secs(s.shutdown_timeout_secs),
            drain: Duration::from_secs(s.drain_secs),
        };

        let store = match raw.store.url.split_once("://") {
            Some(("sqlite", rest)) if !rest.is_empty() => StoreConfig::Sqlite {
                path: resolve(base_dir, Path::new(rest)),
            },
            Some(("postgres" | "postgresql", _)) => {
                // Parsed here so a typo fails `check` and start-up with the key named; the
                // message never repeats the URL, which may carry a password.
                crate::store::postgres::check_url(&raw.store.url)
                    .map_err(|reason| err("store.url", reason))?;
                StoreConfig::Postgres {
                    at: crate::store::postgres::display_name(&raw.store.url),
                    url: Secret::new(raw.store.url.clone()),
                }
            }
            Some((scheme, _)) if !scheme.contains(['@', '/', ':']) => {
                return Err(err(
                    "store.url",
                    format!(
                        "unknown store {scheme:?}; expected sqlite://<path> or postgres://user@host:5432/database"
                    ),
                ))
            }
            _ => {
                return Err(err(
                    "store.url",
                    "not a store URL; expected sqlite://<path> or postgres://user@host:5432/database".into(),
                ))
            }
        };

        let admin_token = env
            .get(&raw.admin.token_env)
            .filter(|v| !v.is_empty())
            .map(|v| Secret::new(v.clone()));
        let admin = AdminConfig {
            token_env: raw.admin.token_env,
            token: admin_token,
            wrong_token_limit: raw
                .admin
                .wrong_token_limit
                .parse()
                .map_err(|r| err("admin.wrong_token_limit", r))?,
        };

        let log = LogConfig {
            level: raw.log.level,
            format: raw.log.format,
        };

        let mut warnings = Vec::new();
        if server.admin_listen == AdminListen::SameAsPublic {
            warnings.push(format!(
                "server.admin_listen is the public listen address {listen}: /metrics and the \
                 admin API are served to whoever reaches the webhooks"
            ));
        }
        let mut sources: Vec<SourceConfig> = Vec::with_capacity(raw.sources.len());
        let mut skipped: Vec<SkippedSource> = Vec::new();
        for (i, rs) in raw.sources.into_iter().enumerate() {
            let ctx = source::Context {
                index: i,
                base_dir,
                public_url: &server.public_url,
                default_body_limit: s.body_limit_bytes,
                env,
                unset,
            };
            let built = rs.build(&ctx).map_err(|(key, reason)| err(&key, reason))?;
            let name = match &built {
                source::Built::Ready(sc) => &sc.name,
                source::Built::Skipped(sk, _) => &sk.name,
            };
            let taken = sources.iter().map(|o| &o.name);
            if taken
                .chain(skipped.iter().map(|o| &o.name))
                .any(|n| n == name)
            {
                return Err(err(
                    &format!("sources[{i}].name"),
                    format!("{:?} is used by two sources", name.as_str()),
                ));
            }
            match built {
                source::Built::Ready(sc) => sources.push(sc),
                source::Built::Skipped(sk, warning) => {
                    skipped.push(sk);
                    warnings.push(warning);
                }
            }
        }

        let region = raw.mapping.default_phone_region;
        if region.len() != 2 || !region.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(err(
                "mapping.default_phone_region",
                format!("{region:?} is not a two-letter region code like US or GB"),
            ));
        }
        let mapping = MappingSettings {
            default_phone_region: region,
        };
        let qualification = QualificationSettings {
            rules: raw.qualification.rules.map(|p| resolve(base_dir, &p)),
        };
        if raw.pipeline.batch_size == 0 || raw.pipeline.poll_interval_ms == 0 {
            return Err(err(
                "pipeline",
                "batch_size and poll_interval_ms must be at least 1".into(),
            ));
        }
        let pipeline = PipelineSettings {
            batch_size: raw.pipeline.batch_size,
            poll_interval: Duration::from_millis(raw.pipeline.poll_interval_ms),
            sweep_interval: (raw.pipeline.sweep_interval_secs > 0)
                .then(|| Duration::from_secs(raw.pipeline.sweep_interval_secs)),
        };
        let crm = crm::parse(raw.crm, env, unset, &mut warnings)
            .map_err(|(key, reason)| err(&key, reason))?;

        Ok(Config {
            origin: origin.to_string(),
            base_dir: base_dir.to_path_buf(),
            server,
            store,
            admin,
            log,
            sources,
            skipped,
            mapping,
            qualification,
            pipeline,
            crm,
            warnings,
        })
    }

    pub fn source(&self, name: &str) -> Option<&SourceConfig> {
        self.sources.iter().find(|s| s.name.as_str() == name)
    }

    /// A source's mapping file and decode limits, whether it is served or skipped.
    pub fn source_mapping(&self, name: &str) -> Option<(Option<&Path>, &decode::Limits)> {
        let served = self.source(name).map(|s| (s.mapping.as_deref(), &s.decode));
        served.or_else(|| {
            self.skipped
                .iter()
                .find(|s| s.name.as_str() == name)
                .map(|s| (s.mapping.as_deref(), &s.decode))
        })
    }
}

fn parent_dir(p: &Path) -> PathBuf {
    match p.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// Resolves `p` against `base` unless it is absolute.
pub fn resolve(base: &Path, p: &Path) -> PathBuf {
    if p.is_absolute() {
        p.to_path_buf()
    } else {
        base.join(p)
    }
}

fn parse_base_url(s: &str) -> Result<String, String> {
    let u = reqwest::Url::parse(s).map_err(|e| format!("{s:?} is not a URL: {e}"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("{s:?} must be an http or https URL"));
    }
    if u.query().is_some() {
        return Err(format!("{s:?} must not have a query string"));
    }
    Ok(s.trim_end_matches('/').to_string())
}

/// Best-effort dotted key for a TOML syntax error: the table header above the error line.
fn toml_error_key(text: &str, e: &toml::de::Error) -> String {
    let Some(span) = e.span() else {
        return String::new();
    };
    let line_no = text[..span.start.min(text.len())].matches('\n').count() + 1;
    format!("line {line_no}")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> EnvVars {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn load(text: &str, e: &EnvVars) -> Result<Config, ConfigError> {
        Config::from_toml(text, "test.toml", Path::new("/etc/lg"), e)
    }

    #[test]
    fn an_empty_file_gives_working_defaults() {
        let c = load("", &env(&[])).unwrap();
        assert_eq!(c.server.listen.to_string(), "0.0.0.0:8080");
        match c.store {
            StoreConfig::Sqlite { path } => assert_eq!(path, Path::new("/etc/lg/data/leadgate.db")),
            StoreConfig::Postgres { .. } => panic!("expected the SQLite store"),
        }
        assert!(c.admin.token.is_none());
    }

    #[test]
    fn the_shipped_file_loads_with_its_secrets_set_and_skips_optional_sources_without() {
        let all = env(&[
            ("TYPEFORM_SECRET", "a"),
            ("TALLY_SECRET", "b"),
            ("CALENDLY_SIGNING_KEY", "c"),
            ("MAILCHIMP_WEBHOOK_TOKEN", "d"),
            ("LEADGATE_ADMIN_TOKEN", "t"),
        ]);
        let c = load(EMBEDDED_DEFAULTS, &all).unwrap();
        assert!(
            c.sources.len() >= 3,
            "{:?}",
            c.sources
                .iter()
                .map(|s| s.name.as_str())
                .collect::<Vec<_>>()
        );
        assert!(c.admin.token.is_some());
        let none = load(EMBEDDED_DEFAULTS, &env(&[])).unwrap();
        assert!(none.sources.is_empty());
        assert!(!none.warnings.is_empty());
    }

    #[test]
    fn checking_keeps_sources_without_their_secrets_and_warns_instead_of_failing() {
        let text = "[[sources]]\nname = \"tf\"\nscheme = \"typeform\"\nsecret_env = \"TF_SECRET\"\nmapping = \"m/tf.toml\"\n\
                    [crm]\nkind = \"hubspot\"\n";
        let c = Config::from_toml_with(
            text,
            "test.toml",
            Path::new("/etc/lg"),
            &env(&[]),
            UnsetSecrets::Warn,
        )
        .unwrap();
        assert!(c.sources.is_empty());
        assert_eq!(c.skipped.len(), 1);
        assert_eq!(
            c.source_mapping("tf").and_then(|(m, _)| m),
            Some(Path::new("/etc/lg/m/tf.toml"))
        );
        assert!(matches!(c.crm.auth, CrmAuth::None));
        assert_eq!(c.warnings.len(), 2, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("sources[0].secret_env: environment variable TF_SECRET"));
        assert!(c.warnings[1].starts_with("crm.token_env: environment variable HUBSPOT_TOKEN"));
        // Serving needs them.
        let e = load(text, &env(&[])).unwrap_err();
        assert_eq!(e.key, "sources[0].secret_env");
    }

    #[test]
    fn a_source_name_used_twice_is_refused_even_when_one_is_skipped() {
        let one = "[[sources]]\nname = \"tf\"\nscheme = \"typeform\"\nsecret_env = \"A\"\noptional = true\n";
        let e = load(
            &format!("{one}{}", one.replace("\"A\"", "\"B\"")),
            &env(&[("B", "x")]),
        )
        .unwrap_err();
        assert_eq!(e.key, "sources[1].name");
    }

    #[test]
    fn unknown_keys_are_named_with_their_path() {
        let e = load("[server]\nlisten = \"0.0.0.0:1\"\nlistn = 2\n", &env(&[])).unwrap_err();
        assert_eq!(e.file, "test.toml");
        assert_eq!(e.key, "server.listn");
        assert!(e.reason.contains("unknown field"), "{e}");
    }

    #[test]
    fn a_missing_secret_stops_start_up_naming_the_key_and_variable() {
        let text =
            "[[sources]]\nname = \"tf\"\nscheme = \"typeform\"\nsecret_env = \"TF_SECRET\"\n";
        let e = load(text, &env(&[])).unwrap_err();
        assert_eq!(e.key, "sources[0].secret_env");
        assert!(e.reason.contains("TF_SECRET"), "{e}");
        assert!(!e.to_string().contains("hunter2"));
    }

    #[test]
    fn environment_overrides_win_and_errors_name_the_variable() {
        let c = load("", &env(&[("LEADGATE_SERVER__LISTEN", "127.0.0.1:9999")])).unwrap();
        assert_eq!(c.server.listen.port(), 9999);
        let e = load("", &env(&[("LEADGATE_SERVER__LISTEN", "nowhere")])).unwrap_err();
        assert_eq!(e.file, "environment variable LEADGATE_SERVER__LISTEN");
        assert_eq!(e.key, "server.listen");
    }

    #[test]
    fn the_operator_surface_gets_its_own_loopback_listener_by_default() {
        let c = load("", &env(&[])).unwrap();
        assert_eq!(
            c.server.admin_listen,
            AdminListen::Own("127.0.0.1:9091".parse().unwrap())
        );
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
        assert_eq!(c.admin.wrong_token_limit.requests.get(), 10);
        assert_eq!(c.admin.wrong_token_limit.per, Duration::from_secs(60));
    }

    #[test]
    fn admin_listen_equal_to_listen_shares_the_listener_with_a_warning() {
        let shared = "[server]\nlisten = \"0.0.0.0:8080\"\nadmin_listen = \"0.0.0.0:8080\"\n";
        let c = load(shared, &env(&[])).unwrap();
        assert_eq!(c.server.admin_listen, AdminListen::SameAsPublic);
        assert!(
            c.warnings[0].contains("server.admin_listen"),
            "{:?}",
            c.warnings
        );
        // Port 0 is "any free port": two of them are two listeners.
        let any = "[server]\nlisten = \"127.0.0.1:0\"\nadmin_listen = \"127.0.0.1:0\"\n";
        let c = load(any, &env(&[])).unwrap();
        assert_eq!(
            c.server.admin_listen,
            AdminListen::Own("127.0.0.1:0".parse().unwrap())
        );
        // Same port on two specific addresses: two listeners.
        let two = "[server]\nlisten = \"10.0.0.5:8080\"\nadmin_listen = \"127.0.0.1:8080\"\n";
        assert!(matches!(
            load(two, &env(&[])).unwrap().server.admin_listen,
            AdminListen::Own(_)
        ));
    }

    #[test]
    fn admin_listen_mistakes_name_the_key_and_the_variable() {
        let clash = "[server]\nlisten = \"0.0.0.0:8080\"\nadmin_listen = \"127.0.0.1:8080\"\n";
        let e = load(clash, &env(&[])).unwrap_err();
        assert_eq!(
            (e.file.as_str(), e.key.as_str()),
            ("test.toml", "server.admin_listen")
        );
        assert!(e.reason.contains("shares port 8080"), "{e}");
        let e = load("", &env(&[("LEADGATE_SERVER__ADMIN_LISTEN", "9091")])).unwrap_err();
        assert_eq!(e.file, "environment variable LEADGATE_SERVER__ADMIN_LISTEN");
        assert_eq!(e.key, "server.admin_listen");
        let e = load(
            "[admin]\nwrong_token_limit = { requests = 0, per_secs = 60 }\n",
            &env(&[]),
        )
        .unwrap_err();
        assert_eq!(e.key, "admin.wrong_token_limit");
        assert!(e.reason.contains("at least 1"), "{e}");
    }

    #[test]
    fn bad_scheme_names_list_the_known_ones() {
        let text = "[[sources]]\nname = \"x\"\nscheme = \"typefrom\"\nsecret_env = \"S\"\n";
        let e = load(text, &env(&[("S", "v")])).unwrap_err();
        assert_eq!(e.key, "sources[0].scheme");
        assert!(e.reason.contains("typeform"), "{e}");
    }

    #[test]
    fn toml_syntax_errors_give_a_line() {
        let e = load("[server\nlisten = 1", &env(&[])).unwrap_err();
        assert!(e.key.starts_with("line "), "{e}");
    }
}
