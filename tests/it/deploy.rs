//! The deployment files, checked without a container engine (this machine has only the Docker
//! client; `.ci/run` builds the image when an engine answers):
//! - the Dockerfile copies only files that exist, everything `cargo build` needs, builds the way
//!   the test suite does (`--locked`), and runs non-root with the data directory as a volume;
//! - its entry command runs as the container would, on a copy of the runtime file layout;
//! - fly.toml, the compose file and the Kubernetes sidecar set real settings, mount the image's
//!   data directory, and give shutdown enough time for the drain, requests and a CRM batch;
//! - each keeps the operator port (metrics, admin API) private and scraped, and points its
//!   health checks at the public port.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use leadgate::config::{AdminListen, Config, EnvVars, StoreConfig};
use yaml_rust2::{Yaml, YamlLoader};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(path: &str) -> String {
    std::fs::read_to_string(root().join(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

// ---- a small Dockerfile reader ----

#[derive(Debug)]
struct Instr {
    op: String,
    args: String,
}

#[derive(Debug)]
struct Stage {
    name: Option<String>,
    instrs: Vec<Instr>,
}

impl Stage {
    fn all(&self, op: &str) -> impl Iterator<Item = &Instr> {
        let op = op.to_string();
        self.instrs.iter().filter(move |i| i.op == op)
    }
    fn last(&self, op: &str) -> Option<&Instr> {
        self.all(op).last()
    }
}

/// Stages with their instructions; comments dropped, `\` continuations joined.
fn dockerfile() -> Vec<Stage> {
    let text = read("Dockerfile");
    let mut logical = Vec::new();
    let mut cur = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.starts_with('#') || (t.is_empty() && cur.is_empty()) {
            continue;
        }
        match t.strip_suffix('\\') {
            Some(part) => {
                cur.push_str(part);
                cur.push(' ');
            }
            None => {
                cur.push_str(t);
                logical.push(std::mem::take(&mut cur));
            }
        }
    }
    let mut stages: Vec<Stage> = Vec::new();
    for l in logical {
        let (op, args) = l.split_once(char::is_whitespace).unwrap_or((&l, ""));
        let (op, args) = (op.to_ascii_uppercase(), args.trim().to_string());
        if op == "FROM" {
            let words: Vec<&str> = args.split_whitespace().collect();
            let name = match words.as_slice() {
                [_, as_, name] if as_.eq_ignore_ascii_case("as") => Some(name.to_string()),
                _ => None,
            };
            stages.push(Stage {
                name,
                instrs: Vec::new(),
            });
        }
        stages
            .last_mut()
            .expect("the Dockerfile starts with FROM")
            .instrs
            .push(Instr { op, args });
    }
    stages
}

/// A COPY's `--from` stage (if any), sources and destination.
fn copy_parts(i: &Instr) -> (Option<String>, Vec<String>, String) {
    let mut from = None;
    let mut words = Vec::new();
    for w in i.args.split_whitespace() {
        if let Some(f) = w.strip_prefix("--from=") {
            from = Some(f.to_string());
        } else if !w.starts_with("--") {
            words.push(w.to_string());
        }
    }
    let dest = words.pop().expect("COPY has a destination");
    (from, words, dest)
}

/// An exec-form instruction's JSON array.
fn exec_form(i: &Instr) -> Vec<String> {
    serde_json::from_str(&i.args).unwrap_or_else(|e| panic!("{} is not exec form: {e}", i.op))
}

fn build_and_runtime() -> (Stage, Stage) {
    let mut stages = dockerfile();
    assert_eq!(stages.len(), 2, "a build stage and a runtime stage");
    let runtime = stages.pop().unwrap();
    let build = stages.pop().unwrap();
    (build, runtime)
}

fn dockerignore() -> Vec<String> {
    read(".dockerignore")
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

#[test]
fn the_dockerfile_copies_what_exists_and_what_the_build_reads() {
    let (build, runtime) = build_and_runtime();
    let ignored = dockerignore();
    assert!(
        ignored.iter().any(|p| p == "target"),
        "the build context leaves out target/"
    );
    let mut build_sources = Vec::new();
    for stage in [&build, &runtime] {
        for copy in stage.all("COPY") {
            let (from, sources, _) = copy_parts(copy);
            if from.is_some() {
                continue;
            }
            for s in sources {
                assert!(
                    root().join(&s).exists(),
                    "COPY {s}: no such file in the repo"
                );
                let first = s.split('/').next().unwrap_or_default();
                assert!(
                    !ignored.iter().any(|p| p == first || p == &s),
                    "COPY {s} is excluded by .dockerignore"
                );
                if std::ptr::eq(stage, &build) {
                    build_sources.push(s);
                }
            }
        }
    }
    let copied = |path: &str| {
        build_sources
            .iter()
            .any(|s| path == s || path.starts_with(&format!("{s}/")))
    };

    // The workspace: manifest, lock file, sources, and every member (`crates/*`).
    let manifest: toml::Table = read("Cargo.toml").parse().unwrap();
    for f in ["Cargo.toml", "Cargo.lock", "src/main.rs", "src/lib.rs"] {
        assert!(copied(f), "the build stage does not copy {f}");
    }
    let members = manifest["workspace"]["members"].as_array().unwrap();
    for m in members {
        let pattern = m.as_str().unwrap();
        let dir = pattern.trim_end_matches("/*");
        for entry in std::fs::read_dir(root().join(dir)).unwrap() {
            let member = format!("{dir}/{}", entry.unwrap().file_name().to_string_lossy());
            assert!(
                copied(&format!("{member}/Cargo.toml")),
                "workspace member {member} is not copied"
            );
        }
    }
    // Files compiled into the binary from outside src/ (include_str!).
    let include = regex::Regex::new(r#"include_(?:str|bytes)!\("([^"]+)"\)"#).unwrap();
    let mut stack = vec![root().join("src")];
    let mut included = 0;
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            for c in include.captures_iter(&text) {
                let target = path.parent().unwrap().join(&c[1]).canonicalize().unwrap();
                let rel = target.strip_prefix(root().canonicalize().unwrap()).unwrap();
                let rel = rel.to_string_lossy().replace('\\', "/");
                assert!(copied(&rel), "{rel} is compiled in but not copied");
                included += 1;
            }
        }
    }
    assert!(included >= 3, "the include_str! files were found");

    // The build command: locked to Cargo.lock like the test suite, the leadgate binary, release.
    let run = build
        .all("RUN")
        .map(|i| i.args.clone())
        .find(|a| a.contains("cargo build"))
        .expect("the build stage runs cargo build");
    for flag in ["--locked", "--release", "--bin leadgate"] {
        assert!(run.contains(flag), "cargo build without {flag}: {run}");
    }
    let bins = manifest["bin"].as_array().unwrap();
    assert!(bins.iter().any(|b| b["name"].as_str() == Some("leadgate")));
    assert!(run.contains("target/release/leadgate"));
    // The runtime stage takes the binary from where the build stage put it.
    let from_build: Vec<(Option<String>, Vec<String>, String)> = runtime
        .all("COPY")
        .map(copy_parts)
        .filter(|(f, _, _)| f.as_deref() == build.name.as_deref())
        .collect();
    assert!(
        !from_build.is_empty(),
        "the runtime copies from the build stage"
    );
    for (_, sources, _) in &from_build {
        for s in sources {
            assert!(
                run.contains(s.as_str()),
                "{s} is not made by the build stage"
            );
        }
    }
}

/// The runtime stage's working directory, volume, user, entry command.
struct Runtime {
    workdir: String,
    volume: Vec<String>,
    entrypoint: Vec<String>,
    cmd: Vec<String>,
}

fn runtime() -> Runtime {
    let (_, rt) = build_and_runtime();
    let user = rt.last("USER").expect("the runtime stage sets USER");
    let name = user.args.split(':').next().unwrap();
    assert!(
        name != "root" && name != "0",
        "the runtime runs as root: {}",
        user.args
    );
    assert!(
        name.bytes().all(|b| b.is_ascii_digit()),
        "a numeric user, so Kubernetes runAsNonRoot can verify it: {}",
        user.args
    );
    Runtime {
        workdir: rt.last("WORKDIR").expect("WORKDIR").args.clone(),
        volume: exec_form(rt.last("VOLUME").expect("the runtime declares a VOLUME")),
        entrypoint: exec_form(rt.last("ENTRYPOINT").expect("ENTRYPOINT")),
        cmd: exec_form(rt.last("CMD").expect("CMD")),
    }
}

/// Copies the runtime stage's files (COPY without --from) into `dir` as the image lays them out;
/// returns the directory that stands for `/`.
fn runtime_layout(dir: &Path) -> PathBuf {
    let (_, rt) = build_and_runtime();
    let workdir = rt.last("WORKDIR").unwrap().args.clone();
    let image_root = dir.join("image");
    for copy in rt.all("COPY") {
        let (from, sources, dest) = copy_parts(copy);
        if from.is_some() {
            continue;
        }
        // Docker: a directory source copies its contents; a destination ending in `/` is a
        // directory that file sources go into.
        let dest_is_dir = dest.ends_with('/') || dest == "." || sources.len() > 1;
        let dest = if dest.starts_with('/') {
            dest
        } else {
            format!("{workdir}/{dest}")
        };
        let dest = image_root.join(dest.trim_start_matches('/'));
        for s in sources {
            let src = root().join(&s);
            if src.is_dir() || !dest_is_dir {
                copy_tree(&src, &dest);
            } else {
                copy_tree(&src, &dest.join(src.file_name().unwrap()));
            }
        }
    }
    image_root
}

fn copy_tree(src: &Path, dest: &Path) {
    if src.is_dir() {
        std::fs::create_dir_all(dest).unwrap();
        for entry in std::fs::read_dir(src).unwrap() {
            let entry = entry.unwrap();
            copy_tree(&entry.path(), &dest.join(entry.file_name()));
        }
    } else {
        std::fs::create_dir_all(dest.parent().unwrap()).unwrap();
        std::fs::copy(src, dest).unwrap();
    }
}

/// Rewrites an absolute image path to the copy under `image_root`.
fn in_image(image_root: &Path, p: &str) -> String {
    if p.starts_with('/') {
        image_root
            .join(p.trim_start_matches('/'))
            .display()
            .to_string()
    } else {
        p.to_string()
    }
}

#[test]
fn the_runtime_stage_is_non_root_and_its_entry_command_runs_on_the_image_layout() {
    let rt = runtime();
    assert_eq!(rt.cmd, ["serve"]);
    let [bin, flag, config] = rt.entrypoint.as_slice() else {
        panic!(
            "ENTRYPOINT is [binary, --config, file]: {:?}",
            rt.entrypoint
        );
    };
    assert_eq!(bin, "/usr/local/bin/leadgate");
    assert_eq!(flag, "--config");

    let dir = tempfile::tempdir().unwrap();
    let image = runtime_layout(dir.path());
    let config_file = PathBuf::from(in_image(&image, config));
    assert!(
        config_file.is_file(),
        "ENTRYPOINT's --config {config} is not a file the image copies"
    );
    // The store lives in the volume: sqlite://data/... relative to the config file.
    let settings = Config::load(Some(&config_file), &EnvVars::new()).unwrap();
    let StoreConfig::Sqlite { path } = &settings.store;
    let volume = PathBuf::from(in_image(&image, &rt.volume[0]));
    assert_eq!(
        path.parent().unwrap(),
        volume,
        "the database is in the VOLUME"
    );
    assert_eq!(Path::new(&rt.workdir), Path::new(config).parent().unwrap());

    // `leadgate --config /app/leadgate.toml check`, as `docker run <image> check` runs it.
    let workdir = in_image(&image, &rt.workdir);
    let args: Vec<String> = rt.entrypoint[1..]
        .iter()
        .map(|a| in_image(&image, a))
        .collect();
    let out = Command::new(env!("CARGO_BIN_EXE_leadgate"))
        .current_dir(&workdir)
        .args(&args)
        .arg("check")
        .env_clear()
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("ok: "));

    // The default command, `serve`, with the compose file's health check (`leadgate probe`).
    let (port, admin_port) = (crate::support::free_port(), crate::support::free_port());
    let mut serve = Command::new(env!("CARGO_BIN_EXE_leadgate"))
        .current_dir(&workdir)
        .args(&args)
        .args(&rt.cmd)
        .env_clear()
        .env("LEADGATE_SERVER__LISTEN", format!("127.0.0.1:{port}"))
        .env(
            "LEADGATE_SERVER__ADMIN_LISTEN",
            format!("127.0.0.1:{admin_port}"),
        )
        .env("LEADGATE_LOG__LEVEL", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let probe = || {
        Command::new(env!("CARGO_BIN_EXE_leadgate"))
            .args(["probe", "--url", &format!("http://127.0.0.1:{port}/readyz")])
            .output()
            .unwrap()
            .status
            .success()
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !probe() {
        assert!(
            Instant::now() < deadline,
            "the image's serve never got ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        volume.join("leadgate.db").is_file(),
        "the store is created in the volume"
    );
    // Metrics on the operator port only.
    let probe_at = |port: u16, path: &str| {
        Command::new(env!("CARGO_BIN_EXE_leadgate"))
            .args(["probe", "--url", &format!("http://127.0.0.1:{port}{path}")])
            .output()
            .unwrap()
            .status
            .success()
    };
    assert!(probe_at(admin_port, "/metrics"), "metrics on admin_listen");
    assert!(!probe_at(port, "/metrics"), "no metrics on the public port");
    let killed = Command::new("kill")
        .args(["-TERM", &serve.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(s) = serve.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "serve did not stop on SIGTERM");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

// ---- deployment examples ----

/// Loads the shipped settings as the image does, with `env` as the environment.
fn image_settings(env: &EnvVars) -> Config {
    Config::from_toml(
        &read("leadgate.toml"),
        "/app/leadgate.toml",
        Path::new("/app"),
        env,
    )
    .unwrap_or_else(|e| panic!("the deployment's settings do not load: {e}"))
}

/// What shutdown may take: drain, in-flight requests, one CRM request of the batch in progress.
fn shutdown_budget(c: &Config) -> Duration {
    c.server.drain + c.server.shutdown_timeout + c.crm.timeout
}

fn secs(s: &str) -> u64 {
    s.trim_end_matches('s')
        .parse()
        .unwrap_or_else(|_| panic!("{s:?} is not a number of seconds"))
}

#[test]
fn fly_toml_serves_the_image_with_real_settings_and_enough_time_to_drain() {
    let fly: toml::Table = read("fly.toml").parse().unwrap();
    assert_eq!(fly["kill_signal"].as_str(), Some("SIGTERM"));
    let mut env = EnvVars::new();
    for (k, v) in fly["env"].as_table().unwrap() {
        let lower = k.to_ascii_lowercase();
        assert!(
            !(lower.contains("secret") || lower.contains("token") || lower.ends_with("_key")),
            "{k}: secrets go in `fly secrets set`, not fly.toml"
        );
        env.insert(k.clone(), v.as_str().unwrap().to_string());
    }
    let c = image_settings(&env);
    assert!(c.server.public_url.starts_with("https://"));
    assert!(!c.server.drain.is_zero(), "a drain delay for the proxy");
    let kill = Duration::from_secs(secs(fly["kill_timeout"].as_str().unwrap()));
    assert!(
        kill > shutdown_budget(&c),
        "kill_timeout {kill:?} does not cover {:?}",
        shutdown_budget(&c)
    );
    let http = fly["http_service"].as_table().unwrap();
    assert_eq!(
        http["internal_port"].as_integer(),
        Some(i64::from(c.server.listen.port()))
    );
    let paths: Vec<&str> = http["checks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["path"].as_str().unwrap())
        .collect();
    assert!(paths.contains(&"/healthz") && paths.contains(&"/readyz"));
    let mount = fly["mounts"].as_array().unwrap()[0]["destination"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(vec![mount.clone()], runtime().volume);
    let StoreConfig::Sqlite { path } = &c.store;
    assert_eq!(path.parent().unwrap(), Path::new(&mount));
}

/// A YAML example's documents.
fn yaml(path: &str) -> Vec<Yaml> {
    YamlLoader::load_from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// A scalar as the environment would see it.
fn scalar(y: &Yaml) -> Option<String> {
    match y {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    }
}

/// `LEADGATE_..__..` settings anywhere in a YAML example: compose `environment:` maps
/// (`NAME: value`) and Kubernetes `env:` lists (`{ name: NAME, value: "v" }`).
fn yaml_overrides(docs: &[Yaml]) -> EnvVars {
    fn add(env: &mut EnvVars, k: Option<&str>, v: Option<String>) {
        if let (Some(k), Some(v)) = (k, v) {
            if k.starts_with("LEADGATE_") && k.contains("__") {
                env.insert(k.to_string(), v);
            }
        }
    }
    fn walk(y: &Yaml, env: &mut EnvVars) {
        match y {
            Yaml::Hash(h) => {
                add(env, y["name"].as_str(), scalar(&y["value"]));
                for (k, v) in h {
                    add(env, k.as_str(), scalar(v));
                    walk(v, env);
                }
            }
            Yaml::Array(items) => items.iter().for_each(|i| walk(i, env)),
            _ => {}
        }
    }
    let mut env = EnvVars::new();
    docs.iter().for_each(|d| walk(d, &mut env));
    env
}

#[test]
fn the_sidecar_examples_set_real_settings_mount_the_volume_and_allow_the_drain() {
    for (file, grace_key) in [
        ("deploy/docker-compose.yml", "stop_grace_period:"),
        (
            "deploy/kubernetes-sidecar.yaml",
            "terminationGracePeriodSeconds:",
        ),
    ] {
        let text = read(file);
        let mut env = yaml_overrides(&yaml(file));
        assert!(
            env.contains_key("LEADGATE_SERVER__DRAIN_SECS"),
            "{file}: no overrides found"
        );
        // The secrets the example wires in from its secret store.
        for var in ["HUBSPOT_TOKEN", "TYPEFORM_SECRET", "LEADGATE_ADMIN_TOKEN"] {
            env.insert(var.into(), "set-by-the-secret-store".into());
        }
        let c = image_settings(&env);
        assert!(c.admin.token.is_some(), "{file}: the admin API is on");
        let grace = text
            .lines()
            .find_map(|l| l.trim().strip_prefix(grace_key))
            .unwrap_or_else(|| panic!("{file}: no {grace_key}"));
        let grace = Duration::from_secs(secs(grace.split('#').next().unwrap().trim()));
        assert!(
            grace > shutdown_budget(&c),
            "{file}: {grace_key} {grace:?} does not cover {:?}",
            shutdown_budget(&c)
        );
        let volume = &runtime().volume[0];
        assert!(
            text.contains(&format!(":{volume}")) || text.contains(&format!("mountPath: {volume}")),
            "{file} does not mount {volume}"
        );
        assert!(text.contains("/readyz"), "{file}: readiness on /readyz");
    }
    // The compose health check runs the binary itself (no curl in the image).
    let compose = read("deploy/docker-compose.yml");
    assert!(compose.contains(r#""/usr/local/bin/leadgate", "probe", "--url""#));
    // Kubernetes: non-root, and the volume writable by the image's user.
    let k8s = read("deploy/kubernetes-sidecar.yaml");
    assert!(k8s.contains("runAsNonRoot: true"));
    assert!(k8s.contains("fsGroup: 65532"));
}

/// The operator listener's address under these settings, which must be its own and reachable
/// from outside the container (a scraper cannot reach loopback).
fn operator_port(file: &str, c: &Config) -> u16 {
    let AdminListen::Own(addr) = c.server.admin_listen else {
        panic!("{file}: metrics and the admin API share the public listener");
    };
    assert!(
        !addr.ip().is_loopback(),
        "{file}: admin_listen {addr} cannot be scraped from outside the container"
    );
    assert_ne!(addr.port(), c.server.listen.port(), "{file}");
    addr.port()
}

fn secrets_set(mut env: EnvVars) -> EnvVars {
    for var in ["HUBSPOT_TOKEN", "TYPEFORM_SECRET", "LEADGATE_ADMIN_TOKEN"] {
        env.insert(var.into(), "set-by-the-secret-store".into());
    }
    env
}

fn url_port(url: &str) -> u16 {
    reqwest::Url::parse(url)
        .ok()
        .and_then(|u| u.port_or_known_default())
        .unwrap_or_else(|| panic!("{url:?} is not a URL with a port"))
}

#[test]
fn fly_scrapes_the_operator_port_on_the_private_network_and_serves_only_the_public_one() {
    let fly: toml::Table = read("fly.toml").parse().unwrap();
    let env: EnvVars = fly["env"]
        .as_table()
        .unwrap()
        .iter()
        .map(|(k, v)| (k.clone(), v.as_str().unwrap().to_string()))
        .collect();
    let c = image_settings(&env);
    let admin = operator_port("fly.toml", &c);
    let metrics = fly["metrics"].as_table().expect("fly.toml has [metrics]");
    assert_eq!(metrics["port"].as_integer(), Some(i64::from(admin)));
    assert_eq!(metrics["path"].as_str(), Some("/metrics"));
    // The proxy routes the internet only to the public listener.
    let mut routed = vec![fly["http_service"]["internal_port"].as_integer().unwrap()];
    for svc in fly
        .get("services")
        .and_then(|s| s.as_array())
        .into_iter()
        .flatten()
    {
        routed.push(svc["internal_port"].as_integer().unwrap());
    }
    assert_eq!(routed, [i64::from(c.server.listen.port())]);
}

#[test]
fn kubernetes_scrapes_the_named_metrics_port_and_leaves_it_out_of_the_service() {
    let file = "deploy/kubernetes-sidecar.yaml";
    let docs = yaml(file);
    let of_kind = |kind: &str| {
        docs.iter()
            .find(|d| d["kind"].as_str() == Some(kind))
            .unwrap_or_else(|| panic!("{file}: no {kind}"))
    };
    let pod = &of_kind("Deployment")["spec"]["template"];
    let leadgate = pod["spec"]["containers"]
        .as_vec()
        .unwrap()
        .iter()
        .find(|c| c["name"].as_str() == Some("leadgate"))
        .expect("a leadgate container");
    let c = image_settings(&secrets_set(yaml_overrides(std::slice::from_ref(leadgate))));
    let admin = operator_port(file, &c);
    let port_named = |name: &str| {
        leadgate["ports"]
            .as_vec()
            .unwrap()
            .iter()
            .find(|p| p["name"].as_str() == Some(name))
            .and_then(|p| p["containerPort"].as_i64())
            .unwrap_or_else(|| panic!("{file}: no container port named {name}"))
    };
    assert_eq!(port_named("metrics"), i64::from(admin));
    assert_eq!(port_named("leadgate"), i64::from(c.server.listen.port()));

    let annotations = &pod["metadata"]["annotations"];
    assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
    assert_eq!(
        annotations["prometheus.io/port"].as_str(),
        Some(admin.to_string().as_str())
    );
    assert_eq!(annotations["prometheus.io/path"].as_str(), Some("/metrics"));

    // Probes on the public listener (the named port `leadgate`).
    for (probe, path) in [("readinessProbe", "/readyz"), ("livenessProbe", "/healthz")] {
        let get = &leadgate[probe]["httpGet"];
        assert_eq!(get["path"].as_str(), Some(path), "{probe}");
        assert_eq!(get["port"].as_str(), Some("leadgate"), "{probe}");
    }

    // The Service routes to the webhooks, never to the metrics port.
    let ports = of_kind("Service")["spec"]["ports"].as_vec().unwrap();
    let targets: Vec<String> = ports
        .iter()
        .map(|p| scalar(&p["targetPort"]).expect("targetPort"))
        .collect();
    assert!(targets.iter().any(|t| t == "leadgate"), "{targets:?}");
    assert!(
        !targets
            .iter()
            .any(|t| t == "metrics" || *t == admin.to_string()),
        "{file}: the Service exposes the metrics port: {targets:?}"
    );
}

#[test]
fn compose_keeps_the_operator_port_on_its_network_and_probes_the_public_one() {
    let file = "deploy/docker-compose.yml";
    let docs = yaml(file);
    let services = &docs[0]["services"];
    let leadgate = &services["leadgate"];
    let c = image_settings(&secrets_set(yaml_overrides(std::slice::from_ref(leadgate))));
    let admin = operator_port(file, &c);
    // Published ports ("HOST:CONTAINER"): the public one only.
    let published: Vec<u16> = leadgate["ports"]
        .as_vec()
        .unwrap()
        .iter()
        .map(|p| {
            let p = scalar(p).unwrap();
            p.rsplit(':').next().unwrap().parse().unwrap()
        })
        .collect();
    assert_eq!(published, [c.server.listen.port()]);
    let exposed: Vec<String> = leadgate["expose"]
        .as_vec()
        .map(|v| v.iter().filter_map(scalar).collect())
        .unwrap_or_default();
    assert_eq!(
        exposed,
        [admin.to_string()],
        "{file}: expose the operator port to the network"
    );
    // The health check probes readiness on the public listener.
    let check: Vec<String> = leadgate["healthcheck"]["test"]
        .as_vec()
        .unwrap()
        .iter()
        .filter_map(scalar)
        .collect();
    let url = check
        .iter()
        .skip_while(|a| *a != "--url")
        .nth(1)
        .expect("probe --url");
    assert_eq!(url_port(url), c.server.listen.port());
    assert!(url.ends_with("/readyz"), "{url}");
    // The app is pointed at the admin API on the operator port.
    let admin_url = services["app"]["environment"]["LEADGATE_ADMIN_URL"]
        .as_str()
        .unwrap();
    assert_eq!(url_port(admin_url), admin, "{admin_url}");
}
