//! Benchmark: N concurrent members through the whole wizard against the fake
//! Discord, per-step latency and flows per second, with a bare poise `/ping`
//! bot on the same fake as the framework's floor.
//!
//! A step's latency runs from the INTERACTION_CREATE dispatch to the moment
//! the member sees the step's content: the callback when it carries it
//! (types 4, 7, 9), else the edit of `@original` (or the follow-up) that
//! follows the deferral; a deferral alone shows nothing.
//!
//! Run: `cargo bench --bench wizard` (N defaults to 1, 50, 200; set
//! `BENCH_USERS=1,10` for others; `BENCH_DATABASE=postgres` runs the bot on
//! the PostgreSQL of `TEST_POSTGRES_URL` instead of SQLite;
//! `BENCH_PROCESSES=2`, on PostgreSQL, then runs the same rounds on two bot
//! processes, shards 0 and 1 of 2, with the members spread over two guilds).
//!
//! Members click the moment a step shows, so a round runs flat out and its
//! latency is mostly queueing for the CPU; `BENCH_PACE_MS=1000` has each
//! member pause about that long before each step instead, as people do.

mod latency;

use latency::{ms, percentile};

#[path = "../tests/support/mod.rs"]
mod support;

use keygate::domain::catalog::ScopeCatalog;
use keygate::service::Service;
use keygate::store::{Backend, GateProfile, Store};
use serde_json::Value;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use support::bot::{Harness, ShardProcess, component, token};
use support::fake_discord::{FakeDiscord, Interaction, TestUser};
use support::ping_bot::start_ping_bot;

const STEPS: [&str; 10] = [
    "create",
    "details",
    "usertype",
    "source",
    "next→scope",
    "scopes",
    "next→review",
    "submit",
    "genkey",
    "finish",
];

type Samples = BTreeMap<&'static str, Vec<Duration>>;

/// Dispatch-to-content time of one interaction, as the fake recorded it,
/// and its callback.
async fn timed(fake: &FakeDiscord, i: &Interaction) -> (Duration, Value) {
    let response = fake.response(i).await;
    (fake.shown_latency(i).await, response)
}

async fn one_flow(
    fake: FakeDiscord,
    user: TestUser,
    pace: Duration,
) -> Vec<(&'static str, Duration)> {
    let mut out = Steps(Vec::with_capacity(STEPS.len()));
    think(pace).await;
    let i = fake
        .slash_command(&user, "app", Some("create"), vec![])
        .await;
    let (t, r) = timed(&fake, &i).await;
    out.push(("create", t));
    let modal = r["data"]["custom_id"].as_str().expect("modal").to_owned();
    let name = format!("Bench {}", user.id);
    let fields = [
        ("name", name.as_str()),
        ("uri", "https://spa.example.com"),
        ("description", "benchmark"),
        ("login_urls", "https://spa.example.com/cb"),
        ("logout_urls", ""),
    ];
    think(pace).await;
    let i = fake.submit_modal(&user, &modal, &fields, None).await;
    out.push(("details", timed(&fake, &i).await.0));
    let msg = fake.message_of(&i).expect("step 2");
    think(pace).await;
    let i = fake
        .select(&user, &msg, &component(&msg, "usertype"), &["guest"])
        .await;
    out.push(("usertype", timed(&fake, &i).await.0));
    let msg = fake.message_of(&i).expect("step 2");
    think(pace).await;
    let i = fake
        .select(&user, &msg, &component(&msg, "source"), &["bot"])
        .await;
    out.push(("source", timed(&fake, &i).await.0));
    let msg = fake.message_of(&i).expect("step 2");
    think(pace).await;
    let i = fake
        .press_button(&user, &msg, &component(&msg, "next"))
        .await;
    out.push(("next→scope", timed(&fake, &i).await.0));
    let msg = fake.message_of(&i).expect("step 3");
    think(pace).await;
    let i = fake
        .select(
            &user,
            &msg,
            &component(&msg, "scopes"),
            &["guests", "appointments"],
        )
        .await;
    out.push(("scopes", timed(&fake, &i).await.0));
    let msg = fake.message_of(&i).expect("step 3");
    think(pace).await;
    let i = fake
        .press_button(&user, &msg, &component(&msg, "next"))
        .await;
    out.push(("next→review", timed(&fake, &i).await.0));
    let msg = fake.message_of(&i).expect("review");
    think(pace).await;
    let i = fake
        .press_button(&user, &msg, &component(&msg, "submit"))
        .await;
    out.push(("submit", timed(&fake, &i).await.0));
    // The DM is a placeholder until the credentials fill it, with its buttons.
    let has_buttons = |f: &FakeDiscord| {
        f.dm_messages(user.id)
            .first()
            .is_some_and(|m| m["components"].as_array().is_some_and(|c| !c.is_empty()))
    };
    fake.wait_until("the filled credentials DM", has_buttons)
        .await;
    let dm = fake.dm_messages(user.id).remove(0);
    think(pace).await;
    let i = fake
        .press_button_in_dm(&user, &dm, &component(&dm, "genkey"))
        .await;
    let (t, _) = timed(&fake, &i).await;
    out.push(("genkey", t));
    // The key comes in a DM of its own, after the credentials' one.
    let has_key = |f: &FakeDiscord| {
        f.dm_messages(user.id).get(1).is_some_and(|m| {
            m["content"]
                .as_str()
                .is_some_and(|t| t.contains("API key: `kg_"))
        })
    };
    fake.wait_until("the key's own DM", has_key).await;
    let with_key = fake.dm_messages(user.id).remove(1);
    assert!(
        token(with_key["content"].as_str().unwrap_or(""), "kg_").is_some(),
        "no key: {with_key}"
    );
    think(pace).await;
    let i = fake
        .press_button_in_dm(&user, &with_key, &component(&with_key, "finish"))
        .await;
    out.push(("finish", timed(&fake, &i).await.0));
    out.0
}

/// The steps' latencies of one flow; each step is marked in the log, so
/// `BENCH_STATEMENTS` can tell which statements it ran.
struct Steps(Vec<(&'static str, Duration)>);

impl Steps {
    fn push(&mut self, step: (&'static str, Duration)) {
        tracing::info!(target: "bench", "step done: {}", step.0);
        self.0.push(step);
    }
}

/// One flow alone with every SQL statement logged: how many each step ran
/// (those of background jobs in between included), printed as a table.
async fn count_statements(h: &Harness) {
    let logs = support::captured_logs("bench=info,sqlx::query=debug");
    let start = logs.text().len();
    let user = TestUser::admin(5_000_000_000_000_000, "counted");
    one_flow(h.fake.clone(), user, Duration::ZERO).await;
    let text = logs.text()[start..].to_owned();
    println!("SQL statements per step (one flow alone; BEGIN/COMMIT included when logged)");
    println!(
        "{:<14}{:>8}{:>8}{:>8}{:>8}{:>8}",
        "step", "all", "SELECT", "INSERT", "UPDATE", "DELETE"
    );
    let mut counts = [0usize; 5];
    for line in text.lines() {
        if let Some(step) = line.split("step done: ").nth(1) {
            println!(
                "{step:<14}{:>8}{:>8}{:>8}{:>8}{:>8}",
                counts[0], counts[1], counts[2], counts[3], counts[4]
            );
            counts = [0; 5];
        } else if line.contains("sqlx::query") {
            counts[0] += 1;
            let upper = line.to_uppercase();
            for (n, verb) in ["SELECT", "INSERT", "UPDATE", "DELETE"].iter().enumerate() {
                if upper.contains(&format!("SUMMARY=\"{verb}")) {
                    counts[n + 1] += 1;
                }
            }
        }
    }
    if std::env::var("BENCH_STATEMENTS").as_deref() == Ok("full") {
        println!("{text}");
    }
    println!();
}

/// `users` members at once through the wizard; with `guilds` 2, every other
/// one in the fake's second guild (the other shard of 2).
async fn wizard_round(
    fake: &FakeDiscord,
    users: usize,
    round: u64,
    guilds: usize,
    pace: Duration,
) -> (Samples, Duration) {
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..users as u64 {
        let guild = FakeDiscord::GUILDS[n as usize % guilds];
        let user = TestUser::admin(3_000_000_000_000_000 + round * 10_000 + n, format!("u{n}"))
            .in_guild(guild);
        tasks.spawn(one_flow(fake.clone(), user, pace));
    }
    let mut samples = Samples::new();
    while let Some(flow) = tasks.join_next().await {
        for (step, t) in flow.expect("a flow panicked") {
            samples.entry(step).or_default().push(t);
        }
    }
    (samples, start.elapsed())
}

/// How long a member pauses before each step: `BENCH_PACE_MS` on average
/// (0, the default: the member clicks the moment a step shows).
fn pace() -> Duration {
    match std::env::var("BENCH_PACE_MS") {
        Ok(v) if !v.trim().is_empty() => Duration::from_millis(
            v.trim()
                .parse()
                .unwrap_or_else(|_| panic!("BENCH_PACE_MS must be milliseconds, not `{v}`")),
        ),
        _ => Duration::ZERO,
    }
}

/// A member's pause before a step: between half and one and a half times
/// `pace`, so that members do not click in lockstep.
async fn think(pace: Duration) {
    if !pace.is_zero() {
        tokio::time::sleep(pace.mul_f64(rand::random_range(0.5..1.5))).await;
    }
}

/// As many interactions per user as one wizard flow has.
const PINGS_PER_USER: usize = STEPS.len();

async fn ping_round(fake: &FakeDiscord, users: usize, pace: Duration) -> Vec<Duration> {
    let mut tasks = tokio::task::JoinSet::new();
    for n in 0..users as u64 {
        let fake = fake.clone();
        tasks.spawn(async move {
            let user = TestUser::member(4_000_000_000_000_000 + n, "pinger");
            let mut out = Vec::new();
            for _ in 0..PINGS_PER_USER {
                think(pace).await;
                let i = fake.slash_command(&user, "ping", None, vec![]).await;
                out.push(timed(&fake, &i).await.0);
            }
            out
        });
    }
    let mut all = Vec::new();
    while let Some(t) = tasks.join_next().await {
        all.extend(t.expect("a ping flow panicked"));
    }
    all.sort();
    all
}

/// The machine's busy and total CPU time so far, in ticks (Linux's
/// `/proc/stat`; `None` elsewhere).
fn cpu_ticks() -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat").ok()?;
    let ticks: Vec<u64> = stat
        .lines()
        .next()?
        .split_whitespace()
        .skip(1)
        .take(8)
        .filter_map(|t| t.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal
    let idle = ticks.get(3)? + ticks.get(4)?;
    let total: u64 = ticks.iter().sum();
    Some((total - idle, total))
}

/// How busy the machine's CPUs were since `before`: the busy share of all
/// their time, and the busy CPU time in seconds (ticks of Linux's USER_HZ,
/// 100 a second).
fn busy_since(before: Option<(u64, u64)>) -> Option<CpuUse> {
    let ((b0, t0), (b1, t1)) = before.zip(cpu_ticks())?;
    Some(CpuUse {
        share: (b1 - b0) as f64 / (t1 - t0).max(1) as f64,
        seconds: (b1 - b0) as f64 / 100.0,
    })
}

#[derive(Clone, Copy)]
struct CpuUse {
    share: f64,
    seconds: f64,
}

/// What limited a round: how busy the machine's CPUs were, and (SQLite) the
/// write gate that queues the process's writers.
#[derive(Default)]
struct Profile {
    cpu: Option<CpuUse>,
    gate: Option<GateProfile>,
}

/// One round at one user count: the samples, sorted, the time taken, and
/// the profile.
struct Round {
    users: usize,
    samples: Samples,
    elapsed: Duration,
    profile: Profile,
}

async fn rounds(
    fake: &FakeDiscord,
    store: Option<&Store>,
    users: &[usize],
    first_round: u64,
    guilds: usize,
    pace: Duration,
) -> Vec<Round> {
    let mut results = Vec::new();
    // A warm-up flow so first-use costs (SQLite pages, connections) are not measured.
    wizard_round(fake, guilds, first_round, guilds, Duration::ZERO).await;
    for (round, &n) in users.iter().enumerate() {
        let (cpu, gate) = (cpu_ticks(), store.and_then(Store::write_gate_profile));
        let (mut samples, elapsed) =
            wizard_round(fake, n, first_round + 1 + round as u64, guilds, pace).await;
        let profile = Profile {
            cpu: busy_since(cpu),
            gate: gate
                .zip(store.and_then(Store::write_gate_profile))
                .map(|(before, after)| after - before),
        };
        for v in samples.values_mut() {
            v.sort();
        }
        results.push(Round {
            users: n,
            samples,
            elapsed,
            profile,
        });
    }
    results
}

fn print_profile(profile: &Profile, flows: usize, elapsed: Duration) {
    if let Some(cpu) = profile.cpu {
        println!(
            "machine CPU busy {:.0}% of the round, {:.1} ms of CPU per flow (all processes)",
            cpu.share * 100.0,
            1e3 * cpu.seconds / flows.max(1) as f64
        );
    }
    if let Some(gate) = profile.gate {
        let writes = gate.writes.max(1) as f64;
        println!(
            "SQLite write gate: {} writes, held {:.0}% of the round, mean hold {:.2} ms, mean wait {:.2} ms",
            gate.writes,
            100.0 * gate.held.as_secs_f64() / elapsed.as_secs_f64().max(1e-9),
            1e3 * gate.held.as_secs_f64() / writes,
            1e3 * gate.waited.as_secs_f64() / writes,
        );
    }
}

/// The `/ping` round at one user count, sorted, and how busy the CPUs were.
struct Floor {
    samples: Vec<Duration>,
    cpu: Option<CpuUse>,
}

fn print_results(label: &str, results: &[Round], floors: &[Floor]) {
    println!("{label}");
    for (round, floor) in results.iter().zip(floors) {
        let (n, samples, elapsed) = (&round.users, &round.samples, &round.elapsed);
        println!(
            "── {n} concurrent user(s): {:.1} flows/s ({n} flows in {:.2} s)",
            *n as f64 / elapsed.as_secs_f64(),
            elapsed.as_secs_f64()
        );
        println!("{:<14}{:>10}{:>10}", "step", "p50", "p99");
        let mut all = Vec::new();
        for step in STEPS {
            if let Some(v) = samples.get(step) {
                println!(
                    "{step:<14}{:>10.2}{:>10.2}",
                    ms(percentile(v, 50.0)),
                    ms(percentile(v, 99.0))
                );
                all.extend(v.iter().copied());
            }
        }
        all.sort();
        let (p50, p99) = (percentile(&all, 50.0), percentile(&all, 99.0));
        let (f50, f99) = (
            percentile(&floor.samples, 50.0),
            percentile(&floor.samples, 99.0),
        );
        println!("{:<14}{:>10.2}{:>10.2}", "all steps", ms(p50), ms(p99));
        println!("{:<14}{:>10.2}{:>10.2}", "/ping floor", ms(f50), ms(f99));
        println!(
            "keygate p99 / floor p99 = {:.2}×",
            p99.as_secs_f64() / f99.as_secs_f64().max(1e-9)
        );
        print_profile(&round.profile, *n, *elapsed);
        if let Some(cpu) = floor.cpu {
            println!(
                "the /ping round: machine CPU busy {:.0}%, {:.2} ms of CPU per /ping",
                cpu.share * 100.0,
                1e3 * cpu.seconds / (n * PINGS_PER_USER).max(1) as f64
            );
        }
        println!();
    }
}

fn main() {
    let backend = match std::env::var("BENCH_DATABASE").as_deref() {
        Ok("postgres") => Backend::Postgres,
        Ok("sqlite") | Err(_) => Backend::Sqlite,
        Ok(other) => panic!("BENCH_DATABASE must be sqlite or postgres, not `{other}`"),
    };
    let processes = match std::env::var("BENCH_PROCESSES").as_deref() {
        Ok("1") | Err(_) => 1,
        Ok("2") if backend == Backend::Postgres => 2,
        Ok("2") => {
            panic!("BENCH_PROCESSES=2 needs BENCH_DATABASE=postgres: processes share PostgreSQL")
        }
        Ok(other) => panic!("BENCH_PROCESSES must be 1 or 2, not `{other}`"),
    };
    let users: Vec<usize> = std::env::var("BENCH_USERS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 50, 200]);
    let pace = pace();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    runtime.block_on(async {
        let mut h = Harness::start_with(backend, false).await;
        wizard_round(&h.fake, 1, 0, 1, Duration::ZERO).await;
        if std::env::var("BENCH_STATEMENTS").is_ok_and(|v| !v.is_empty()) {
            count_statements(&h).await;
        }
        let (one, two) = if processes == 1 {
            let one = rounds(&h.fake, Some(h.service.store()), &users, 100, 1, pace).await;
            h.stop_bot().await;
            (one, None)
        } else {
            h.stop_bot().await;
            // A process of its own per shard, each with its own pool on the
            // one database; first one process with the one shard, as the
            // baseline of the same run, then shards 0 and 1 of 2.
            let process = |count: u32, shard: u32| {
                let (fake, db) = (h.fake.clone(), &h.db);
                async move {
                    let service =
                        Service::new(db.peer_store().await, Arc::new(ScopeCatalog::builtin()));
                    ShardProcess::start(&fake, &service, count, shard..=shard).await
                }
            };
            let single = process(1, 0).await;
            let one = rounds(&h.fake, None, &users, 100, 2, pace).await;
            single.stop().await;
            let shards = [process(2, 0).await, process(2, 1).await];
            let two = rounds(&h.fake, None, &users, 200, 2, pace).await;
            for shard in shards {
                shard.stop().await;
            }
            (one, Some(two))
        };
        // The floor: a bare poise bot on the same fake Discord.
        let ping = start_ping_bot(&h.fake).await;
        h.fake.wait_ready().await;
        ping_round(&h.fake, 1, Duration::ZERO).await;
        let mut floors = Vec::new();
        for &n in &users {
            let cpu = cpu_ticks();
            let floor = ping_round(&h.fake, n, pace).await;
            floors.push(Floor {
                samples: floor,
                cpu: busy_since(cpu),
            });
        }
        ping.shutdown().await;
        h.db.close().await;

        let database = match backend {
            Backend::Sqlite => "SQLite",
            Backend::Postgres => "PostgreSQL",
        };
        println!("keygate wizard benchmark ({database}, fake Discord on 127.0.0.1)");
        println!(
            "latency = INTERACTION_CREATE dispatch → the step's content shown (a callback with it, \
             else the edit or follow-up after the deferral), in ms"
        );
        if pace.is_zero() {
            println!("members click the moment a step shows\n");
        } else {
            println!(
                "members pause {:.0}–{:.0} ms before each step (and each /ping)\n",
                ms(pace / 2),
                ms(pace * 3 / 2)
            );
        }
        let guilds = if processes == 2 {
            ", members spread over 2 guilds"
        } else {
            ""
        };
        print_results(&format!("═══ 1 process{guilds}"), &one, &floors);
        if let Some(two) = &two {
            print_results(
                "═══ 2 processes (shards 0 and 1 of 2), one guild each, on one PostgreSQL",
                two,
                &floors,
            );
        }
    });
}
