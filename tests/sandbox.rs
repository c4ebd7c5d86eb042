//! `keygate sandbox` as a newcomer meets it, driven in headless Chromium through WebDriver.
//
// The browser test needs Debian's `chromium` and `chromium-driver`. Without them it says it
// is skipped, except on CI (`CI=true`, where .ci/run installs them): there it fails.

use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long one thing may take to show on the page.
const WAIT: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(100);
/// The whole flow, however many steps are slow: the test never hangs.
const FLOW_WITHIN: Duration = Duration::from_secs(180);

/// What the newcomer types into the form: valid by `domain::validation`'s rules.
const NAME: &str = "Spa Mobile";
const URI: &str = "https://spa.example.com";
const DESCRIPTION: &str = "Guests book treatments.";
const LOGIN_URLS: [&str; 2] = [
    "https://spa.example.com/callback",
    "http://localhost:3000/cb",
];
const LOGOUT_URL: &str = "https://spa.example.com/bye";
/// The scope step's API groups to tick (keys of the built-in catalog).
const SCOPES: [&str; 2] = ["guests", "bookings"];

/// A child process killed and reaped when dropped, however the test ends (what tokio's
/// `kill_on_drop` does, for std's `Child`).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The binary in an empty folder (so no developer's .env is read), with nothing that could
/// point it at a real Discord or a real database.
fn keygate(dir: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    cmd.current_dir(dir)
        .env_remove("DISCORD_TOKEN")
        .env_remove("DATABASE_URL")
        .env_remove("SANDBOX_DATABASE_URL")
        // The scope step ticks groups of the built-in catalog.
        .env_remove("SCOPE_CATALOG")
        // The ready line is at info; the temporary database goes under `dir`.
        .env("RUST_LOG", "info")
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    cmd
}

/// A running `keygate sandbox`, its page's address, and its log so far.
struct Sandbox {
    page: String,
    started_in_ms: u64,
    log: Arc<Mutex<Vec<String>>>,
    _process: KillOnDrop,
}

impl Sandbox {
    fn start(dir: &Path) -> Self {
        let child = keygate(dir)
            .arg("sandbox")
            .env("SANDBOX_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            .spawn()
            .expect("cannot start `keygate sandbox`");
        let mut process = KillOnDrop(child);
        let stderr = process.0.stderr.take().expect("stderr is piped");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines, rx) = mpsc::channel();
        let kept = Arc::clone(&log);
        // Read to the end, even once nobody listens: a full pipe would stall the sandbox.
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                kept.lock().unwrap().push(line.clone());
                let _ = lines.send(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let line = match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => line,
                Err(RecvTimeoutError::Timeout) => {
                    panic!("no ready line in 60 s; its log:\n{}", tail(&log, 60))
                }
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "`keygate sandbox` ended before it was ready ({:?}); its log:\n{}",
                    process.0.wait(),
                    tail(&log, 60)
                ),
            };
            if let Some((page, started_in_ms)) = ready(&line) {
                assert!(
                    page.starts_with("http://127.0.0.1:"),
                    "the page is served on loopback: {line}"
                );
                return Self {
                    page,
                    started_in_ms,
                    log,
                    _process: process,
                };
            }
        }
    }
}

/// `page` and `started_in_ms` of the JSON line `the sandbox is ready: open …`.
fn ready(line: &str) -> Option<(String, u64)> {
    let v: Value = serde_json::from_str(line).ok()?;
    let fields = v.get("fields").unwrap_or(&v);
    let message = fields["message"].as_str()?;
    if !message.starts_with("the sandbox is ready: open http://") {
        return None;
    }
    let page = fields["page"].as_str()?.to_owned();
    Some((page, fields["started_in_ms"].as_u64()?))
}

/// The last `n` lines of a log.
fn tail(log: &Mutex<Vec<String>>, n: usize) -> String {
    let log = log.lock().unwrap();
    log[log.len().saturating_sub(n)..].join("\n")
}

/// Whether Chromium and chromedriver are here. On CI (.ci/run installs them) their absence
/// is a failure; elsewhere the browser test is skipped and says so.
fn browser_installed() -> bool {
    let missing: Vec<&str> = [CHROMIUM, CHROMEDRIVER]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return true;
    }
    if std::env::var("CI").is_ok_and(|v| v == "true") {
        panic!(
            "CI=true but {} is not installed: .ci/run must install chromium and chromium-driver before cargo test",
            missing.join(" and ")
        );
    }
    // Straight to stderr: libtest captures println! of a passing test, and a skip must show.
    let _ = writeln!(
        std::io::stderr(),
        "skipped: Chromium/chromedriver not installed (apt-get install chromium chromium-driver)"
    );
    false
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("no free port on 127.0.0.1")
        .port()
}

/// chromedriver on a free port of 127.0.0.1, and a session of headless Chromium through it.
async fn open_browser(dir: &Path) -> (Client, KillOnDrop) {
    let port = free_port();
    let driver = Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        // Chromium's profile goes under `dir` too.
        .env("TMPDIR", dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("cannot start chromedriver");
    let driver = KillOnDrop(driver);
    let deadline = Instant::now() + WAIT;
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "chromedriver did not listen on 127.0.0.1:{port} within {} s",
            WAIT.as_secs()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let Value::Object(capabilities) = json!({
        "goog:chromeOptions": {
            "binary": CHROMIUM,
            "args": ["--headless=new", "--no-sandbox", "--window-size=1280,900"],
        }
    }) else {
        unreachable!("an object")
    };
    // chromedriver is on loopback: plain HTTP, no TLS connector.
    let client = ClientBuilder::new(HttpConnector::new())
        .capabilities(capabilities)
        .connect(&format!("http://127.0.0.1:{port}"))
        .await
        .unwrap_or_else(|e| panic!("cannot open a headless Chromium session: {e}"));
    (client, driver)
}

/// The page, as a person sees and uses it; every look waits up to [`WAIT`].
struct Page<'a> {
    c: &'a Client,
    /// With `SANDBOX_SCREENSHOTS` set (scripts/screenshots does), the folder each step's
    /// picture goes to: the README's screenshots are this flow's.
    shots: Option<PathBuf>,
}

/// What the newcomer got.
struct Delivered {
    app_id: String,
    secret: String,
    key: String,
}

impl Page<'_> {
    /// Saves what the page shows now as `{name}.png`, when screenshots are asked for.
    async fn shot(&self, name: &str) -> Result<(), String> {
        let Some(dir) = &self.shots else {
            return Ok(());
        };
        let png = self
            .c
            .screenshot()
            .await
            .map_err(|e| format!("no screenshot: {e}"))?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).map_err(|e| format!("cannot write {}: {e}", path.display()))
    }

    /// Polls `probe` until it finds what it looks for (a WebDriver error, such as an element
    /// that a re-render replaced, is one more miss), for up to [`WAIT`].
    async fn until<T>(
        &self,
        what: &str,
        mut probe: impl AsyncFnMut() -> Result<Option<T>, CmdError>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + WAIT;
        loop {
            // What the last look saw is what is reported.
            let last_error = match probe().await {
                Ok(Some(found)) => return Ok(found),
                Ok(None) => None,
                Err(e) => Some(e.to_string()),
            };
            if Instant::now() >= deadline {
                let error = last_error
                    .map(|e| format!(" (last WebDriver error: {e})"))
                    .unwrap_or_default();
                return Err(format!("waited {} s for {what}{error}", WAIT.as_secs()));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// The first element matching `css` that is shown, under `root` or anywhere.
    async fn shown(&self, root: Option<&Element>, css: &str) -> Result<Option<Element>, CmdError> {
        let all = match root {
            Some(root) => root.find_all(Locator::Css(css)).await?,
            None => self.c.find_all(Locator::Css(css)).await?,
        };
        for e in all {
            if e.is_displayed().await? {
                return Ok(Some(e));
            }
        }
        Ok(None)
    }

    async fn wait_for(&self, css: &str) -> Result<Element, String> {
        self.until(&format!("`{css}` to show"), async || {
            self.shown(None, css).await
        })
        .await
    }

    async fn wait_gone(&self, css: &str) -> Result<(), String> {
        self.until(&format!("`{css}` to go"), async || {
            Ok(self.shown(None, css).await?.is_none().then_some(()))
        })
        .await
    }

    async fn click(&self, css: &str) -> Result<(), String> {
        self.until(&format!("`{css}` to be clickable"), async || {
            let Some(e) = self.shown(None, css).await? else {
                return Ok(None);
            };
            if !e.is_enabled().await? {
                return Ok(None);
            }
            e.click().await?;
            Ok(Some(()))
        })
        .await
    }

    /// The newest message of the open view whose text holds every one of `texts`.
    async fn message_with(&self, texts: &[&str]) -> Result<Option<Element>, CmdError> {
        let messages = self
            .c
            .find_all(Locator::Css("#message-list [data-message-id]"))
            .await?;
        for m in messages.into_iter().rev() {
            let text = m.text().await?;
            if texts.iter().all(|t| text.contains(t)) {
                return Ok(Some(m));
            }
        }
        Ok(None)
    }

    /// Waits for a message holding `texts`; returns its text.
    async fn wait_message(&self, texts: &[&str]) -> Result<String, String> {
        self.until(&format!("a message saying {texts:?}"), async || match self
            .message_with(texts)
            .await?
        {
            Some(m) => Ok(Some(m.text().await?)),
            None => Ok(None),
        })
        .await
    }

    /// Clicks `css` inside the newest message holding `texts`.
    async fn click_in(&self, texts: &[&str], css: &str) -> Result<(), String> {
        let what = format!("`{css}` in a message saying {texts:?} to be clickable");
        self.until(&what, async || {
            let Some(m) = self.message_with(texts).await? else {
                return Ok(None);
            };
            let Some(e) = self.shown(Some(&m), css).await? else {
                return Ok(None);
            };
            if !e.is_enabled().await? {
                return Ok(None);
            }
            e.click().await?;
            Ok(Some(()))
        })
        .await
    }

    /// Opens the select menu whose custom id ends in `:{action}` in the message holding
    /// `texts`, picks `values`, and (a multi-select) closes it, which sends the choice. Then
    /// waits for the bot's edit of the message to carry it, so no later click overtakes it.
    async fn choose(&self, texts: &[&str], action: &str, values: &[&str]) -> Result<(), String> {
        let head = format!(".select-head[data-custom-id$=\":{action}\"]");
        self.click_in(texts, &head).await?;
        for value in values {
            self.click_in(
                texts,
                &format!(".select-list [data-option-value=\"{value}\"]"),
            )
            .await?;
        }
        if values.len() > 1 {
            self.click_in(texts, &head).await?;
        }
        let what = format!("the bot to take {values:?} in the `{action}` menu");
        self.until(&what, async || {
            let state = self.server_state().await?;
            Ok(chosen_in(&state, action)
                .is_some_and(|chosen| {
                    chosen.len() == values.len()
                        && values.iter().all(|v| chosen.iter().any(|c| c == v))
                })
                .then_some(()))
        })
        .await
    }

    /// `/api/state` as the page reads it: the one look behind the page, so a wait can tell
    /// the bot's answer from the page's own echo of a choice (both show the same label).
    async fn server_state(&self) -> Result<Value, CmdError> {
        let text = self
            .c
            .execute_async(
                "const done = arguments[arguments.length - 1];
                 fetch('/api/state', {cache: 'no-store'}).then(r => r.text()).then(done, e => done(String(e)));",
                vec![],
            )
            .await?;
        Ok(text
            .as_str()
            .and_then(|t| serde_json::from_str(t).ok())
            .unwrap_or(Value::Null))
    }

    /// Everything the page shows, for a failure's message.
    async fn text(&self) -> String {
        match self
            .c
            .execute("return document.body.innerText;", vec![])
            .await
        {
            Ok(Value::String(text)) => text,
            Ok(other) => other.to_string(),
            Err(e) => format!("(cannot read the page: {e})"),
        }
    }

    /// The text of the inline code spans of the newest message holding `texts`.
    async fn codes_in(&self, texts: &[&str]) -> Result<Vec<String>, String> {
        self.until(&format!("code in a message saying {texts:?}"), async || {
            let Some(m) = self.message_with(texts).await? else {
                return Ok(None);
            };
            let mut codes = Vec::new();
            for code in m.find_all(Locator::Css("code.inline")).await? {
                codes.push(code.text().await?);
            }
            Ok(Some(codes))
        })
        .await
    }
}

/// The values the bot's message marks chosen (`default`) in the select whose custom id ends
/// in `:{action}`, in any message of the state.
fn chosen_in(state: &Value, action: &str) -> Option<Vec<String>> {
    let suffix = format!(":{action}");
    let channels = state["messages"].as_object()?.values();
    let dm = std::iter::once(&state["dm"]["messages"]);
    let select = channels
        .chain(dm)
        .filter_map(Value::as_array)
        .flatten()
        .filter_map(|m| m["components"].as_array())
        .flatten()
        .filter_map(|row| row["components"].as_array())
        .flatten()
        .rfind(|c| {
            c["custom_id"]
                .as_str()
                .is_some_and(|id| id.ends_with(&suffix))
        })?;
    Some(
        select["options"]
            .as_array()?
            .iter()
            .filter(|o| o["default"] == json!(true))
            .filter_map(|o| o["value"].as_str().map(str::to_owned))
            .collect(),
    )
}

fn is_base62(s: &str) -> bool {
    s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// The code among `codes` that starts with `prefix` (`what` names it when none does).
fn code_with(codes: &[String], prefix: &str, what: &str) -> Result<String, String> {
    codes
        .iter()
        .find(|c| c.starts_with(prefix))
        .cloned()
        .ok_or_else(|| format!("no {what} among {codes:?}"))
}

/// `/app create` to a finished delivery, as a newcomer does it.
async fn register_an_app(p: &Page<'_>, page: &str) -> Result<Delivered, String> {
    let c = p.c;
    c.goto(page)
        .await
        .map_err(|e| format!("cannot open {page}: {e}"))?;
    // The page has loaded the world: #general is open.
    p.wait_for("[data-channel=\"general\"][aria-current=\"page\"]")
        .await?;
    // Any script error from here on fails the flow, as a broken page would fail a person.
    c.execute(
        "window.pageErrors = [];
         addEventListener('error', e => pageErrors.push(String(e.message)));
         addEventListener('unhandledrejection', e => pageErrors.push(String(e.reason)));",
        vec![],
    )
    .await
    .map_err(|e| format!("cannot watch the page's errors: {e}"))?;

    // The slash command, picked from the suggestions, then sent with Enter.
    p.click("#composer").await?;
    let composer = p.wait_for("#composer").await?;
    composer
        .send_keys("/app create")
        .await
        .map_err(|e| format!("cannot type into #composer: {e}"))?;
    p.click("#popup [data-command=\"app create\"]").await?;
    let pill = p.wait_for("#composer-cmd .cmd-pill").await?;
    let pill = pill.text().await.map_err(|e| e.to_string())?;
    if !pill.contains("/app create") {
        return Err(format!("the composer shows `{pill}`, not /app create"));
    }
    p.shot("1-command").await?;
    composer
        .send_keys(&Key::Enter.to_string())
        .await
        .map_err(|e| format!("cannot press Enter in #composer: {e}"))?;

    // Step 1: the Create application form.
    let modal = p.wait_for("#modal").await?;
    let form_id = modal
        .attr("data-custom-id")
        .await
        .map_err(|e| e.to_string())?
        .unwrap_or_default();
    if !form_id.starts_with("kg:newdraft:") {
        return Err(format!("the modal is `{form_id}`, not a new draft's form"));
    }
    let login_urls = LOGIN_URLS.join("\n");
    for (field, value) in [
        ("name", NAME),
        ("uri", URI),
        ("description", DESCRIPTION),
        ("login_urls", login_urls.as_str()),
        ("logout_urls", LOGOUT_URL),
    ] {
        let css = format!("#modal [name=\"{field}\"]");
        p.click(&css).await?;
        let input = p.wait_for(&css).await?;
        input
            .send_keys(value)
            .await
            .map_err(|e| format!("cannot type into {css}: {e}"))?;
        let typed = input.prop("value").await.map_err(|e| e.to_string())?;
        if typed.as_deref() != Some(value) {
            return Err(format!("{css} holds {typed:?} after typing {value:?}"));
        }
    }
    p.shot("2-form").await?;
    p.click("#modal-submit").await?;
    p.wait_gone("#modal").await?;

    // Step 2: who signs in, and where the traffic comes from.
    let options = ["Spa Mobile", "Step 2 of 4: Options"];
    p.wait_message(&options).await?;
    p.choose(&options, "usertype", &["employee"]).await?;
    p.choose(&options, "source", &["client_app"]).await?;
    p.shot("3-options").await?;
    p.click_in(&options, "[data-custom-id$=\":next\"]").await?;

    // Step 3: the API groups, ticked in the multi-select.
    let scope = ["Spa Mobile", "Step 3 of 4: Scope"];
    p.wait_message(&scope).await?;
    p.choose(&scope, "scopes", &SCOPES).await?;
    p.shot("4-scopes").await?;
    p.click_in(&scope, "[data-custom-id$=\":next\"]").await?;

    // Step 4: the review shows what was chosen; Submit.
    let review = ["Spa Mobile", "Step 4 of 4: Review"];
    let shown = p.wait_message(&review).await?;
    for expected in [URI, "Employee", "Client App", "Guests", "Online bookings"] {
        if !shown.contains(expected) {
            return Err(format!("the review does not show {expected}:\n{shown}"));
        }
    }
    p.shot("5-review").await?;
    p.click_in(&review, "[data-custom-id$=\":submit\"]").await?;
    p.wait_message(&["Spa Mobile", "is registered", "sent to your DMs"])
        .await?;

    // The DM: marked unread, then opened.
    p.wait_for("[data-channel=\"dm\"].unread").await?;
    p.click("[data-channel=\"dm\"]").await?;
    p.wait_for("[data-channel=\"dm\"][aria-current=\"page\"]")
        .await?;
    let credentials = ["Credentials for", "Application ID:", "Secret:"];
    p.wait_message(&credentials).await?;
    let codes = p.codes_in(&credentials).await?;
    let app_id = code_with(&codes, "app_", "Application ID")?;
    let secret = code_with(&codes, "kgs_", "Secret")?;
    if app_id.len() != 26 || !is_base62(&app_id[4..]) {
        return Err(format!("`{app_id}` is not an Application ID"));
    }
    if secret.len() != 48 || !is_base62(&secret[4..]) {
        return Err(format!("`{secret}` is not a 48-character Secret"));
    }
    p.shot("6-credentials").await?;

    // Generate API Key: the key comes in a message of its own.
    p.click_in(&credentials, "[data-custom-id$=\":genkey\"]")
        .await?;
    let key_message = [
        "API key for",
        "API key:",
        "It works only for this application",
    ];
    p.wait_message(&key_message).await?;
    let codes = p.codes_in(&key_message).await?;
    let key = code_with(&codes, "kg_", "API key")?;
    if key.len() != 39 || !is_base62(&key[3..]) {
        return Err(format!("`{key}` is not a 39-character API key"));
    }
    p.shot("7-api-key").await?;
    // Shown: the credentials message keeps Finish only.
    p.until(
        "Generate API Key to leave the credentials message",
        async || {
            let Some(m) = p.message_with(&credentials).await? else {
                return Ok(None);
            };
            let generate = m
                .find_all(Locator::Css("[data-custom-id$=\":genkey\"]"))
                .await?;
            Ok(generate.is_empty().then_some(()))
        },
    )
    .await?;

    // Finish, on the message holding the Secret: it is redacted at once, and the key's
    // message soon after (Finish hastens every redaction of the app).
    p.click_in(&credentials, "[data-custom-id$=\":finish\"]")
        .await?;
    let redacted = [
        "(delivered)",
        app_id.as_str(),
        "The credentials shown here once have been removed from this message.",
    ];
    p.wait_message(&redacted).await?;
    p.until("the Secret and the key to leave the DM", async || {
        let text =
            p.c.find(Locator::Css("#message-list"))
                .await?
                .text()
                .await?;
        Ok((!text.contains(&secret) && !text.contains(&key)).then_some(()))
    })
    .await?;
    p.shot("8-finished").await?;

    // The record in #audit-log names the app by its id, and holds no credential.
    p.click("[data-channel=\"audit-log\"]").await?;
    let record = p.wait_message(&[NAME, app_id.as_str()]).await?;
    if record.contains(&secret) || record.contains(&key) {
        return Err(format!("#audit-log shows a credential:\n{record}"));
    }
    p.shot("9-audit-log").await?;
    let errors = c
        .execute("return window.pageErrors;", vec![])
        .await
        .map_err(|e| format!("cannot read the page's errors: {e}"))?;
    if errors.as_array().is_none_or(|e| !e.is_empty()) {
        return Err(format!("the page's scripts failed: {errors}"));
    }
    Ok(Delivered {
        app_id,
        secret,
        key,
    })
}

#[tokio::test]
async fn a_newcomer_registers_an_app_in_the_browser() {
    if !browser_installed() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let sandbox = Sandbox::start(dir.path());
    println!("sandbox started in {} ms", sandbox.started_in_ms);
    let (client, _driver) = open_browser(dir.path()).await;
    let shots = std::env::var_os("SANDBOX_SCREENSHOTS")
        .filter(|dir| !dir.is_empty())
        .map(PathBuf::from);
    let page = Page { c: &client, shots };
    let began = Instant::now();
    let outcome =
        match tokio::time::timeout(FLOW_WITHIN, register_an_app(&page, &sandbox.page)).await {
            Ok(outcome) => outcome,
            Err(_) => Err(format!(
                "the flow did not finish in {} s",
                FLOW_WITHIN.as_secs()
            )),
        };
    let failure = match &outcome {
        Ok(_) => None,
        Err(why) => {
            let shot = screenshot_path();
            let saved = match client.screenshot().await {
                Ok(png) => std::fs::write(&shot, png)
                    .map(|()| format!("screenshot: {}", shot.display()))
                    .unwrap_or_else(|e| format!("cannot write {}: {e}", shot.display())),
                Err(e) => format!("no screenshot: {e}"),
            };
            Some(format!(
                "{why}\n{saved}\n--- the page's text ---\n{}\n--- the sandbox's last log lines ---\n{}",
                page.text().await,
                tail(&sandbox.log, 40)
            ))
        }
    };
    // A failure's report holds what the page showed: never the credentials themselves.
    let failure = failure.map(|f| masked(&f));
    // Chromium quits with its session; chromedriver and the sandbox are killed on drop.
    let _ = client.close().await;
    if let Some(failure) = failure {
        panic!("{failure}");
    }
    let delivered = outcome.unwrap();
    println!(
        "registered {} in the browser in {} ms (a {}-character Secret and a {}-character API key, both redacted after Finish)",
        delivered.app_id,
        began.elapsed().as_millis(),
        delivered.secret.len(),
        delivered.key.len(),
    );
}

/// target/sandbox-failure.png (CARGO_TARGET_DIR is honoured: the target dir is the parent of
/// the tests' temporary folder).
fn screenshot_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("sandbox-failure.png")
}

#[test]
fn the_sandbox_refuses_a_non_loopback_address() {
    let dir = tempfile::tempdir().unwrap();
    let began = Instant::now();
    let mut process = KillOnDrop(
        keygate(dir.path())
            .arg("sandbox")
            .env("SANDBOX_ADDR", "0.0.0.0:8090")
            .spawn()
            .expect("cannot start `keygate sandbox`"),
    );
    let status = loop {
        if let Some(status) = process.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            began.elapsed() < Duration::from_secs(10),
            "`keygate sandbox` with SANDBOX_ADDR=0.0.0.0:8090 still runs after 10 s"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(process.0.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success(), "it must refuse: {status}\n{stderr}");
    assert!(stderr.contains("SANDBOX_ADDR"), "{stderr}");
    assert!(stderr.contains("loopback"), "{stderr}");
    println!(
        "refused in {} ms: {}",
        began.elapsed().as_millis(),
        stderr.lines().next().unwrap_or_default()
    );
}

/// `text` with every Secret (`kgs_…`) and API key (`kg_…`) cut to its prefix and length.
fn masked(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("kg") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let prefix = ["kgs_", "kg_"].into_iter().find(|p| from.starts_with(p));
        let Some(prefix) = prefix else {
            out.push_str("kg");
            rest = &from[2..];
            continue;
        };
        let body = &from[prefix.len()..];
        let len = body
            .find(|c: char| !c.is_ascii_alphanumeric())
            .unwrap_or(body.len());
        if len >= 16 {
            out.push_str(&format!("{prefix}…({len} characters hidden)"));
        } else {
            out.push_str(&from[..prefix.len() + len]);
        }
        rest = &body[len..];
    }
    out.push_str(rest);
    out
}

#[test]
fn a_failure_report_hides_the_credentials() {
    let secret = format!("kgs_{}", "a1".repeat(22));
    let key = format!("kg_{}", "B2".repeat(18));
    let text = format!("Secret: {secret}, key `{key}`, kg_short, keygate");
    assert_eq!(
        masked(&text),
        "Secret: kgs_…(44 characters hidden), key `kg_…(36 characters hidden)`, kg_short, keygate"
    );
}
