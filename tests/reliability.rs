//! End to end: background jobs under a refusing Discord — bounded retries,
//! paused channels and their resumption — on a manual clock.

mod support;

use chrono::TimeDelta;
use keygate::domain::ids::{ChannelId, GuildId, RoleId, UserId};
use keygate::domain::retry::Job;
use keygate::domain::settings::GuildSettings;
use keygate::service::Actor;
use keygate::store::Backend;
use serde_json::{Value, json};
use support::bot::{Harness, alice, component, shown, text};
use support::fake_discord::{FakeDiscord, TestUser};
use support::flows::{submit_and_get_dm, to_review};

const GUILD: GuildId = GuildId(FakeDiscord::GUILD_ID);
const APPROVALS: u64 = 4_000_000_000_000_102;
const AUDIT: u64 = 4_000_000_000_000_103;
const NEW_APPROVALS: u64 = 4_000_000_000_000_104;
const NEW_AUDIT: u64 = 4_000_000_000_000_105;
const APPROVER_ROLE: u64 = 6_000_000_000_000_102;
const SEND_MESSAGES: u64 = 1 << 11;

end_to_end_on_both_stores!(
    a_refused_approvals_channel_is_probed_not_hammered_and_resumes_on_setup,
    a_refused_audit_channel_keeps_its_queue_in_order_until_setup_changes_it,
    a_hanging_audit_post_is_given_up_inside_its_lease,
    an_approval_that_can_reach_nobody_asks_for_open_dms_once,
    a_failed_redaction_keeps_its_backoff_across_a_restart,
    a_rate_limit_holds_the_queue_at_least_five_seconds,
    a_reminder_that_failed_is_posted_later_once,
    a_delivery_that_fails_midway_waits_its_backoff,
    a_deleted_or_hidden_approvals_channel_pauses_too,
    a_redaction_of_a_deleted_dm_is_done,
    a_rate_limited_request_post_waits_five_seconds,
    a_deleted_wizard_channel_also_asks_for_open_dms,
    setup_refuses_a_channel_the_bot_cannot_see,
    a_rate_limited_redaction_holds_its_queue_five_seconds,
);

fn requester() -> TestUser {
    TestUser::admin(2_000_000_000_000_101, "rita")
}

fn approver() -> TestUser {
    TestUser::member(2_000_000_000_000_102, "arno").with_roles(&[APPROVER_ROLE])
}

/// A guild needing one approval, on the manual clock.
async fn guild(backend: Backend) -> Harness {
    let h = Harness::start_with(backend, true).await;
    for (id, name) in [
        (APPROVALS, "approvals"),
        (AUDIT, "audit"),
        (NEW_APPROVALS, "approvals-2"),
        (NEW_AUDIT, "audit-2"),
    ] {
        h.fake.add_channel(id, name);
    }
    let settings = GuildSettings {
        approvals_required: 1,
        approvals_channel: Some(ChannelId(APPROVALS)),
        audit_channel: Some(ChannelId(AUDIT)),
        approver_role: Some(RoleId(APPROVER_ROLE)),
        ..GuildSettings::defaults(GUILD)
    };
    h.service
        .save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();
    h
}

/// Every later post to `channel` is refused with Missing Permissions.
fn refuse_posts_in(fake: &FakeDiscord, channel: u64) {
    fake.fail(
        "POST",
        &format!("/channels/{channel}/messages"),
        403,
        json!({"code": 50013, "message": "Missing Permissions"}),
        usize::MAX,
    );
}

fn posts_to(fake: &FakeDiscord, channel: u64) -> usize {
    let path = format!("/channels/{channel}/messages");
    fake.requests()
        .iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .count()
}

/// Lets an hour pass on the manual clock, in steps the workers (ticking in
/// real time) each get to see.
async fn an_hour_passes(h: &Harness) {
    for _ in 0..20 {
        h.db.clock.advance(TimeDelta::minutes(3));
        tokio::time::sleep(std::time::Duration::from_millis(600)).await;
    }
}

fn audit_titles(fake: &FakeDiscord, channel: u64) -> Vec<String> {
    fake.channel_messages(channel)
        .iter()
        .filter_map(|m| m["embeds"][0]["title"].as_str().map(str::to_owned))
        .collect()
}

/// `/app create` through Submit; returns the requester's wizard message.
async fn submit(h: &Harness, user: &TestUser, name: &str) -> Value {
    let review = to_review(&h.fake, user, name).await;
    let i = h
        .fake
        .press_button(user, &review, &component(&review, "submit"))
        .await;
    shown(&h.fake, &i, 7).await;
    // The post follows the acknowledgement.
    let before = h.fake.requests().len();
    h.fake
        .wait_until("the request's post is tried", |f| {
            f.requests()[before..]
                .iter()
                .any(|r| r.path.contains("/messages") && r.method == "POST")
        })
        .await;
    h.fake.message_of(&i).expect("the wizard's message")
}

async fn setup(h: &Harness, option: &str, channel: u64) {
    let i = h
        .fake
        .slash_command(
            &alice(),
            "keygate",
            Some("setup"),
            vec![(option, json!(channel.to_string()))],
        )
        .await;
    let saved = h.fake.followups(&i, 1).await.remove(0);
    assert!(text(&saved).contains("Settings saved"), "{saved:#}");
}

async fn a_refused_approvals_channel_is_probed_not_hammered_and_resumes_on_setup(backend: Backend) {
    let h = guild(backend).await;
    let rita = requester();
    refuse_posts_in(&h.fake, APPROVALS);
    submit(&h, &rita, "Front Desk").await;
    h.fake
        .wait_until("the audit channel hears of it", |f| {
            audit_titles(f, AUDIT)
                .iter()
                .any(|t| t == "Channel unusable")
        })
        .await;

    an_hour_passes(&h).await;

    let tries = posts_to(&h.fake, APPROVALS);
    assert!(tries < 100, "{tries} posts reached the refusing channel");
    // One at Submit, then one probe per 10 minutes (seen in 3-minute steps).
    assert!(tries <= 8, "probed more than every 10 minutes: {tries}");
    assert!(tries >= 4, "probed every 10 minutes or so: {tries}");
    let alerts = audit_titles(&h.fake, AUDIT)
        .into_iter()
        .filter(|t| t == "Channel unusable")
        .count();
    assert_eq!(alerts, 1, "the audit channel is told once");
    let held: Vec<_> = h
        .fake
        .dm_messages(rita.id)
        .into_iter()
        .filter(|m| text(m).contains("waits to be posted"))
        .collect();
    assert_eq!(held.len(), 1, "the requester is told once: {held:#?}");
    assert!(h.fake.channel_messages(APPROVALS).is_empty());

    setup(&h, "approvals_channel", NEW_APPROVALS).await;
    h.fake
        .wait_until("the request reaches the new channel", |f| {
            f.channel_messages(NEW_APPROVALS)
                .iter()
                .any(|m| m["embeds"].to_string().contains("Front Desk"))
        })
        .await;
    // Pressing Approve there works as ever.
    let request = h.fake.channel_messages(NEW_APPROVALS).remove(0);
    let i = h
        .fake
        .press_button(&approver(), &request, &component(&request, "approve"))
        .await;
    h.fake.response(&i).await;
    h.fake.wait_for_dm(rita.id, 2).await;
    assert_eq!(
        posts_to(&h.fake, NEW_APPROVALS),
        1,
        "posted once, no duplicate"
    );
    // A retry of a post whose id was not recorded shows once: it carries a nonce.
    let path = format!("/channels/{NEW_APPROVALS}/messages");
    let post = h
        .fake
        .requests()
        .into_iter()
        .find(|r| r.method == "POST" && r.path == path)
        .unwrap();
    assert!(
        post.body["nonce"]
            .as_str()
            .is_some_and(|n| n.starts_with('q') && n.len() <= 25),
        "{:#}",
        post.body
    );
    assert_eq!(post.body["enforce_nonce"], true);
    h.close().await;
}

async fn a_refused_audit_channel_keeps_its_queue_in_order_until_setup_changes_it(backend: Backend) {
    let h = guild(backend).await;
    refuse_posts_in(&h.fake, AUDIT);
    // No approvals needed: each app is registered at Submit, several events each.
    let mut settings = h.service.settings(GUILD).await.unwrap();
    settings.approvals_required = 0;
    h.service
        .save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();
    let rita = requester();
    for name in ["Alpha", "Bravo", "Charlie"] {
        let review = to_review(&h.fake, &rita, name).await;
        let i = h
            .fake
            .press_button(&rita, &review, &component(&review, "submit"))
            .await;
        shown(&h.fake, &i, 7).await;
    }
    an_hour_passes(&h).await;
    let tries = posts_to(&h.fake, AUDIT);
    assert!(tries < 100, "{tries} posts reached the refusing channel");
    assert!(tries <= 8, "probed more than every 10 minutes: {tries}");

    setup(&h, "audit_channel", NEW_AUDIT).await;
    let recorded = h
        .service
        .store()
        .read()
        .await
        .unwrap()
        .audit_events(GUILD, None, 1000)
        .await
        .unwrap()
        .len();
    // The first settings may have reached the old channel before it refused.
    let expected = recorded - h.fake.channel_messages(AUDIT).len();
    h.fake
        .wait_until("every event reaches the new channel", |f| {
            f.channel_messages(NEW_AUDIT).len() >= expected
        })
        .await;
    let posted: Vec<String> = h
        .fake
        .channel_messages(NEW_AUDIT)
        .iter()
        .map(|m| m["embeds"][0]["fields"].to_string())
        .collect();
    assert_eq!(posted.len(), expected, "each event once");
    let first = |name: &str| posted.iter().position(|p| p.contains(name)).unwrap();
    assert!(
        first("Alpha") < first("Bravo") && first("Bravo") < first("Charlie"),
        "in order: {posted:#?}"
    );
    h.close().await;
}

/// A post to the audit channel that Discord never answers is given up well
/// inside the event's 30-second lease, and the event is tried again later.
async fn a_hanging_audit_post_is_given_up_inside_its_lease(backend: Backend) {
    let h = Harness::start_with(backend, true).await;
    h.fake.add_channel(AUDIT, "audit");
    h.fake.hang("POST", &format!("/channels/{AUDIT}/messages"));
    let settings = GuildSettings {
        audit_channel: Some(ChannelId(AUDIT)),
        ..GuildSettings::defaults(GUILD)
    };
    h.service
        .save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();
    h.fake
        .wait_until("the post reaches Discord", |f| posts_to(f, AUDIT) >= 1)
        .await;
    let outbox = |h: &Harness| {
        let store = h.service.store().clone();
        async move {
            let mut tx = store.read().await.unwrap();
            let left = tx.unposted_outbox(100).await.unwrap();
            tx.rollback().await.unwrap();
            left
        }
    };
    // Inside the 30 s lease: given up and deferred, not still waiting.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(25);
    loop {
        let left = outbox(&h).await;
        assert_eq!(left.len(), 1);
        if left[0].attempts == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hanging post was not given up inside its lease"
        );
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    h.fake.unhang();
    h.db.clock.advance(TimeDelta::minutes(11));
    h.fake
        .wait_until("the event is posted after all", |f| {
            audit_titles(f, AUDIT).len() == 1
        })
        .await;
    // Marked posted just after Discord answered.
    let mut left = outbox(&h).await;
    for _ in 0..50 {
        if left.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        left = outbox(&h).await;
    }
    assert!(left.is_empty(), "posted once and marked: {left:?}");
    h.close().await;
}

async fn an_approval_that_can_reach_nobody_asks_for_open_dms_once(backend: Backend) {
    // The wizard ran in the fake's default channel: the bot may not post there.
    unreachable_requester(backend, |fake| {
        fake.deny_bot_in_channel(FakeDiscord::CHANNEL_ID, SEND_MESSAGES)
    })
    .await;
}

async fn a_deleted_wizard_channel_also_asks_for_open_dms(backend: Backend) {
    unreachable_requester(backend, |fake| {
        fake.fail(
            "GET",
            &format!("/channels/{}", FakeDiscord::CHANNEL_ID),
            404,
            json!({"code": 10003, "message": "Unknown Channel"}),
            usize::MAX,
        )
    })
    .await;
}

/// Approval for a requester with closed DMs, after `break_channel` took the
/// wizard's channel from the bot.
async fn unreachable_requester(backend: Backend, break_channel: impl FnOnce(&FakeDiscord)) {
    let h = guild(backend).await;
    let rita = requester();
    submit(&h, &rita, "Closed Doors").await;
    h.fake
        .wait_until("the request is posted", |f| {
            !f.channel_messages(APPROVALS).is_empty()
        })
        .await;
    h.fake.close_dms_of(rita.id);
    break_channel(&h.fake);
    let request = h.fake.channel_messages(APPROVALS).remove(0);
    let i = h
        .fake
        .press_button(&approver(), &request, &component(&request, "approve"))
        .await;
    h.fake.response(&i).await;
    h.fake
        .wait_until("the audit channel asks for open DMs", |f| {
            audit_titles(f, AUDIT).iter().any(|t| t == "Delivery held")
        })
        .await;
    let before = h.fake.requests().len();
    an_hour_passes(&h).await;
    let during = h.fake.requests().len() - before;
    // A try per 10 minutes, a few calls each, and audit posts.
    assert!(during < 100, "{during} requests in an hour");
    let held = audit_titles(&h.fake, AUDIT)
        .into_iter()
        .filter(|t| t == "Delivery held")
        .count();
    assert_eq!(held, 1, "told once");
    assert_eq!(
        posts_to(&h.fake, FakeDiscord::CHANNEL_ID),
        0,
        "no refused post was made"
    );
    let summary = h
        .fake
        .channel_messages(AUDIT)
        .iter()
        .find(|m| m["embeds"][0]["title"] == "Delivery held")
        .unwrap()["embeds"][0]["description"]
        .to_string();
    assert!(summary.contains("open their DMs"), "{summary}");
    h.close().await;
}

fn patches_of(fake: &FakeDiscord, message: &str) -> usize {
    fake.requests()
        .iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/messages/{message}")))
        .count()
}

async fn no_approvals(h: &Harness) {
    let mut settings = h.service.settings(GUILD).await.unwrap();
    settings.approvals_required = 0;
    h.service
        .save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();
}

async fn a_failed_redaction_keeps_its_backoff_across_a_restart(backend: Backend) {
    let mut h = guild(backend).await;
    no_approvals(&h).await;
    let rita = requester();
    let review = to_review(&h.fake, &rita, "Redacted Later").await;
    let (dm, _, secret) = submit_and_get_dm(&h, &rita, &review).await;
    let message = dm["id"].as_str().unwrap().to_owned();
    let edits = patches_of(&h.fake, &message);
    h.fake.fail(
        "PATCH",
        &format!("/messages/{message}"),
        500,
        json!({"code": 0, "message": "Internal Server Error"}),
        2,
    );
    // The DM's lifetime (15 minutes) ends.
    h.db.clock.advance(TimeDelta::minutes(16));
    h.fake
        .wait_until("the redaction is tried", |f| {
            patches_of(f, &message) > edits
        })
        .await;

    // Its next try is a second away on the clock, which stands still: a
    // restarted bot reads that from the database and waits too.
    h.restart().await;
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    assert_eq!(
        patches_of(&h.fake, &message),
        edits + 1,
        "waits its backoff"
    );

    h.db.clock.advance(TimeDelta::milliseconds(1300));
    h.fake
        .wait_until("the second try", |f| patches_of(f, &message) > edits + 1)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert_eq!(
        patches_of(&h.fake, &message),
        edits + 2,
        "the wait doubled: 2 s"
    );
    h.db.clock.advance(TimeDelta::seconds(3));
    let user = rita.id;
    h.fake
        .wait_until("the DM is redacted", |f| {
            f.dm_messages(user)
                .iter()
                .any(|m| m["id"] == message.as_str() && !text(m).contains(&secret))
        })
        .await;
    h.close().await;
}

async fn a_rate_limit_holds_the_queue_at_least_five_seconds(backend: Backend) {
    let h = guild(backend).await;
    h.fake
        .wait_until("the first settings are posted", |f| {
            !f.channel_messages(AUDIT).is_empty()
        })
        .await;
    let before = posts_to(&h.fake, AUDIT);
    h.fake.fail(
        "POST",
        &format!("/channels/{AUDIT}/messages"),
        429,
        json!({"message": "You are being rate limited.", "retry_after": 0.01, "global": false}),
        1,
    );
    no_approvals(&h).await;
    h.fake
        .wait_until("the post is tried", |f| posts_to(f, AUDIT) > before)
        .await;
    let limited = std::time::Instant::now();
    // Its next try is read off the clock when the failure is stored: the
    // clock moves only after.
    for _ in 0..100 {
        let mut tx = h.service.store().read().await.unwrap();
        let failed = tx
            .unposted_outbox(10)
            .await
            .unwrap()
            .iter()
            .any(|e| e.attempts > 0);
        tx.rollback().await.unwrap();
        if failed {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // The event itself is due again on the clock at once: only the queue's
    // hold keeps the poster off Discord.
    h.db.clock.advance(TimeDelta::minutes(1));
    h.fake
        .wait_until("the post is tried again", |f| {
            posts_to(f, AUDIT) > before + 1
        })
        .await;
    let held = limited.elapsed();
    assert!(
        held >= std::time::Duration::from_millis(4900),
        "the queue waited only {held:?} after a 429"
    );
    h.close().await;
}

async fn a_reminder_that_failed_is_posted_later_once(backend: Backend) {
    let h = guild(backend).await;
    let mut settings = h.service.settings(GUILD).await.unwrap();
    settings.request_expiry = TimeDelta::hours(2);
    h.service
        .save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();
    submit(&h, &requester(), "Remind Me").await;
    h.fake
        .wait_until("the request is posted", |f| {
            !f.channel_messages(APPROVALS).is_empty()
        })
        .await;
    h.fake.fail(
        "POST",
        &format!("/channels/{APPROVALS}/messages"),
        500,
        json!({"code": 0, "message": "Internal Server Error"}),
        1,
    );
    let before = posts_to(&h.fake, APPROVALS);
    // Half the request's lifetime.
    h.db.clock.advance(TimeDelta::minutes(61));
    h.fake
        .wait_until("the reminder is tried", |f| posts_to(f, APPROVALS) > before)
        .await;
    retry_recorded(&h, Job::Remind).await;
    h.db.clock.advance(TimeDelta::seconds(2));
    let reminders = |f: &FakeDiscord| {
        f.channel_messages(APPROVALS)
            .iter()
            .filter(|m| text(m).contains("Reminder"))
            .count()
    };
    h.fake
        .wait_until("the reminder is posted", |f| reminders(f) == 1)
        .await;
    h.db.clock.advance(TimeDelta::minutes(5));
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(reminders(&h.fake), 1, "reminded once");
    h.close().await;
}

async fn a_delivery_that_fails_midway_waits_its_backoff(backend: Backend) {
    let h = guild(backend).await;
    let rita = requester();
    submit(&h, &rita, "Half Delivered").await;
    h.fake
        .wait_until("the request is posted", |f| {
            !f.channel_messages(APPROVALS).is_empty()
        })
        .await;
    let dm = h.fake.open_dm_channel(rita.id);
    // Every fill of the credentials note fails for now.
    h.fake.fail(
        "PATCH",
        &format!("/channels/{dm}/messages/"),
        500,
        json!({"code": 0, "message": "Internal Server Error"}),
        usize::MAX,
    );
    let request = h.fake.channel_messages(APPROVALS).remove(0);
    let i = h
        .fake
        .press_button(&approver(), &request, &component(&request, "approve"))
        .await;
    h.fake.response(&i).await;
    let fills = |f: &FakeDiscord| {
        f.requests()
            .iter()
            .filter(|r| r.method == "PATCH" && r.path.starts_with(&format!("/channels/{dm}/")))
            .count()
    };
    let to_dm = |f: &FakeDiscord| {
        f.requests()
            .iter()
            .filter(|r| r.path.starts_with(&format!("/channels/{dm}/")))
            .count()
    };
    h.fake
        .wait_until("the fill is tried", |f| fills(f) >= 1)
        .await;
    retry_recorded(&h, Job::Deliver).await;
    // The worker takes over once the approval is past its stall grace; the
    // clock then stands still, so a backoff is the only thing between tries.
    h.db.clock.advance(TimeDelta::seconds(2));
    h.fake
        .wait_until("the worker tries", |f| fills(f) >= 2)
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let calls = to_dm(&h.fake);
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    assert_eq!(fills(&h.fake), 2, "no fill before the backoff ends");
    assert_eq!(to_dm(&h.fake), calls, "no DM call before the backoff ends");
    h.close().await;
}

/// Waits until a failure of `job` is stored: its next try is read off the
/// clock then, so the clock may move only after.
async fn retry_recorded(h: &Harness, job: Job) {
    for _ in 0..100 {
        let mut tx = h.service.store().read().await.unwrap();
        let recorded = !tx.retries(job).await.unwrap().is_empty();
        tx.rollback().await.unwrap();
        if recorded {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!("no failure of {job:?} was recorded");
}

async fn a_deleted_or_hidden_approvals_channel_pauses_too(backend: Backend) {
    for (status, code, why) in [
        (404, 10003, "it was deleted"),
        (403, 50001, "cannot see it"),
    ] {
        let h = guild(backend).await;
        h.fake.fail(
            "POST",
            &format!("/channels/{APPROVALS}/messages"),
            status,
            json!({"code": code, "message": "refused"}),
            usize::MAX,
        );
        submit(&h, &requester(), "Nowhere To Go").await;
        h.fake
            .wait_until("the audit channel hears of it", |f| {
                f.channel_messages(AUDIT)
                    .iter()
                    .any(|m| m["embeds"][0]["title"] == "Channel unusable")
            })
            .await;
        let alert = h
            .fake
            .channel_messages(AUDIT)
            .into_iter()
            .find(|m| m["embeds"][0]["title"] == "Channel unusable")
            .unwrap();
        assert!(alert["embeds"].to_string().contains(why), "{alert:#}");
        for _ in 0..10 {
            h.db.clock.advance(TimeDelta::minutes(3));
            tokio::time::sleep(std::time::Duration::from_millis(600)).await;
        }
        let tries = posts_to(&h.fake, APPROVALS);
        assert!(
            (2..=5).contains(&tries),
            "{code}: {tries} posts in 30 minutes"
        );
        h.close().await;
    }
}

async fn a_redaction_of_a_deleted_dm_is_done(backend: Backend) {
    let h = guild(backend).await;
    no_approvals(&h).await;
    let rita = requester();
    let review = to_review(&h.fake, &rita, "Deleted DM").await;
    let (dm, _, _) = submit_and_get_dm(&h, &rita, &review).await;
    let message = dm["id"].as_str().unwrap().to_owned();
    h.fake.fail(
        "PATCH",
        &format!("/messages/{message}"),
        404,
        json!({"code": 10008, "message": "Unknown Message"}),
        usize::MAX,
    );
    let edits = patches_of(&h.fake, &message);
    h.db.clock.advance(TimeDelta::minutes(16));
    h.fake
        .wait_until("the redaction is tried", |f| {
            patches_of(f, &message) > edits
        })
        .await;
    let channel = ChannelId(dm["channel_id"].as_str().unwrap().parse().unwrap());
    let id = keygate::domain::ids::MessageId(message.parse().unwrap());
    for _ in 0..100 {
        let mut tx = h.service.store().read().await.unwrap();
        let done = tx.redaction_done(channel, id).await.unwrap();
        tx.rollback().await.unwrap();
        if done == Some(true) {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    h.db.clock.advance(TimeDelta::minutes(20));
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert_eq!(
        patches_of(&h.fake, &message),
        edits + 1,
        "a gone message is not edited again"
    );
    h.close().await;
}

async fn a_rate_limited_request_post_waits_five_seconds(backend: Backend) {
    // On the system clock: the wait is Discord's, in real time.
    let h = Harness::start_with(backend, false).await;
    h.fake.add_channel(APPROVALS, "approvals");
    let settings = GuildSettings {
        approvals_required: 1,
        approvals_channel: Some(ChannelId(APPROVALS)),
        approver_role: Some(RoleId(APPROVER_ROLE)),
        ..GuildSettings::defaults(GUILD)
    };
    h.service
        .save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();
    h.fake.fail(
        "POST",
        &format!("/channels/{APPROVALS}/messages"),
        429,
        json!({"message": "You are being rate limited.", "retry_after": 0.01, "global": false}),
        1,
    );
    submit(&h, &requester(), "Slow Down").await;
    h.fake
        .wait_until("the request is posted", |f| {
            !f.channel_messages(APPROVALS).is_empty()
        })
        .await;
    // From when the bot sent the refused post to when it sent the next.
    let path = format!("/channels/{APPROVALS}/messages");
    let sent: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "POST" && r.path == path)
        .map(|r| r.sent_at)
        .collect();
    assert_eq!(sent.len(), 2, "the refused post and the one after");
    let waited = sent[1].duration_since(sent[0]);
    assert!(
        waited >= std::time::Duration::from_millis(4800),
        "posted again {waited:?} after a 429"
    );
    h.close().await;
}

async fn setup_refuses_a_channel_the_bot_cannot_see(backend: Backend) {
    let h = guild(backend).await;
    // Discord answers 403 50001 for a channel hidden from the bot.
    h.fake.fail(
        "GET",
        &format!("/channels/{NEW_APPROVALS}"),
        403,
        json!({"code": 50001, "message": "Missing Access"}),
        usize::MAX,
    );
    let i = h
        .fake
        .slash_command(
            &alice(),
            "keygate",
            Some("setup"),
            vec![("approvals_channel", json!(NEW_APPROVALS.to_string()))],
        )
        .await;
    let refused = text(&h.fake.followups(&i, 1).await.remove(0));
    assert!(refused.contains("cannot post"), "{refused}");
    assert_eq!(
        h.service.settings(GUILD).await.unwrap().approvals_channel,
        Some(ChannelId(APPROVALS)),
        "nothing changed"
    );
    h.close().await;
}

async fn a_rate_limited_redaction_holds_its_queue_five_seconds(backend: Backend) {
    let h = guild(backend).await;
    no_approvals(&h).await;
    let rita = requester();
    let review = to_review(&h.fake, &rita, "Rate Limited DM").await;
    let (dm, _, _) = submit_and_get_dm(&h, &rita, &review).await;
    let message = dm["id"].as_str().unwrap().to_owned();
    let edits = patches_of(&h.fake, &message);
    h.fake.fail(
        "PATCH",
        &format!("/messages/{message}"),
        429,
        json!({"message": "You are being rate limited.", "retry_after": 0.01, "global": false}),
        1,
    );
    h.db.clock.advance(TimeDelta::minutes(16));
    h.fake
        .wait_until("the redaction is tried", |f| {
            patches_of(f, &message) > edits
        })
        .await;
    retry_recorded(&h, Job::Redact).await;
    // The item is due again on the clock: only the queue's hold waits.
    h.db.clock.advance(TimeDelta::minutes(1));
    h.fake
        .wait_until("the redaction is tried again", |f| {
            patches_of(f, &message) > edits + 1
        })
        .await;
    let sent: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.method == "PATCH" && r.path.ends_with(&format!("/messages/{message}")))
        .map(|r| r.sent_at)
        .collect();
    let waited = sent[edits + 1].duration_since(sent[edits]);
    assert!(
        waited >= std::time::Duration::from_millis(4900),
        "the redaction queue waited only {waited:?} after a 429"
    );
    h.close().await;
}
