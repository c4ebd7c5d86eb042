//! Benchmark: the verify API (axum) on a real TCP socket on 127.0.0.1 under a
//! keep-alive HTTP/1 load generator in the same process, against `/healthz` on
//! the same server as the floor; then how fast a revocation on PostgreSQL
//! reaches another process's cache.
//!
//! Run: `cargo bench --bench verify`. Settings: `BENCH_SECONDS` (per scenario,
//! default 3), `BENCH_CONNECTIONS` (default `1,64`), `BENCH_PROPAGATION_ROUNDS`
//! (default 50), `TEST_POSTGRES_URL` (the PostgreSQL parts are skipped, with a
//! note, when it does not answer).

use anyhow::{Context as _, bail, ensure};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::{Method, Request, StatusCode, header};
use hyper_util::rt::TokioIo;
use keygate::domain::application::{LoginUserType, SourceApp};
use keygate::domain::catalog::ScopeCatalog;
use keygate::domain::credentials::{ApiKey, ApplicationId};
use keygate::domain::ids::{GuildId, UserId};
use keygate::domain::validation::AppForm;
use keygate::domain::verification::{Expectations, VerifyCode};
use keygate::service::{Actor, DraftInput, DraftStart, Policy, Service};
use keygate::store::Store;
use sqlx::postgres::PgConnectOptions;
use sqlx::sqlite::SqliteConnectOptions;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const GUILD: GuildId = GuildId(1_000_000_000_000_001);
const OWNER: UserId = UserId(2_000_000_000_000_001);
const APPROVER: UserId = UserId(2_000_000_000_000_002);
/// Requests cycle through this many issued keys, so the cache holds more than one.
const APPS: usize = 100;
/// Long enough for connections, pools and caches to settle before measuring.
const WARMUP: Duration = Duration::from_millis(500);
/// Every this many requests a connection also checks the answer's body.
const CHECK_EVERY: usize = 1024;

const HEALTHZ: &str = "healthz";
const WARM: &str = "verify, warm cache";
const COLD_SQLITE: &str = "verify, cache off, SQLite";
const COLD_POSTGRES: &str = "verify, cache off, PostgreSQL";
const NOT_FOUND: &str = "verify, unknown key (NOT_FOUND)";
const MALFORMED: &str = "verify, malformed key";

/// What one scenario sends, and the JSON field and value every answer must carry.
#[derive(Clone)]
struct Load {
    method: Method,
    path: &'static str,
    /// Request bodies, built once; empty for GET.
    bodies: Arc<[Bytes]>,
    expect: (&'static str, &'static str),
}

impl Load {
    fn healthz() -> Self {
        Self {
            method: Method::GET,
            path: "/healthz",
            bodies: Arc::new([]),
            expect: ("status", "ok"),
        }
    }

    fn verify<S: AsRef<str>>(keys: impl IntoIterator<Item = S>, code: VerifyCode) -> Self {
        let bodies = keys
            .into_iter()
            .map(|k| Bytes::from(serde_json::json!({ "key": k.as_ref() }).to_string()))
            .collect();
        Self {
            method: Method::POST,
            path: "/v1/keys/verify",
            bodies,
            expect: ("code", code.as_str()),
        }
    }

    fn request(&self, n: usize) -> anyhow::Result<Request<Full<Bytes>>> {
        let builder = Request::builder()
            .method(self.method.clone())
            .uri(self.path)
            .header(header::HOST, "127.0.0.1");
        Ok(if self.bodies.is_empty() {
            builder.body(Full::new(Bytes::new()))?
        } else {
            builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(self.bodies[n % self.bodies.len()].clone()))?
        })
    }

    fn check(&self, body: &[u8]) -> anyhow::Result<()> {
        let json: serde_json::Value = serde_json::from_slice(body)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(body)))?;
        let (field, want) = self.expect;
        ensure!(
            json[field] == want,
            "{} answered {field} = {} instead of {want}: {json}",
            self.path,
            json[field]
        );
        Ok(())
    }
}

/// One keep-alive connection sending requests back to back until `deadline`;
/// each latency runs from just before the send to the last byte of the body.
async fn connection(
    addr: SocketAddr,
    load: Load,
    first: usize,
    deadline: Instant,
) -> anyhow::Result<Vec<Duration>> {
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("connect to {addr}"))?;
    stream.set_nodelay(true)?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    let driver = tokio::spawn(conn);
    let mut latencies = Vec::with_capacity(1 << 16);
    let mut n = 0;
    while Instant::now() < deadline {
        let request = load.request(first + n)?;
        sender.ready().await?;
        let started = Instant::now();
        let response = sender.send_request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        latencies.push(started.elapsed());
        if status != StatusCode::OK {
            bail!(
                "{} answered {status}: {}",
                load.path,
                String::from_utf8_lossy(&body)
            );
        }
        if n % CHECK_EVERY == 0 {
            load.check(&body)?;
        }
        n += 1;
    }
    drop(sender);
    let _ = driver.await;
    Ok(latencies)
}

struct Stats {
    scenario: &'static str,
    connections: usize,
    per_second: f64,
    p50: Duration,
    p99: Duration,
    p999: Duration,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// `connections` generators for `length`; throughput counts the whole wall time.
async fn round(
    addr: SocketAddr,
    load: &Load,
    connections: usize,
    length: Duration,
) -> anyhow::Result<(Vec<Duration>, Duration)> {
    let started = Instant::now();
    let deadline = started + length;
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        tasks.spawn(connection(addr, load.clone(), c * 37, deadline));
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.context("a load generator task panicked")??);
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    Ok((all, elapsed))
}

/// A warm-up, then the measured round, at each connection count.
async fn measure(
    scenario: &'static str,
    addr: SocketAddr,
    load: &Load,
    settings: &Settings,
    out: &mut Vec<Stats>,
) -> anyhow::Result<()> {
    for &connections in &settings.connections {
        eprintln!("measuring {scenario} at {connections} connection(s)…");
        round(addr, load, connections, WARMUP).await?;
        let (sorted, elapsed) = round(addr, load, connections, settings.length).await?;
        out.push(Stats {
            scenario,
            connections,
            per_second: sorted.len() as f64 / elapsed.as_secs_f64(),
            p50: percentile(&sorted, 50.0),
            p99: percentile(&sorted, 99.0),
            p999: percentile(&sorted, 99.9),
        });
    }
    Ok(())
}

/// A new application through the whole wizard, with its key: the clear key.
async fn issue_key(svc: &Service, name: &str) -> anyhow::Result<(ApplicationId, String)> {
    let id = match svc.start_draft(GUILD, OWNER).await? {
        DraftStart::New(d) => d.id,
        DraftStart::Existing(d) => bail!("an open draft {} is in the way", d.id),
    };
    let form = AppForm {
        name: name.into(),
        uri: "https://spa.example.com".into(),
        description: "Benchmark load.".into(),
        post_login_urls: "https://spa.example.com/callback".into(),
        post_logout_urls: "https://spa.example.com/signed-out".into(),
    };
    for input in [
        DraftInput::Details(form),
        DraftInput::UserType(LoginUserType::Guest),
        DraftInput::SourceApp(SourceApp::ExternalCma),
        DraftInput::Next,
        DraftInput::Scopes(vec!["appointments".into(), "guests".into()]),
        DraftInput::Next,
    ] {
        svc.advance_draft(&id, OWNER, input).await?;
    }
    let app = svc.submit_draft(&id, OWNER, None).await?.app;
    let issued = svc
        .generate_api_key(GUILD, &app.id, Actor::member(OWNER))
        .await?;
    Ok((app.id, issued.key.expose().to_owned()))
}

async fn issue_keys(svc: &Service, prefix: &str) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::with_capacity(APPS);
    for n in 0..APPS {
        keys.push(issue_key(svc, &format!("{prefix} {n}")).await?.1);
    }
    Ok(keys)
}

async fn code(svc: &Service, key: &str) -> anyhow::Result<VerifyCode> {
    Ok(svc.verify_key(key, &Expectations::default()).await?.code)
}

fn service(store: &Store, verify_cache_ttl: Duration) -> Service {
    Service::new(store.clone(), Arc::new(ScopeCatalog::builtin())).with_policy(Policy {
        verify_cache_ttl,
        ..Policy::default()
    })
}

async fn serve(svc: &Service) -> anyhow::Result<keygate::http::HttpHandle> {
    let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
    keygate::http::start(loopback, &[], svc.clone()).await
}

struct Settings {
    connections: Vec<usize>,
    length: Duration,
    rounds: usize,
    postgres_url: String,
}

fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}=`{v}` is not a valid number")),
        _ => default,
    }
}

/// Warm cache, unknown and malformed keys and the floor on one server; then
/// the cache turned off, all on one SQLite file.
async fn sqlite_scenarios(settings: &Settings, out: &mut Vec<Stats>) -> anyhow::Result<()> {
    let dir = tempfile::tempdir().context("temp dir")?;
    let store =
        Store::connect_sqlite(SqliteConnectOptions::new().filename(dir.path().join("kg.db")))
            .await
            .context("open SQLite")?;
    store.migrate().await?;
    let warm = service(&store, Policy::default().verify_cache_ttl);
    let keys = issue_keys(&warm, "Bench").await?;
    for key in &keys {
        ensure!(
            code(&warm, key).await? == VerifyCode::Valid,
            "a new key is not VALID"
        );
    }
    let server = serve(&warm).await?;
    let unknown: Vec<ApiKey> = (0..APPS).map(|_| ApiKey::generate()).collect();
    let unknown = Load::verify(unknown.iter().map(ApiKey::expose), VerifyCode::NotFound);
    let valid = Load::verify(&keys, VerifyCode::Valid);
    let addr = server.addr();
    measure(HEALTHZ, addr, &Load::healthz(), settings, out).await?;
    measure(WARM, addr, &valid, settings, out).await?;
    measure(NOT_FOUND, addr, &unknown, settings, out).await?;
    let malformed = Load::verify(["kg_invalid"], VerifyCode::Malformed);
    measure(MALFORMED, addr, &malformed, settings, out).await?;
    server.shutdown().await;

    let server = serve(&service(&store, Duration::ZERO)).await?;
    measure(COLD_SQLITE, server.addr(), &valid, settings, out).await?;
    server.shutdown().await;
    store.close().await;
    Ok(())
}

/// A schema of its own on the test PostgreSQL, dropped afterwards whatever happens.
async fn postgres_scenarios(
    settings: &Settings,
    out: &mut Vec<Stats>,
) -> anyhow::Result<Option<(Vec<Duration>, usize)>> {
    let url = &settings.postgres_url;
    let admin = match tokio::time::timeout(Duration::from_secs(5), Store::connect(url)).await {
        Ok(Ok(Store::Postgres(pool))) => pool,
        Ok(Ok(_)) => bail!("TEST_POSTGRES_URL must be a postgres:// URL"),
        Ok(Err(e)) => {
            println!("note: PostgreSQL at {url} is not reachable ({e}); its scenarios are skipped");
            return Ok(None);
        }
        Err(_) => {
            println!("note: PostgreSQL at {url} does not answer; its scenarios are skipped");
            return Ok(None);
        }
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let schema = format!("kg_bench_{}_{nanos}", std::process::id());
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {schema}")))
        .execute(&admin)
        .await
        .with_context(|| format!("create schema {schema}"))?;
    let options = PgConnectOptions::from_str(url)?.options([("search_path", schema.as_str())]);
    let result = on_postgres(&options, settings, out).await;
    let dropped = sqlx::query(sqlx::AssertSqlSafe(format!("DROP SCHEMA {schema} CASCADE")))
        .execute(&admin)
        .await;
    admin.close().await;
    let propagation = result?;
    dropped.with_context(|| format!("drop schema {schema}"))?;
    Ok(Some(propagation))
}

async fn on_postgres(
    options: &PgConnectOptions,
    settings: &Settings,
    out: &mut Vec<Stats>,
) -> anyhow::Result<(Vec<Duration>, usize)> {
    let store_a = Store::connect_postgres(options.clone()).await?;
    store_a.migrate().await?;
    let a = service(&store_a, Policy::default().verify_cache_ttl);
    let keys = issue_keys(&a, "Bench").await?;
    let server = serve(&service(&store_a, Duration::ZERO)).await?;
    let valid = Load::verify(&keys, VerifyCode::Valid);
    measure(COLD_POSTGRES, server.addr(), &valid, settings, out).await?;
    server.shutdown().await;

    // A second "process": its own pool, a cache that only a notification can
    // explain being fresh within the minute.
    let store_b = Store::connect_postgres(options.clone()).await?;
    let b = service(&store_b, Duration::from_secs(60));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn({
        let b = b.clone();
        async move { b.follow_credential_changes(stopped).await }
    });
    let listening = Instant::now();
    while !b.is_following_credential_changes() {
        ensure!(
            listening.elapsed() < Duration::from_secs(10),
            "service B never started following credential changes"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    eprintln!(
        "measuring revocation propagation, {} rounds…",
        settings.rounds
    );
    let (mut times, mut lost) = (Vec::with_capacity(settings.rounds), 0);
    for n in 0..settings.rounds {
        let (app, key) = issue_key(&a, &format!("Propagation {n}")).await?;
        ensure!(
            code(&b, &key).await? == VerifyCode::Valid,
            "B: a new key is not VALID"
        );
        let started = Instant::now();
        a.revoke(GUILD, &app, Actor::approver(APPROVER)).await?;
        loop {
            if code(&b, &key).await? == VerifyCode::Revoked {
                times.push(started.elapsed());
                break;
            }
            if started.elapsed() > Duration::from_secs(5) {
                lost += 1;
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    let _ = stop.send(true);
    let _ = follower.await;
    store_b.close().await;
    store_a.close().await;
    times.sort_unstable();
    Ok((times, lost))
}

fn goal(ok: bool) -> &'static str {
    if ok { "ok" } else { "MISSED" }
}

fn report(stats: &[Stats], settings: &Settings, propagation: Option<&(Vec<Duration>, usize)>) {
    let find = |scenario: &str, connections: usize| {
        stats
            .iter()
            .find(|s| s.scenario == scenario && s.connections == connections)
    };
    println!("\nkeygate verify API benchmark (axum on 127.0.0.1, load generator in-process,");
    println!(
        "2 tokio workers shared, {:.1} s per scenario after {} ms warm-up; latency in ms)\n",
        settings.length.as_secs_f64(),
        WARMUP.as_millis()
    );
    println!(
        "{:<34}{:>6}{:>12}{:>9}{:>9}{:>9}",
        "scenario", "conns", "req/s", "p50", "p99", "p99.9"
    );
    for s in stats {
        println!(
            "{:<34}{:>6}{:>12.0}{:>9.3}{:>9.3}{:>9.3}",
            s.scenario,
            s.connections,
            s.per_second,
            ms(s.p50),
            ms(s.p99),
            ms(s.p999)
        );
    }
    println!();
    let hi = settings.connections.iter().copied().max().unwrap_or(1);
    let lo = settings.connections.iter().copied().min().unwrap_or(1);
    if let (Some(w), Some(h)) = (find(WARM, hi), find(HEALTHZ, hi)) {
        let share = w.per_second / h.per_second * 100.0;
        let ratio = w.p99.as_secs_f64() / h.p99.as_secs_f64().max(1e-9);
        println!(
            "warm verify / healthz throughput at {hi} = {share:.0}%  (goal ≥ 70%)  {}",
            goal(share >= 70.0)
        );
        println!(
            "warm verify p99 / healthz p99 at {hi} = {ratio:.2}×  (goal ≤ 1.5×)  {}",
            goal(ratio <= 1.5)
        );
    }
    if let Some(w) = find(WARM, lo) {
        println!(
            "warm verify p99 at {lo} connection(s) = {:.3} ms  (goal ≤ 1 ms)  {}",
            ms(w.p99),
            goal(w.p99 <= Duration::from_millis(1))
        );
    }
    for scenario in [COLD_SQLITE, COLD_POSTGRES] {
        if let Some(c) = find(scenario, hi) {
            println!(
                "{} at {hi} = {:.0}/s  (goal ≥ 5,000/s)  {}",
                scenario.trim_start_matches("verify, "),
                c.per_second,
                goal(c.per_second >= 5000.0)
            );
        }
    }
    if let Some((times, lost)) = propagation {
        println!(
            "\nrevocation on A → REVOKED on B (PostgreSQL LISTEN/NOTIFY, B's cache TTL 60 s), {} rounds:",
            times.len() + lost
        );
        println!(
            "p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms{}",
            ms(percentile(times, 50.0)),
            ms(percentile(times, 99.0)),
            ms(times.last().copied().unwrap_or_default()),
            if *lost > 0 {
                format!(", {lost} round(s) still VALID after 5 s")
            } else {
                String::new()
            }
        );
        let p99 = percentile(times, 99.0);
        println!(
            "propagation p99 = {:.2} ms  (goal ≤ 1 s)  {}",
            ms(p99),
            goal(*lost == 0 && p99 <= Duration::from_secs(1))
        );
    }
}

fn main() -> anyhow::Result<()> {
    let settings = Settings {
        connections: std::env::var("BENCH_CONNECTIONS")
            .ok()
            .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
            .filter(|v: &Vec<usize>| !v.is_empty() && !v.contains(&0))
            .unwrap_or_else(|| vec![1, 64]),
        length: Duration::from_secs_f64(env_or("BENCH_SECONDS", 3.0)),
        rounds: env_or("BENCH_PROPAGATION_ROUNDS", 50),
        postgres_url: std::env::var("TEST_POSTGRES_URL")
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned()),
    };
    // Server and load generator share these two workers, as on a 2-core host.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(env_or("BENCH_WORKERS", 2))
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        let mut stats = Vec::new();
        sqlite_scenarios(&settings, &mut stats).await?;
        let propagation = postgres_scenarios(&settings, &mut stats).await?;
        report(&stats, &settings, propagation.as_ref());
        Ok(())
    })
}
