//! The `leadgate` binary's commands, run as a user would.

use std::process::Command;

use crate::support::{fixture, AppBuilder};

fn leadgate() -> Command {
    Command::new(env!("CARGO_BIN_EXE_leadgate"))
}

#[tokio::test]
async fn send_signs_a_payload_like_the_provider_and_the_service_accepts_it() {
    let app = AppBuilder::new()
        .toml("[[sources]]\nname = \"typeform\"\nscheme = \"typeform\"\nsecret_env = \"TYPEFORM_SECRET\"\n")
        .env("TYPEFORM_SECRET", "quick-start")
        .spawn()
        .await;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("leadgate.toml");
    std::fs::write(&cfg, "[[sources]]\nname = \"typeform\"\nscheme = \"typeform\"\nsecret_env = \"TYPEFORM_SECRET\"\n").unwrap();
    let payload = dir.path().join("tf.json");
    std::fs::write(&payload, fixture("typeform/form_response.json")).unwrap();
    let url = format!("{}/webhooks/typeform", app.base);
    let run = move |secret: &str| {
        leadgate()
            .arg("--config")
            .arg(&cfg)
            .args(["send", "--source", "typeform", "--payload"])
            .arg(&payload)
            .args(["--url", &url])
            .env("TYPEFORM_SECRET", secret)
            .output()
            .unwrap()
    };
    let out =
        tokio::task::spawn_blocking(move || (run("quick-start"), run("quick-start"), run("wrong")))
            .await
            .unwrap();
    let text = |o: &std::process::Output| String::from_utf8_lossy(&o.stdout).to_string();
    assert!(out.0.status.success(), "{}", text(&out.0));
    assert!(text(&out.0).starts_with("202 "), "{}", text(&out.0));
    assert!(text(&out.1).starts_with("200 ") && text(&out.1).contains("\"duplicate\":true"));
    assert!(!out.2.status.success());
    assert!(text(&out.2).starts_with("401 "));
    assert_eq!(app.count_events(), 1);
}

#[test]
fn check_names_the_file_key_and_reason_and_exits_1() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("bad.toml");
    // A mistake in the file is an error even where the source's secret is not set...
    std::fs::write(
        &cfg,
        "[[sources]]\nname = \"tf\"\nscheme = \"typeform\"\nsecret_env = \"NOT_SET_ANYWHERE\"\nbody_limit_bytes = 0\n",
    )
    .unwrap();
    let check = |cfg: &std::path::Path| {
        leadgate()
            .arg("--config")
            .arg(cfg)
            .arg("check")
            .env_remove("NOT_SET_ANYWHERE")
            .output()
            .unwrap()
    };
    let out = check(&cfg);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("bad.toml: sources[0].body_limit_bytes: must be at least 1"),
        "{err}"
    );

    // ...while the unset secret itself is the environment's business: a warning naming it.
    let unset = dir.path().join("unset.toml");
    std::fs::write(
        &unset,
        "[[sources]]\nname = \"tf\"\nscheme = \"typeform\"\nsecret_env = \"NOT_SET_ANYWHERE\"\n",
    )
    .unwrap();
    let out = check(&unset);
    assert_eq!(out.status.code(), Some(0));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(
            "warning: {path}: sources[0].secret_env: environment variable NOT_SET_ANYWHERE is not set (source \"tf\"); `leadgate serve` refuses to start without it"
                .replace("{path}", &unset.display().to_string())
                .as_str()
        ),
        "{said}"
    );

    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, "[server]\nlisten = \"127.0.0.1:0\"\n").unwrap();
    let out = leadgate()
        .arg("--config")
        .arg(&ok)
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_shipped_settings_check_clean() {
    let root = env!("CARGO_MANIFEST_DIR");
    let out = leadgate()
        .current_dir(root)
        .arg("--config")
        .arg(format!("{root}/leadgate.toml"))
        .arg("check")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
