//! Benchmark: the verify API (axum) on a real TCP socket on 127.0.0.1 under a
//! keep-alive HTTP/1 load generator in the same process, against `/healthz` on
//! the same server as the floor; then how fast a revocation on PostgreSQL
//! reaches another process's cache.
//!
//! Run: `cargo bench --bench verify`. Settings: `BENCH_SECONDS` (per scenario,
//! default 3), `BENCH_CONNECTIONS` (default `1,64`), `BENCH_PROPAGATION_ROUNDS`
//! (default 50), `TEST_POSTGRES_URL` (the PostgreSQL parts are skipped, with a
//! note, when it does not answer).

mod latency;

use latency::{ms, percentile};

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
const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

const HEALTHZ: &str = "healthz";
const WARM: &str = "verify, warm cache";
const COLD_SQLITE: &str = "verify, cache off, SQLite";
const COLD_POSTGRES: &str = "verify, cache off, PostgreSQL";
const NOT_FOUND: &str = "verify, unknown key (NOT_FOUND)";
const MALFORMED: &str = "verify, malformed key";

/// What one scenario sends (a GET when it has no bodies), and the JSON field
/// and value its answers must carry.
#[derive(Clone)]
struct Load {
    path: &'static str,
    /// Request bodies, built once so the generator does little per request.
    bodies: Arc<[Bytes]>,
    expect: (&'static str, &'static str),
}

impl Load {
    fn verify<S: AsRef<str>>(keys: impl IntoIterator<Item = S>, code: VerifyCode) -> Self {
        let json = |k: S| Bytes::from(serde_json::json!({ "key": k.as_ref() }).to_string());
        let (path, bodies) = ("/v1/keys/verify", keys.into_iter().map(json).collect());
        let expect = ("code", code.as_str());
        Self {
            path,
            bodies,
            expect,
        }
    }

    fn request(&self, n: usize) -> anyhow::Result<Request<Full<Bytes>>> {
        let builder = Request::builder()
            .uri(self.path)
            .header(header::HOST, "127.0.0.1");
        Ok(if self.bodies.is_empty() {
            builder.method(Method::GET).body(Full::new(Bytes::new()))?
        } else {
            builder
                .method(Method::POST)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(self.bodies[n % self.bodies.len()].clone()))?
        })
    }

    fn check(&self, body: &[u8]) -> anyhow::Result<()> {
        let json: serde_json::Value = serde_json::from_slice(body).context("a body not JSON")?;
        let (field, want) = self.expect;
        ensure!(json[field] == want, "{} answered {json}", self.path);
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
    let stream = tokio::net::TcpStream::connect(addr).await?;
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
        // Fail loudly rather than measure errors.
        if status != StatusCode::OK {
            let text = String::from_utf8_lossy(&body);
            bail!("{} answered {status}: {text}", load.path);
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

/// One measured round; `sorted` holds every request's latency.
struct Stats {
    scenario: &'static str,
    connections: usize,
    per_second: f64,
    sorted: Vec<Duration>,
    /// Share of the machine's CPU used by other processes during the round.
    others: f64,
}

/// Jiffies the machine spent in all and busy, and this process used (Linux
/// /proc; zeros elsewhere).
fn cpu_jiffies() -> [u64; 3] {
    let fields = |path| -> Vec<u64> {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        let line = text.lines().next().unwrap_or_default();
        // In /proc/self/stat, past the command's ")"; anything not a count
        // ("cpu", the state letter, a -1) reads as 0 so positions hold.
        let line = line.rsplit_once(')').map_or(line, |(_, rest)| rest);
        line.split_whitespace()
            .map(|v| v.parse().unwrap_or(0))
            .collect()
    };
    let (all, own) = (fields("/proc/stat"), fields("/proc/self/stat"));
    let total: u64 = all.iter().skip(1).take(8).sum(); // user … steal
    let idle: u64 = all.iter().skip(4).take(2).sum(); // idle, iowait
    // Own fields start at the 3rd; utime and stime are the 14th and 15th.
    [total, total - idle, own.iter().skip(11).take(2).sum()]
}

/// `connections` generators for `length`: the latencies, sorted, and the wall
/// time, which throughput is counted over.
async fn round(addr: SocketAddr, load: &Load, connections: usize, length: Duration) -> Round {
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for c in 0..connections {
        tasks.spawn(connection(addr, load.clone(), c * 37, started + length));
    }
    let mut all = Vec::new();
    while let Some(done) = tasks.join_next().await {
        all.extend(done.context("a load generator task panicked")??);
    }
    let elapsed = started.elapsed();
    all.sort_unstable();
    Ok((all, elapsed))
}

type Round = anyhow::Result<(Vec<Duration>, Duration)>;

/// A new application through the whole wizard, with its key: the clear key.
async fn issue_key(svc: &Service, name: &str) -> anyhow::Result<(ApplicationId, String)> {
    let id = match svc.open_draft(GUILD, OWNER).await? {
        DraftStart::New(id) => id,
        DraftStart::Existing(d) => bail!("an open draft {} is in the way", d.id),
    };
    let form = AppForm {
        name: name.into(),
        uri: "https://spa.example.com".into(),
        description: "Benchmark load.".into(),
        post_login_urls: "https://spa.example.com/callback".into(),
        post_logout_urls: "https://spa.example.com/signed-out".into(),
    };
    svc.create_draft(GUILD, &id, OWNER, form, None).await?;
    for input in [
        DraftInput::UserType(LoginUserType::Guest),
        DraftInput::SourceApp(SourceApp::ExternalCma),
        DraftInput::Next,
        DraftInput::Scopes(vec!["appointments".into(), "guests".into()]),
        DraftInput::Next,
    ] {
        svc.advance_draft(&id, OWNER, input).await?;
    }
    let app = svc.submit_draft(&id, OWNER, None).await?.app;
    let owner = Actor::member(OWNER);
    let issued = svc.generate_api_key(GUILD, &app.id, owner).await?;
    Ok((app.id, issued.key.expose().to_owned()))
}

/// `APPS` applications with their keys, each checked `VALID` once.
async fn issue_keys(svc: &Service) -> anyhow::Result<Vec<String>> {
    let mut keys = Vec::with_capacity(APPS);
    for n in 0..APPS {
        let (_, key) = issue_key(svc, &format!("Bench {n}")).await?;
        let fresh = code(svc, &key).await?;
        ensure!(fresh == VerifyCode::Valid, "a new key is {fresh:?}");
        keys.push(key);
    }
    Ok(keys)
}

async fn code(svc: &Service, key: &str) -> anyhow::Result<VerifyCode> {
    Ok(svc.verify_key(key, &Expectations::default()).await?.code)
}

fn service(store: &Store, verify_cache_ttl: Duration) -> Service {
    let policy = Policy {
        verify_cache_ttl,
        ..Policy::default()
    };
    Service::new(store.clone(), Arc::new(ScopeCatalog::builtin())).with_policy(policy)
}

/// A setting from the environment; unset or empty means the default.
fn env_or<T: FromStr>(name: &str, default: T) -> T {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => {
            (v.trim().parse().ok()).unwrap_or_else(|| panic!("{name}=`{v}` is not valid"))
        }
        _ => default,
    }
}

struct Bench {
    connections: Vec<usize>,
    length: Duration,
    rounds: usize,
    stats: Vec<Stats>,
}

impl Bench {
    /// A server over `svc`; each scenario gets a warm-up, then the measured
    /// round, at each connection count. Scenarios alternate within a count, so
    /// the ones compared with each other run seconds apart, under the same
    /// background load.
    async fn measure(&mut self, svc: &Service, scenarios: &[(&'static str, &Load)]) -> Outcome {
        let loopback = SocketAddr::from(([127, 0, 0, 1], 0));
        let server = keygate::http::start(loopback, &[], svc.clone()).await?;
        for &connections in &self.connections {
            for &(scenario, load) in scenarios {
                eprintln!("measuring {scenario} at {connections} connection(s)…");
                round(server.addr(), load, connections, WARMUP).await?;
                let before = cpu_jiffies();
                let (sorted, elapsed) =
                    round(server.addr(), load, connections, self.length).await?;
                let after = cpu_jiffies();
                let [total, busy, mine] = [0, 1, 2].map(|i| after[i].saturating_sub(before[i]));
                let others = busy.saturating_sub(mine) as f64 * 100.0 / total.max(1) as f64;
                let per_second = sorted.len() as f64 / elapsed.as_secs_f64();
                let stats = Stats {
                    scenario,
                    connections,
                    per_second,
                    sorted,
                    others,
                };
                self.stats.push(stats);
            }
        }
        server.shutdown().await;
        Ok(())
    }

    /// Warm cache, unknown and malformed keys and the floor on one server;
    /// then the cache turned off; all on one SQLite file.
    async fn sqlite(&mut self) -> Outcome {
        let dir = tempfile::tempdir().context("temp dir")?;
        let options = SqliteConnectOptions::new().filename(dir.path().join("keygate.db"));
        let store = Store::connect_sqlite(options).await?;
        store.migrate().await?;
        let warm = service(&store, Policy::default().verify_cache_ttl);
        let valid = Load::verify(issue_keys(&warm).await?, VerifyCode::Valid);
        let unknown: Vec<ApiKey> = (0..APPS).map(|_| ApiKey::generate()).collect();
        let unknown = Load::verify(unknown.iter().map(ApiKey::expose), VerifyCode::NotFound);
        let malformed = Load::verify(["kg_invalid"], VerifyCode::Malformed);
        let healthz = Load {
            path: "/healthz",
            bodies: Arc::new([]),
            expect: ("status", "ok"),
        };
        self.measure(
            &warm,
            &[
                (HEALTHZ, &healthz),
                (WARM, &valid),
                (NOT_FOUND, &unknown),
                (MALFORMED, &malformed),
            ],
        )
        .await?;
        let cold = service(&store, Duration::ZERO);
        self.measure(&cold, &[(COLD_SQLITE, &valid)]).await?;
        store.close().await;
        Ok(())
    }

    /// In a schema of its own on the test PostgreSQL, dropped afterwards
    /// whatever happens; None when PostgreSQL does not answer.
    async fn postgres(&mut self) -> anyhow::Result<Option<Propagation>> {
        let url = env_or("TEST_POSTGRES_URL", DEFAULT_POSTGRES_URL.to_owned());
        let why = match tokio::time::timeout(Duration::from_secs(5), Store::connect(&url)).await {
            Ok(Ok(Store::Postgres(admin))) => return self.in_schema(&url, admin).await.map(Some),
            Ok(Ok(_)) => bail!("TEST_POSTGRES_URL must be a postgres:// URL"),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "no answer in 5 s".to_owned(),
        };
        println!("note: PostgreSQL at {url} is not reachable ({why}); its scenarios are skipped");
        Ok(None)
    }

    async fn in_schema(&mut self, url: &str, admin: sqlx::PgPool) -> anyhow::Result<Propagation> {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        let schema = format!("kg_bench_{}_{nanos}", std::process::id());
        let sql = |verb: &str, tail: &str| sqlx::AssertSqlSafe(format!("{verb} {schema}{tail}"));
        let create = sql("CREATE SCHEMA", "");
        sqlx::query(create).execute(&admin).await?;
        let options = PgConnectOptions::from_str(url)?.options([("search_path", schema.as_str())]);
        let result = self.on_postgres(&options).await;
        let drop = sql("DROP SCHEMA", " CASCADE");
        let dropped = sqlx::query(drop).execute(&admin).await;
        admin.close().await;
        let propagation = result?;
        dropped.with_context(|| format!("drop schema {schema}"))?;
        Ok(propagation)
    }

    async fn on_postgres(&mut self, options: &PgConnectOptions) -> anyhow::Result<Propagation> {
        let store_a = Store::connect_postgres(options.clone()).await?;
        store_a.migrate().await?;
        let a = service(&store_a, Policy::default().verify_cache_ttl);
        let valid = Load::verify(issue_keys(&a).await?, VerifyCode::Valid);
        let cold = service(&store_a, Duration::ZERO);
        self.measure(&cold, &[(COLD_POSTGRES, &valid)]).await?;

        // A second "process": its own pool, and a cache that only a
        // notification can explain being fresh within the minute.
        let store_b = Store::connect_postgres(options.clone()).await?;
        let b = service(&store_b, Duration::from_secs(60));
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let follower = tokio::spawn({
            let b = b.clone();
            async move { b.follow_credential_changes(stopped).await }
        });
        let listening = Instant::now();
        while !b.is_following_credential_changes() {
            let waited = listening.elapsed();
            ensure!(waited < Duration::from_secs(10), "B does not listen");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        eprintln!("measuring revocation propagation, {} rounds…", self.rounds);
        let (mut times, mut lost) = (Vec::with_capacity(self.rounds), 0);
        for n in 0..self.rounds {
            let (app, key) = issue_key(&a, &format!("Propagation {n}")).await?;
            let fresh = code(&b, &key).await?;
            ensure!(fresh == VerifyCode::Valid, "B: a new key is {fresh:?}");
            let started = Instant::now();
            let name = a.app(GUILD, &app).await?.details.name;
            a.revoke(GUILD, &app, Actor::approver(APPROVER), &name)
                .await?;
            // Bounded: a lost notification must not hang the benchmark.
            loop {
                if code(&b, &key).await? == VerifyCode::Revoked {
                    break times.push(started.elapsed());
                }
                if started.elapsed() > Duration::from_secs(5) {
                    break lost += 1;
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

    fn report(&self, propagation: Option<&Propagation>) {
        let find = |scenario: &str, n: usize| {
            let mut stats = self.stats.iter();
            stats.find(|s| s.scenario == scenario && s.connections == n)
        };
        let (length, warmup) = (self.length.as_secs_f64(), WARMUP.as_millis());
        println!("\nkeygate verify API (axum on 127.0.0.1, load generator in-process, 2 tokio");
        println!("workers for both; {length:.1} s per round after {warmup} ms warm-up; ms)");
        println!("others = CPU the rest of the machine used meanwhile, % of all cores:");
        println!("other work shares the cores and skews every number (PostgreSQL is in it)\n");
        let (name, conns, rate, others) = ("scenario", "conns", "req/s", "others");
        let (p50, p99, p999) = ("p50", "p99", "p99.9");
        println!("{name:<34}{conns:>6}{rate:>10}{p50:>8}{p99:>8}{p999:>8}{others:>8}");
        // By scenario, in the order they first ran, then by connections.
        let first = |s: &Stats| self.stats.iter().position(|t| t.scenario == s.scenario);
        let mut rows: Vec<&Stats> = self.stats.iter().collect();
        rows.sort_by_key(|s| (first(s), s.connections));
        for s in rows {
            let (name, conns, rate) = (s.scenario, s.connections, s.per_second);
            let [p50, p99, p999] = [50.0, 99.0, 99.9].map(|p| ms(percentile(&s.sorted, p)));
            let others = format!("{:.0}%", s.others);
            println!("{name:<34}{conns:>6}{rate:>10.0}{p50:>8.3}{p99:>8.3}{p999:>8.3}{others:>8}");
        }
        println!();
        let hi = self.connections.iter().copied().max().unwrap_or(1);
        let lo = self.connections.iter().copied().min().unwrap_or(1);
        let line = |text: String, goal: &str, ok: bool| {
            let verdict = if ok { "ok" } else { "MISSED" };
            println!("{text}  (goal {goal})  {verdict}");
        };
        let p99 = |s: &Stats| percentile(&s.sorted, 99.0);
        if let (Some(w), Some(h)) = (find(WARM, hi), find(HEALTHZ, hi)) {
            let share = w.per_second / h.per_second * 100.0;
            let ratio = p99(w).as_secs_f64() / p99(h).as_secs_f64().max(1e-9);
            let text = format!("warm verify / healthz throughput at {hi} = {share:.0}%");
            line(text, "≥ 70%", share >= 70.0);
            let text = format!("warm verify p99 / healthz p99 at {hi} = {ratio:.2}×");
            line(text, "≤ 1.5×", ratio <= 1.5);
        }
        if let Some(w) = find(WARM, lo) {
            let latency = ms(p99(w));
            let text = format!("warm verify p99 at {lo} connection(s) = {latency:.3} ms");
            line(text, "≤ 1 ms", p99(w) <= Duration::from_millis(1));
        }
        let cold = [COLD_SQLITE, COLD_POSTGRES].map(|s| find(s, hi));
        for c in cold.into_iter().flatten() {
            let name = c.scenario.trim_start_matches("verify, ");
            let text = format!("{name} at {hi} = {:.0}/s", c.per_second);
            line(text, "≥ 5,000/s", c.per_second >= 5000.0);
        }
        if let Some((times, lost)) = propagation {
            let [p50, p99] = [50.0, 99.0].map(|p| ms(percentile(times, p)));
            let max = ms(times.last().copied().unwrap_or_default());
            let rounds = times.len() + lost;
            println!("\nrevoke on A → REVOKED on B (LISTEN/NOTIFY; B's cache TTL is 60 s):");
            println!("{rounds} rounds: p50 {p50:.2}, p99 {p99:.2}, max {max:.2} ms; {lost} lost");
            let ok = *lost == 0 && p99 <= 1000.0;
            line(format!("propagation p99 = {p99:.2} ms"), "≤ 1 s", ok);
        }
    }
}

type Outcome = anyhow::Result<()>;
/// Revocation-to-REVOKED times, sorted, and how many rounds never got there.
type Propagation = (Vec<Duration>, usize);

fn main() -> Outcome {
    let counts = env_or("BENCH_CONNECTIONS", "1,64".to_owned());
    let count = |n: &str| n.trim().parse().ok().filter(|&n| n > 0);
    let connections: Option<Vec<usize>> = counts.split(',').map(count).collect();
    let mut bench = Bench {
        connections: connections.context("BENCH_CONNECTIONS must be counts like 1,64")?,
        length: Duration::from_secs_f64(env_or("BENCH_SECONDS", 3.0)),
        rounds: env_or("BENCH_PROPAGATION_ROUNDS", 50),
        stats: Vec::new(),
    };
    // Server and load generator share these two workers, as on a 2-core host.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("tokio runtime")?;
    runtime.block_on(async {
        bench.sqlite().await?;
        let propagation = bench.postgres().await?;
        bench.report(propagation.as_ref());
        Ok(())
    })
}
