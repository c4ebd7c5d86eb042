//! End to end: two bot processes (shards 0 and 1 of 2) on one PostgreSQL,
//! one of them killed in the middle of its work and started again.

mod support;

use keygate::domain::catalog::ScopeCatalog;
use keygate::domain::credentials::ApplicationId;
use keygate::domain::ids::{ChannelId, GuildId, RoleId, UserId};
use keygate::domain::retry::LEASE;
use keygate::domain::settings::GuildSettings;
use keygate::service::{Actor, Policy, Service};
use serde_json::Value;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use support::bot::{ShardProcess, component, text};
use support::fake_discord::{FakeDiscord, TestUser};
use support::flows::to_review;
use support::{TestDb, submit_in};

/// One guild of the fake, as the test set it up.
#[derive(Clone, Copy)]
struct Guild {
    id: u64,
    approvals: u64,
    audit: u64,
    approver_role: u64,
}

const GUILDS: [Guild; 2] = [
    Guild {
        id: FakeDiscord::GUILD_ID,
        approvals: 4_000_000_000_000_011,
        audit: 4_000_000_000_000_012,
        approver_role: 6_000_000_000_000_011,
    },
    Guild {
        id: FakeDiscord::GUILD_2_ID,
        approvals: 4_000_000_000_000_211,
        audit: 4_000_000_000_000_212,
        approver_role: 6_000_000_000_000_211,
    },
];

/// Apps each guild gets from the background jobs' side; 20 of them are
/// approved, the rest wait for their reminder.
const QUEUED: u64 = 30;
const APPROVED: u64 = 20;

impl Guild {
    fn approver(self) -> TestUser {
        TestUser::member(self.id + 7, "approver")
            .with_roles(&[self.approver_role])
            .in_guild(self.id)
    }

    fn requester(self, n: u64) -> TestUser {
        TestUser::admin(self.id + 100 + n, format!("requester {n}")).in_guild(self.id)
    }

    async fn set_up(self, fake: &FakeDiscord, service: &Service) {
        fake.add_channel_in(self.id, self.approvals, "approvals");
        fake.add_channel_in(self.id, self.audit, "audit-log");
        fake.add_role_in(self.id, self.approver_role, "approvers", 0);
        let settings = GuildSettings {
            approvals_required: 1,
            approvals_channel: Some(ChannelId(self.approvals)),
            audit_channel: Some(ChannelId(self.audit)),
            approver_role: Some(RoleId(self.approver_role)),
            ..GuildSettings::defaults(GuildId(self.id))
        };
        service
            .save_settings(Actor::member(UserId(FakeDiscord::OWNER_ID)), &settings)
            .await
            .expect("settings");
    }
}

/// A process's own service: its own pool on the shared database, on the
/// test's clock.
async fn process_service(db: &TestDb) -> Service {
    let policy = Policy {
        stall_grace: chrono::TimeDelta::seconds(1),
        ..Policy::default()
    };
    Service::new(db.peer_store().await, Arc::new(ScopeCatalog::builtin()))
        .with_policy(policy)
        .with_clock(db.clock.clone())
}

/// Waits until the only requests left to post or deliver are held by a lease
/// nobody works on (the same ones twice, a second apart); returns them. (The
/// audit queue is left out: behind an event the dead process held, its
/// guild's queue waits, in order.)
async fn dead_leases(db: &TestDb) -> Vec<(String, Option<String>)> {
    let held = || async {
        let now = db.clock.now().timestamp_millis();
        let mut items = db
            .text_pairs(
                "SELECT app_id, CAST(lease_until AS TEXT) FROM approval_requests \
                 WHERE (status = 'pending' AND message_id IS NULL) \
                 OR (status = 'approved' AND delivered_at IS NULL) ORDER BY 1",
            )
            .await;
        let all_held = items.iter().all(|(_, until)| {
            until
                .as_deref()
                .and_then(|t| t.parse::<i64>().ok())
                .is_some_and(|t| t > now)
        });
        items.retain(|_| all_held);
        (all_held, items)
    };
    for _ in 0..600 {
        let (done, first) = held().await;
        if done {
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            let (still, second) = held().await;
            if still && second == first {
                return first;
            }
        } else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
    }
    panic!("the live process never finished what it could do");
}

/// Waits until `sql` finds no row: the work it selects is done.
async fn until_none(db: &TestDb, sql: &str) {
    for _ in 0..1200 {
        if db.text_pairs(sql).await.is_empty() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    panic!("still to do after 2 minutes: {sql}");
}

/// Whether a message is the request of `app` (its buttons name it).
fn is_request_of(m: &Value, app: &ApplicationId) -> bool {
    m["components"].to_string().contains(app.as_str())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_do_each_job_once_and_survive_a_kill() {
    let db = TestDb::postgres().await;
    db.clock.set(chrono::Utc::now());
    let fake = FakeDiscord::start().await;
    for g in GUILDS {
        g.set_up(&fake, &db.service).await;
    }
    assert_eq!(FakeDiscord::shard_of(GUILDS[0].id, 2), 1);
    assert_eq!(FakeDiscord::shard_of(GUILDS[1].id, 2), 0);
    let shard0 = ShardProcess::start(&fake, &process_service(&db).await, 2, 0..=0).await;
    let shard1 = ShardProcess::start(&fake, &process_service(&db).await, 2, 1..=1).await;

    // Both guilds run wizards and approvals at once, each on its own shard.
    let mut flows = tokio::task::JoinSet::new();
    for g in GUILDS {
        for n in 0..3 {
            let fake = fake.clone();
            flows.spawn(async move {
                let user = g.requester(n);
                let review = to_review(&fake, &user, &format!("Interactive {n}")).await;
                let submit = fake
                    .press_button(&user, &review, &component(&review, "submit"))
                    .await;
                fake.response(&submit).await;
                assert_eq!(
                    fake.dispatched_to(&submit),
                    Some(FakeDiscord::shard_of(g.id, 2)),
                    "a guild's interaction goes to its shard"
                );
                let name = format!("Interactive {n}");
                fake.wait_until("the request is posted", |f| {
                    f.channel_messages(g.approvals)
                        .iter()
                        .any(|m| m.to_string().contains(&name))
                })
                .await;
                let request = fake
                    .channel_messages(g.approvals)
                    .into_iter()
                    .find(|m| m.to_string().contains(&name))
                    .expect("the request");
                let approve = fake
                    .press_button(&g.approver(), &request, &component(&request, "approve"))
                    .await;
                fake.response(&approve).await;
                let id = user.id;
                fake.wait_until("the credentials DM", |f| {
                    f.dm_messages(id)
                        .iter()
                        .any(|m| text(m).contains("Secret: `kgs_"))
                })
                .await;
            });
        }
    }
    while let Some(flow) = flows.join_next().await {
        flow.expect("a wizard flow");
    }

    // Then work for the background jobs alone: requests to post (the
    // service wrote them, as a crash after Submit leaves them), approvals
    // to deliver, audit events to post, with every Discord call slow. Shard
    // 0's process starts on it alone, and is sure to hold one delivery when
    // it is killed: the Secret's write into that DM never gets an answer.
    shard1.stop().await;
    fake.set_latency(Some(std::time::Duration::from_millis(40)));
    let mut apps: HashMap<u64, Vec<(ApplicationId, UserId)>> = HashMap::new();
    for g in GUILDS {
        for n in 0..QUEUED {
            let owner = UserId(g.id + 1_000 + n);
            let app = submit_in(&db.service, GuildId(g.id), owner, &format!("Queued {n}"))
                .await
                .app
                .id;
            apps.entry(g.id).or_default().push((app, owner));
        }
    }
    let (hung_app, hung_owner) = apps[&GUILDS[0].id][0].clone();
    let hung_dm = fake.open_dm_channel(hung_owner.0);
    fake.hang("PATCH", &format!("/channels/{hung_dm}/messages"));
    db.clock.advance(chrono::TimeDelta::seconds(2));
    for g in GUILDS {
        for (app, _) in &apps[&g.id][..APPROVED as usize] {
            db.service
                .approve(
                    GuildId(g.id),
                    app,
                    Actor {
                        user_id: UserId(g.approver().id),
                        is_approver: true,
                        is_manager: false,
                    },
                )
                .await
                .expect("approve");
        }
    }
    db.clock.advance(chrono::TimeDelta::seconds(2));
    fake.wait_until("shard 0's process writes the Secret that hangs", |f| {
        f.requests().iter().any(|r| {
            r.method == "PATCH"
                && r.path.starts_with(&format!("/channels/{hung_dm}/"))
                && r.body.to_string().contains("kgs_")
        })
    })
    .await;
    let shard1 = ShardProcess::start(&fake, &process_service(&db).await, 2, 1..=1).await;
    fake.wait_until("both processes are at work on the audit log", |f| {
        GUILDS
            .iter()
            .map(|g| f.channel_messages(g.audit).len())
            .sum::<usize>()
            >= 40
    })
    .await;

    // Killed mid-work: what it held is taken over once its leases lapse.
    let audit_before_kill: usize = GUILDS
        .iter()
        .map(|g| fake.channel_messages(g.audit).len())
        .sum();
    shard0.kill().await;
    fake.unhang();
    // The live process does all it can; what is left is what the dead one
    // held. Only then does the clock jump past the leases, as a minute of
    // real time would: a jump while the live one is mid-item would be a
    // process stalled for a minute, a different story.
    let held = dead_leases(&db).await;
    assert!(
        held.iter().any(|(id, _)| id == hung_app.as_str()),
        "the killed process held the hung delivery: {held:?}"
    );
    db.clock.advance(LEASE + chrono::TimeDelta::seconds(1));
    let shard0 = ShardProcess::start(&fake, &process_service(&db).await, 2, 0..=0).await;
    fake.wait_until("every approval is delivered", |f| {
        GUILDS.iter().all(|g| {
            apps[&g.id][..APPROVED as usize].iter().all(|(_, owner)| {
                f.dm_messages(owner.0)
                    .iter()
                    .any(|m| text(m).contains("Secret: `kgs_"))
            })
        })
    })
    .await;
    // Done in the database too, before the clock jumps again.
    until_none(
        &db,
        "SELECT app_id, NULL FROM approval_requests WHERE status = 'approved' AND delivered_at IS NULL",
    )
    .await;
    until_none(
        &db,
        "SELECT CAST(event_id AS TEXT), NULL FROM audit_outbox WHERE posted_at IS NULL",
    )
    .await;

    // Half the requests' lifetime: the pending ones are reminded, and every
    // DM's lifetime is over.
    db.clock.advance(chrono::TimeDelta::hours(37));
    fake.wait_until("every pending request is reminded", |f| {
        GUILDS.iter().all(|g| {
            let reminders = f
                .channel_messages(g.approvals)
                .iter()
                .filter(|m| text(m).starts_with("⏰"))
                .count();
            reminders >= (QUEUED - APPROVED) as usize
        })
    })
    .await;
    until_none(
        &db,
        "SELECT CAST(message_id AS TEXT), NULL FROM dm_redactions WHERE done_at IS NULL",
    )
    .await;
    until_none(
        &db,
        "SELECT CAST(event_id AS TEXT), NULL FROM audit_outbox WHERE posted_at IS NULL",
    )
    .await;
    // Let anything duplicated still in flight land before counting.
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let outbox = || async {
        db.text_pairs("SELECT CAST(guild_id AS TEXT), CAST(posted_at AS TEXT) FROM audit_outbox")
            .await
    };

    let mut events: BTreeMap<String, usize> = BTreeMap::new();
    for (guild, _) in outbox().await {
        *events.entry(guild).or_default() += 1;
    }
    let mut audit_total = 0;
    for g in GUILDS {
        let posts = fake.channel_messages(g.audit);
        let mut nonces: Vec<String> = posts.iter().map(|m| m["nonce"].to_string()).collect();
        nonces.sort();
        nonces.dedup();
        assert_eq!(nonces.len(), posts.len(), "an audit event posted twice");
        assert_eq!(
            posts.len(),
            events[&g.id.to_string()],
            "every audit event of guild {} posted once",
            g.id
        );
        audit_total += posts.len();

        let messages = fake.channel_messages(g.approvals);
        for (n, (app, owner)) in apps[&g.id].iter().enumerate() {
            let requests = messages.iter().filter(|m| is_request_of(m, app)).count();
            let dms = fake.dm_messages(owner.0);
            if n < APPROVED as usize {
                // Approved by the service, perhaps before its post.
                assert!(requests <= 1, "request {app} posted {requests} times");
                assert_eq!(dms.len(), 1, "{app} delivered once: {dms:#?}");
                assert!(text(&dms[0]).contains("(delivered)"), "{:#}", dms[0]);
                let channel = fake.dm_channel_of(owner.0).expect("a DM channel");
                let redactions = fake
                    .requests()
                    .iter()
                    .filter(|r| {
                        r.method == "PATCH"
                            && r.path.starts_with(&format!("/channels/{channel}/"))
                            && r.body.to_string().contains("(delivered)")
                    })
                    .count();
                assert_eq!(redactions, 1, "{app}'s DM redacted once");
            } else {
                assert_eq!(requests, 1, "request {app} posted once");
                let name = format!("`Queued {n}`");
                let reminders = messages
                    .iter()
                    .filter(|m| text(m).starts_with("⏰") && text(m).contains(&name))
                    .count();
                assert_eq!(reminders, 1, "{app} reminded once");
                assert!(dms.is_empty(), "nothing delivered for a pending request");
            }
        }
    }
    // Discord would show a repeated nonce once, and so does the fake: what
    // says each item was done once is how often it was tried. Only what the
    // killed process had in flight may be tried twice: the hung delivery's
    // DM note, and at most one audit event.
    let mut attempts: BTreeMap<String, usize> = BTreeMap::new();
    for r in fake.requests() {
        if let (true, Some(nonce)) = (r.method == "POST", r.body["nonce"].as_str()) {
            *attempts.entry(format!("{} {nonce}", r.path)).or_default() += 1;
        }
    }
    let repeated: Vec<_> = attempts.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        repeated.len() <= 2 && repeated.iter().all(|(_, n)| **n == 2),
        "posts tried more than once: {repeated:?}"
    );
    assert!(
        attempts.len() > 150,
        "every post carries a nonce: {}",
        attempts.len()
    );
    assert!(
        audit_before_kill < audit_total && audit_total >= 100,
        "the kill came in the middle of {audit_total} audit posts ({audit_before_kill} before it)"
    );
    shard0.stop().await;
    shard1.stop().await;
    db.close().await;
}
