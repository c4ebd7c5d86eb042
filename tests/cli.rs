//! The binary as an operator meets it: configuration errors and `migrate`.

mod support;

use std::process::Command;

fn keygate(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    // A clean environment in an empty folder: no .env, no inherited settings.
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

#[test]
fn run_without_a_token_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DISCORD_TOKEN is not set"), "{stderr}");
    assert!(
        !dir.path().join("keygate.db").exists(),
        "nothing is created before the configuration is complete"
    );
}

#[test]
fn a_bad_setting_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path())
        .env("DISCORD_TOKEN", "x")
        .env("HTTP_ADDR", "nowhere")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP_ADDR is invalid"), "{stderr}");
}

#[test]
fn migrate_creates_the_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("keygate.db").exists());
    // A second run finds nothing to do and still succeeds.
    let again = keygate(dir.path()).arg("migrate").output().unwrap();
    assert!(again.status.success());
}

#[test]
fn dotenv_in_the_working_folder_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "DATABASE_URL=sqlite://from-dotenv.db\n",
    )
    .unwrap();
    let out = keygate(dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("from-dotenv.db").exists());
}

/// A keygate process whose log lines (JSON) are read as they come.
struct Running {
    child: std::process::Child,
    lines: std::sync::mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn spawn(dir: &std::path::Path, args: &[&str], env: &[(&str, &str)]) -> Self {
        let mut cmd = keygate(dir);
        cmd.args(args)
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("start keygate");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            use std::io::BufRead;
            for line in std::io::BufReader::new(stderr)
                .lines()
                .map_while(Result::ok)
            {
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        Self {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first log line whose message is `message`, waiting up to a minute.
    fn wait_for(&mut self, message: &str) -> serde_json::Value {
        let matching = |line: &str| {
            serde_json::from_str::<serde_json::Value>(line)
                .ok()
                .filter(|v| v["fields"]["message"] == message)
        };
        if let Some(v) = self.seen.iter().find_map(|l| matching(l)) {
            return v;
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if let Some(v) = matching(&line) {
                        return v;
                    }
                }
                Err(_) => panic!("no `{message}` log line; saw:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// The verify API's base URL, from the line that reports the bound address.
    fn api(&mut self) -> String {
        let line = self.wait_for("verify API listening");
        format!("http://{}", line["fields"]["addr"].as_str().expect("addr"))
    }

    /// SIGTERM, as a service manager stops it; the exit status.
    fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        self.child.wait().unwrap()
    }
}

async fn post_verify(api: &str, key: &str) -> serde_json::Value {
    reqwest::Client::new()
        .post(format!("{api}/v1/keys/verify"))
        .json(&serde_json::json!({ "key": key }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

// Multi-threaded: reading the child's log blocks one worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_needs_no_discord_token_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let mut serve = Running::spawn(dir.path(), &["serve"], &[("HTTP_ADDR", "127.0.0.1:0")]);
    let api = serve.api();
    let health = reqwest::get(format!("{api}/healthz")).await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(
        reqwest::get(format!("{api}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let answer = post_verify(&api, "kg_nope").await;
    assert_eq!(answer["code"], "MALFORMED");
    assert!(serve.terminate().success(), "a clean shutdown");
}

#[test]
fn an_open_address_without_a_token_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    for args in [&["serve"][..], &[][..]] {
        let out = keygate(dir.path())
            .args(args)
            .env("DISCORD_TOKEN", "x")
            .env("HTTP_ADDR", "0.0.0.0:0")
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("VERIFY_TOKEN") && stderr.contains("HTTP_ADDR"),
            "{stderr}"
        );
    }
    assert!(
        !dir.path().join("keygate.db").exists(),
        "refused before anything is created"
    );
}

// Multi-threaded: reading the child's log blocks one worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn run_serves_the_api_beside_the_bot() {
    let fake = support::fake_discord::FakeDiscord::start().await;
    let dir = tempfile::tempdir().unwrap();
    let base = fake.base_url();
    let guild = support::fake_discord::FakeDiscord::GUILD_ID.to_string();
    let mut run = Running::spawn(
        dir.path(),
        &["run"],
        &[
            ("DISCORD_TOKEN", "fake-bot-token"),
            ("DISCORD_API_URL", &base),
            ("DISCORD_GUILD_ID", &guild),
            ("HTTP_ADDR", "127.0.0.1:0"),
        ],
    );
    let api = run.api();
    run.wait_for("commands registered");
    assert_eq!(
        reqwest::get(format!("{api}/readyz"))
            .await
            .unwrap()
            .status(),
        200
    );
    let unknown = keygate::domain::credentials::ApiKey::generate();
    assert_eq!(
        post_verify(&api, unknown.expose()).await["code"],
        "NOT_FOUND"
    );
    assert!(run.terminate().success(), "bot and API both stop cleanly");
}

/// Process B is a real `keygate serve` whose cache holds an answer for its
/// longest lifetime (5 s); process A (this test) revokes; B must say so
/// within 2 s of caching it, which only the PostgreSQL notification explains.
// Multi-threaded: reading the child's log blocks one worker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_reaches_another_process_through_postgres() {
    let db = support::TestDb::postgres().await;
    let (app, key) = support::active_app(&db, "Replicated").await;
    let dir = tempfile::tempdir().unwrap();
    let url = db.database_url();
    let mut serve = Running::spawn(
        dir.path(),
        &["serve"],
        &[
            ("HTTP_ADDR", "127.0.0.1:0"),
            ("DATABASE_URL", &url),
            ("VERIFY_CACHE_TTL", "5"),
            ("RUST_LOG", "debug"),
        ],
    );
    let api = serve.api();
    serve.wait_for("listening for credential changes");
    assert_eq!(post_verify(&api, key.expose()).await["code"], "VALID");
    let started = std::time::Instant::now();
    support::revoke(
        &db.service,
        support::GUILD,
        &app,
        keygate::service::Actor::approver(support::BOB),
    )
    .await
    .unwrap();
    loop {
        let code = post_verify(&api, key.expose()).await["code"].clone();
        if code == "REVOKED" {
            break;
        }
        assert_eq!(code, "VALID");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(2),
            "process B still says VALID"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(serve.terminate().success());
    db.close().await;
}
