//! End to end on both stores: approvals, the audit-log channel and `/keygate setup`, against a fake Discord.

mod support;

use keygate::domain::ids::{ChannelId, GuildId, RoleId, UserId};
use keygate::domain::settings::GuildSettings;
use keygate::domain::verification::VerifyCode;
use keygate::service::{Actor, SettingsChange};
use keygate::store::Backend;
use serde_json::{Value, json};
use support::bot::{Harness, alice, component, generate_key_in_dm, shown, text, token};
use support::fake_discord::{FakeDiscord, TestUser};
use support::verify;

end_to_end_on_both_stores!(
    one_approver_end_to_end,
    two_approvers_each_counted_once_and_rules_enforced,
    deny_with_a_reason_reaches_the_requester,
    approve_and_deny_at_once_make_one_decision,
    withdraw_closes_the_request,
    requests_expire_with_a_reminder_also_across_a_restart,
    closed_dms_after_approval_reveal_once_for_the_requester_only,
    audit_channel_gets_every_event_in_order_through_failures_and_a_restart,
    setup_is_for_managers_and_checks_the_channels,
    history_lists_an_apps_events_newest_first_in_pages,
    a_failed_post_or_delivery_is_retried_from_the_database,
    denying_your_own_request_says_why,
    an_upgrade_from_0001_sends_old_requesters_nothing,
    typed_markdown_reaches_discord_escaped,
    setup_warns_when_reminders_could_not_ping_the_approvers,
);

const GUILD: GuildId = GuildId(FakeDiscord::GUILD_ID);
const APPROVALS: u64 = 4_000_000_000_000_002;
const AUDIT: u64 = 4_000_000_000_000_003;
const APPROVER_ROLE: u64 = 6_000_000_000_000_002;
const EPHEMERAL: u64 = 1 << 6;
const SEND_MESSAGES: u64 = 1 << 11;

fn approver(id: u64, name: &str) -> TestUser {
    TestUser::member(id, name).with_roles(&[APPROVER_ROLE])
}

fn bob() -> TestUser {
    approver(2_000_000_000_000_002, "bob")
}

fn carol() -> TestUser {
    approver(2_000_000_000_000_003, "carol")
}

fn outsider() -> TestUser {
    TestUser::member(2_000_000_000_000_004, "dave")
}

/// A harness whose guild requires `n` approvals from the approver role.
async fn with_approvals(backend: Backend, n: u8) -> Harness {
    let h = Harness::start_with(backend, false).await;
    h.fake.add_channel(APPROVALS, "approvals");
    h.fake.add_channel(AUDIT, "audit");
    let settings = GuildSettings {
        approvals_required: n,
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

/// `/app create` through Submit; returns the requester's wizard message.
async fn submit_request(fake: &FakeDiscord, user: &TestUser, name: &str) -> Value {
    submit_described(fake, user, name, "needs approval").await
}

async fn submit_described(
    fake: &FakeDiscord,
    user: &TestUser,
    name: &str,
    description: &str,
) -> Value {
    let i = fake
        .slash_command(user, "app", Some("create"), vec![])
        .await;
    let modal = fake.response(&i).await["data"]["custom_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let fields = [
        ("name", name),
        ("uri", "https://spa.example.com"),
        ("description", description),
        ("login_urls", "https://spa.example.com/cb"),
        ("logout_urls", ""),
    ];
    let i = fake.submit_modal(user, &modal, &fields, None).await;
    let m = shown(fake, &i, 4).await;
    let i = fake
        .select(user, &m, &component(&m, "usertype"), &["employee"])
        .await;
    let m = shown(fake, &i, 7).await;
    let i = fake
        .select(user, &m, &component(&m, "source"), &["client_app"])
        .await;
    let m = shown(fake, &i, 7).await;
    let i = fake.press_button(user, &m, &component(&m, "next")).await;
    let m = shown(fake, &i, 7).await;
    let i = fake
        .select(user, &m, &component(&m, "scopes"), &["invoices"])
        .await;
    let m = shown(fake, &i, 7).await;
    let i = fake.press_button(user, &m, &component(&m, "next")).await;
    let m = shown(fake, &i, 7).await;
    // Counted before Submit: its post may be tried before the waiting
    // message is seen.
    let before = fake.requests().len();
    let i = fake.press_button(user, &m, &component(&m, "submit")).await;
    shown(fake, &i, 7).await;
    // Answered first; the request is posted after, and its link added (or,
    // when the post fails, the worker posts it later, unlinked).
    fake.wait_until("the request's post is tried", |f| {
        f.message_of(&i)
            .is_some_and(|m| text(&m).contains("discord.com/channels/"))
            || f.requests()[before..]
                .iter()
                .any(|r| r.path.contains(&format!("/channels/{APPROVALS}/messages")))
    })
    .await;
    fake.wait_until("the link, if the post went through", |f| {
        f.channel_messages(APPROVALS).is_empty()
            || f.message_of(&i)
                .is_some_and(|m| text(&m).contains("discord.com/channels/"))
    })
    .await;
    fake.message_of(&i).expect("the wizard's message")
}

/// The newest message in the approvals channel.
fn request_message(fake: &FakeDiscord) -> Value {
    fake.channel_messages(APPROVALS)
        .pop()
        .expect("a request in the approvals channel")
}

fn embed_text(message: &Value) -> String {
    message["embeds"].to_string()
}

/// Presses a button and returns (response type, the message the user sees or the ephemeral text).
async fn press(fake: &FakeDiscord, user: &TestUser, message: &Value, action: &str) -> (u64, Value) {
    let i = fake
        .press_button(user, message, &component(message, action))
        .await;
    let r = fake.response(&i).await;
    let kind = r["type"].as_u64().unwrap();
    match kind {
        7 => (7, fake.message_of(&i).unwrap()),
        // Deferred before writing: the message edited in place reads as an
        // update (7), an ephemeral follow-up as a new message (4).
        6 => {
            let m = shown(fake, &i, 7).await;
            let kind = if fake.followup_count(&i) > 0 { 4 } else { 7 };
            (kind, m)
        }
        _ => (kind, r["data"].clone()),
    }
}

/// Every body the bot sent to a channel, with its path.
fn bodies_to(fake: &FakeDiscord, channel: u64) -> Vec<Value> {
    let prefix = format!("/channels/{channel}/");
    fake.requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&prefix) && r.method != "GET")
        .map(|r| r.body)
        .collect()
}

/// Nothing the bot posts to a shared channel may ping anyone, but for
/// reminders, which ping the approver role (checked where they are tested).
fn assert_no_pings(fake: &FakeDiscord, channel: u64) {
    let is_reminder = |b: &Value| {
        b["content"]
            .as_str()
            .is_some_and(|c| c.contains("Reminder:"))
    };
    for body in bodies_to(fake, channel)
        .into_iter()
        .filter(|b| !is_reminder(b))
    {
        let allowed = &body["allowed_mentions"];
        assert_eq!(allowed["parse"], json!([]), "pings possible: {body}");
        assert!(
            allowed["users"].as_array().is_none_or(|u| u.is_empty()),
            "{body}"
        );
        assert!(
            allowed["roles"].as_array().is_none_or(|u| u.is_empty()),
            "{body}"
        );
    }
}

async fn dm_with_credentials(fake: &FakeDiscord, user: u64) -> Value {
    fake.wait_until("credentials in the requester's DM", |f| {
        f.dm_messages(user).iter().any(|m| text(m).contains("kgs_"))
    })
    .await;
    fake.dm_messages(user)
        .into_iter()
        .find(|m| text(m).contains("kgs_"))
        .unwrap()
}

async fn one_approver_end_to_end(backend: Backend) {
    let h = with_approvals(backend, 1).await;
    let waiting = submit_request(&h.fake, &alice(), "Back Office").await;
    assert!(
        text(&waiting).contains("waits for 1 approval"),
        "{waiting:#}"
    );
    assert!(text(&waiting).contains(&format!(
        "https://discord.com/channels/{}/{APPROVALS}/",
        FakeDiscord::GUILD_ID
    )));
    component(&waiting, "withdraw");
    let request = request_message(&h.fake);
    for part in [
        "Back Office",
        "Employee",
        "Client App",
        "Invoices",
        "https://spa.example.com/cb",
        "0/1",
    ] {
        assert!(
            embed_text(&request).contains(part),
            "{part} missing: {request:#}"
        );
    }
    assert!(
        h.fake.dm_messages(alice().id).is_empty(),
        "no credentials before approval"
    );

    let (kind, decided) = press(&h.fake, &bob(), &request, "approve").await;
    assert_eq!(kind, 7);
    assert!(
        embed_text(&decided).contains(&format!("Approved by <@{}>", bob().id)),
        "{decided:#}"
    );
    assert_eq!(decided["components"], json!([]));

    let dm = dm_with_credentials(&h.fake, alice().id).await;
    let secret = token(&text(&dm), "kgs_").unwrap();
    let (_, key) = generate_key_in_dm(&h.fake, &alice(), &dm).await;
    assert_eq!(verify(&h.service, &key).await, VerifyCode::Valid);
    for channel in [APPROVALS, AUDIT] {
        assert_no_pings(&h.fake, channel);
        for body in bodies_to(&h.fake, channel) {
            assert!(
                !body.to_string().contains(&secret) && !body.to_string().contains(&key),
                "{body}"
            );
        }
    }
    h.close().await;
}

async fn two_approvers_each_counted_once_and_rules_enforced(backend: Backend) {
    let h = with_approvals(backend, 2).await;
    submit_request(&h.fake, &alice(), "Two Keys").await;
    let request = request_message(&h.fake);

    // The requester (an admin, but it is their own request) and a non-approver are refused.
    let (kind, refused) = press(
        &h.fake,
        &alice().with_roles(&[APPROVER_ROLE]),
        &request,
        "approve",
    )
    .await;
    assert_eq!(kind, 4);
    assert!(
        refused["content"]
            .as_str()
            .unwrap()
            .contains("your own request"),
        "{refused:#}"
    );
    assert_eq!(refused["flags"].as_u64().unwrap() & EPHEMERAL, EPHEMERAL);
    let (_, refused) = press(&h.fake, &outsider(), &request, "approve").await;
    assert!(
        refused["content"]
            .as_str()
            .unwrap()
            .contains("only approvers"),
        "{refused:#}"
    );

    let (kind, counted) = press(&h.fake, &bob(), &request, "approve").await;
    assert_eq!(kind, 7);
    assert!(embed_text(&counted).contains("1/2"), "{counted:#}");
    component(&counted, "approve");
    let (kind, again) = press(&h.fake, &bob(), &counted, "approve").await;
    assert_eq!(kind, 4);
    assert!(
        again["content"]
            .as_str()
            .unwrap()
            .contains("already approved"),
        "{again:#}"
    );
    assert!(h.fake.dm_messages(alice().id).is_empty());

    // An approver who lost the role since cannot approve.
    let demoted = TestUser::member(carol().id, "carol");
    let (_, refused) = press(&h.fake, &demoted, &counted, "approve").await;
    assert!(
        refused["content"]
            .as_str()
            .unwrap()
            .contains("only approvers")
    );

    let (kind, approved) = press(&h.fake, &carol(), &counted, "approve").await;
    assert_eq!(kind, 7);
    assert!(
        embed_text(&approved).contains(&format!("<@{}>, <@{}>", bob().id, carol().id)),
        "{approved:#}"
    );
    dm_with_credentials(&h.fake, alice().id).await;
    h.close().await;
}

async fn deny_with_a_reason_reaches_the_requester(backend: Backend) {
    let h = with_approvals(backend, 1).await;
    submit_request(&h.fake, &alice(), "Denied App").await;
    let request = request_message(&h.fake);
    let i = h
        .fake
        .press_button(&bob(), &request, &component(&request, "deny"))
        .await;
    let modal = h.fake.response(&i).await;
    assert_eq!(modal["type"], 9);
    let modal_id = modal["data"]["custom_id"].as_str().unwrap().to_owned();
    let i = h
        .fake
        .submit_modal(
            &bob(),
            &modal_id,
            &[("reason", "use the existing Back Office app")],
            Some(&request),
        )
        .await;
    let denied = shown(&h.fake, &i, 7).await;
    assert!(embed_text(&denied).contains("Denied by"), "{denied:#}");
    assert!(embed_text(&denied).contains("use the existing Back Office app"));
    assert_eq!(denied["components"], json!([]));
    h.fake
        .wait_until("the requester is told", |f| {
            f.dm_messages(alice().id)
                .iter()
                .any(|m| text(m).contains("use the existing Back Office app"))
        })
        .await;
    let (_, late) = press(&h.fake, &carol(), &request, "approve").await;
    assert!(
        late["content"].as_str().unwrap().contains("already denied"),
        "{late:#}"
    );
    h.close().await;
}

async fn approve_and_deny_at_once_make_one_decision(backend: Backend) {
    let h = with_approvals(backend, 1).await;
    for round in 0..3 {
        submit_request(&h.fake, &alice(), &format!("Raced {round}")).await;
        let request = request_message(&h.fake);
        let modal_id = component(&request, "deny").replace(":deny", ":denyreason");
        let (b, c) = (bob(), carol());
        let approve_id = component(&request, "approve");
        let (approve, deny) = tokio::join!(
            h.fake.press_button(&b, &request, &approve_id),
            h.fake
                .submit_modal(&c, &modal_id, &[("reason", "no")], Some(&request))
        );
        // Both are deferred before they write; the one that lost the race
        // is told so in an ephemeral follow-up.
        let outcomes = [
            shown(&h.fake, &approve, 7).await,
            shown(&h.fake, &deny, 7).await,
        ];
        let losers: Vec<_> = outcomes
            .iter()
            .filter(|m| text(m).contains("already"))
            .collect();
        assert_eq!(losers.len(), 1, "round {round}: {outcomes:#?}");
        assert!(
            losers[0]["flags"].as_u64().unwrap_or(0) & 64 != 0,
            "ephemeral: {:#}",
            losers[0]
        );
    }
    h.close().await;
}

async fn withdraw_closes_the_request(backend: Backend) {
    let h = with_approvals(backend, 1).await;
    let waiting = submit_request(&h.fake, &alice(), "Changed My Mind").await;
    let (kind, withdrawn) = press(&h.fake, &alice(), &waiting, "withdraw").await;
    assert_eq!(kind, 7);
    assert!(text(&withdrawn).contains("withdrew"));
    h.fake
        .wait_until("the approvals message shows the withdrawal", |f| {
            embed_text(&request_message(f)).contains("Withdrawn")
        })
        .await;
    let request = request_message(&h.fake);
    assert!(embed_text(&request).contains("Withdrawn"), "{request:#}");
    assert_eq!(request["components"], json!([]));
    let (_, late) = press(
        &h.fake,
        &bob(),
        &waiting_request_buttons(&h, &request),
        "approve",
    )
    .await;
    assert!(
        late["content"].as_str().unwrap().contains("withdrawn"),
        "{late:#}"
    );
    h.close().await;
}

/// The request message as it was before its buttons were removed (a stale client).
fn waiting_request_buttons(h: &Harness, request: &Value) -> Value {
    let first = h
        .fake
        .requests()
        .into_iter()
        .find(|r| r.path == format!("/channels/{APPROVALS}/messages") && r.method == "POST")
        .unwrap();
    let mut stale = request.clone();
    stale["components"] = first.body["components"].clone();
    stale
}

async fn requests_expire_with_a_reminder_also_across_a_restart(backend: Backend) {
    let mut h = with_approvals(backend, 1).await;
    let mut settings = h.service.settings(GUILD).await.unwrap();
    settings.request_expiry = chrono::TimeDelta::seconds(2);
    h.service
        .save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();

    submit_request(&h.fake, &alice(), "Soon Expired").await;
    h.fake
        .wait_until("a reminder at half-time", |f| {
            f.channel_messages(APPROVALS)
                .iter()
                .any(|m| text(m).contains("Reminder"))
        })
        .await;
    h.fake
        .wait_until("the request expires", |f| {
            f.channel_messages(APPROVALS)
                .iter()
                .any(|m| m["embeds"].to_string().contains("Expired"))
        })
        .await;
    h.fake
        .wait_until("the requester is told", |f| {
            f.dm_messages(alice().id)
                .iter()
                .any(|m| text(m).contains("expired"))
        })
        .await;

    // The bot is down through the half-time and the expiry of the next one.
    submit_request(&h.fake, &alice(), "Expires While Down").await;
    h.stop_bot().await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    h.restart().await;
    h.fake
        .wait_until("the overdue request expires after the restart", |f| {
            f.channel_messages(APPROVALS)
                .iter()
                .filter(|m| m["embeds"].to_string().contains("Expired"))
                .count()
                == 2
        })
        .await;
    let reminders = h
        .fake
        .channel_messages(APPROVALS)
        .iter()
        .filter(|m| text(m).contains("Reminder"))
        .count();
    assert!(reminders >= 1);
    // The reminder notifies the approver role, and only it.
    let reminder = bodies_to(&h.fake, APPROVALS)
        .into_iter()
        .find(|b| {
            b["content"]
                .as_str()
                .is_some_and(|c| c.contains("Reminder"))
        })
        .expect("the reminder's post");
    assert!(
        text(&reminder).contains(&format!("<@&{APPROVER_ROLE}>")),
        "{reminder:#}"
    );
    assert_eq!(
        reminder["allowed_mentions"],
        json!({"parse": [], "users": [], "roles": [APPROVER_ROLE.to_string()]}),
        "{reminder:#}"
    );
    let request = request_message(&h.fake);
    let (_, late) = press(
        &h.fake,
        &bob(),
        &waiting_request_buttons(&h, &request),
        "approve",
    )
    .await;
    assert!(
        late["content"].as_str().unwrap().contains("expired"),
        "{late:#}"
    );
    assert_no_pings(&h.fake, APPROVALS);
    h.close().await;
}

async fn closed_dms_after_approval_reveal_once_for_the_requester_only(backend: Backend) {
    let h = with_approvals(backend, 1).await;
    h.fake.close_dms_of(alice().id);
    submit_request(&h.fake, &alice(), "Revealed").await;
    let request = request_message(&h.fake);
    press(&h.fake, &bob(), &request, "approve").await;
    h.fake
        .wait_until("a Reveal button in the wizard's channel", |f| {
            f.channel_messages(FakeDiscord::CHANNEL_ID)
                .iter()
                .any(|m| text(m).contains("Reveal"))
        })
        .await;
    let reveal = h
        .fake
        .channel_messages(FakeDiscord::CHANNEL_ID)
        .into_iter()
        .find(|m| text(m).contains("Reveal"))
        .unwrap();
    assert!(!text(&reveal).contains("kgs_"));
    // The requester, and only them, is mentioned.
    let post = bodies_to(&h.fake, FakeDiscord::CHANNEL_ID)
        .into_iter()
        .find(|b| b.to_string().contains("Reveal"))
        .unwrap();
    assert_eq!(
        post["allowed_mentions"]["users"],
        json!([alice().id.to_string()])
    );
    assert_eq!(post["allowed_mentions"]["parse"], json!([]));

    let (kind, refused) = press(&h.fake, &bob(), &reveal, "reveal").await;
    assert_eq!(kind, 4);
    assert!(
        refused["content"]
            .as_str()
            .unwrap()
            .contains("only the requester"),
        "{refused:#}"
    );
    let (kind, revealed) = press(&h.fake, &alice(), &reveal, "reveal").await;
    assert_eq!(kind, 4);
    assert_eq!(revealed["flags"].as_u64().unwrap() & EPHEMERAL, EPHEMERAL);
    let secret = token(revealed["content"].as_str().unwrap(), "kgs_").expect("the secret, once");
    // The Secret counts as shown once Discord took the reply, a write after
    // it (a press before that is told it is being delivered); the public
    // message loses its button after that write.
    h.fake
        .wait_until("the Reveal message says it was revealed", |f| {
            f.channel_messages(FakeDiscord::CHANNEL_ID)
                .iter()
                .any(|m| text(m).contains("were revealed to the requester"))
        })
        .await;
    // Pressed again on the message as a stale client still shows it.
    let (_, again) = press(&h.fake, &alice(), &reveal, "reveal").await;
    assert!(
        again["content"]
            .as_str()
            .unwrap()
            .contains("already issued"),
        "{again:#}"
    );
    for body in bodies_to(&h.fake, FakeDiscord::CHANNEL_ID) {
        assert!(!body.to_string().contains(&secret), "{body}");
    }
    h.close().await;
}

async fn audit_channel_gets_every_event_in_order_through_failures_and_a_restart(backend: Backend) {
    let mut h = with_approvals(backend, 0).await;
    let path = format!("/channels/{AUDIT}/messages");
    h.fake.fail(
        "POST",
        &path,
        500,
        json!({ "message": "Internal Server Error", "code": 0 }),
        1,
    );
    // Backs the queue off 5 s: serenity drops the body's retry_after.
    h.fake.fail(
        "POST",
        &path,
        429,
        json!({ "message": "You are being rate limited.", "retry_after": 0.2, "global": false }),
        1,
    );
    let actor = Actor::member(UserId(alice().id));
    let mut expected = vec!["changed keygate settings".to_owned()];
    for n in 1..=100 {
        let change = SettingsChange {
            dm_lifetime_minutes: Some(n),
            ..SettingsChange::default()
        };
        h.service
            .update_settings(GUILD, actor, &change)
            .await
            .unwrap();
        expected.push(format!("set DM lifetime {n} min"));
        if n == 50 {
            h.restart().await;
        }
    }
    let total = expected.len();
    // A 5 s back-off, a restart and 101 posts at the poster's pace: alone
    // about 8 s, longer on a machine busy with the other suites.
    h.fake
        .wait_until_within(
            std::time::Duration::from_secs(30),
            "every event in the audit channel",
            |f| f.channel_messages(AUDIT).len() >= total,
        )
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let posted: Vec<String> = h
        .fake
        .channel_messages(AUDIT)
        .iter()
        .map(|m| {
            m["embeds"][0]["description"]
                .as_str()
                .unwrap_or("")
                .to_owned()
        })
        .collect();
    assert_eq!(posted.len(), total, "no duplicates");
    for (got, want) in posted.iter().zip(&expected) {
        assert!(
            got.starts_with(want.as_str()),
            "out of order: {got} vs {want}"
        );
    }
    assert_no_pings(&h.fake, AUDIT);
    h.close().await;
}

async fn setup_is_for_managers_and_checks_the_channels(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    h.fake.add_channel(APPROVALS, "approvals");
    h.fake.add_channel(AUDIT, "audit");
    let i = h
        .fake
        .slash_command(
            &outsider(),
            "keygate",
            Some("setup"),
            vec![("approvals_required", json!(1))],
        )
        .await;
    let refused = h.fake.response(&i).await;
    assert!(
        refused["data"]["content"]
            .as_str()
            .unwrap()
            .contains("Manage Server"),
        "{refused:#}"
    );

    h.fake.deny_bot_in_channel(AUDIT, SEND_MESSAGES);
    let i = h
        .fake
        .slash_command(
            &alice(),
            "keygate",
            Some("setup"),
            vec![("audit_channel", json!(AUDIT.to_string()))],
        )
        .await;
    // Deferred first (checking the channel takes REST calls), then told.
    assert_eq!(h.fake.response(&i).await["type"], 5);
    let refused = h.fake.followups(&i, 1).await.remove(0);
    assert!(text(&refused).contains("cannot post"), "{refused:#}");
    assert_eq!(
        h.service.settings(GUILD).await.unwrap().audit_channel,
        None,
        "nothing changed"
    );

    let i = h
        .fake
        .slash_command(
            &alice(),
            "keygate",
            Some("setup"),
            vec![
                ("approvals_channel", json!(APPROVALS.to_string())),
                ("approver_role", json!(APPROVER_ROLE.to_string())),
                ("approvals_required", json!(2)),
            ],
        )
        .await;
    let saved = h.fake.response(&i).await;
    assert_eq!(
        saved["data"]["flags"].as_u64().unwrap() & EPHEMERAL,
        EPHEMERAL
    );
    let saved = h.fake.followups(&i, 1).await.remove(0);
    assert!(text(&saved).contains("Settings saved"), "{saved:#}");
    let s = h.service.settings(GUILD).await.unwrap();
    assert_eq!(
        (s.approvals_required, s.approvals_channel, s.approver_role),
        (2, Some(ChannelId(APPROVALS)), Some(RoleId(APPROVER_ROLE)))
    );
    assert_eq!(
        s.dm_lifetime,
        chrono::TimeDelta::minutes(15),
        "what was not named is unchanged"
    );

    let i = h
        .fake
        .slash_command(&alice(), "keygate", Some("settings"), vec![])
        .await;
    let shown = h.fake.response(&i).await.to_string();
    assert!(
        shown.contains(&format!("<#{APPROVALS}>")) && shown.contains("Approvals required"),
        "{shown}"
    );
    h.close().await;
}

async fn history_lists_an_apps_events_newest_first_in_pages(backend: Backend) {
    let h = with_approvals(backend, 0).await;
    // Built through the service for speed: the history is what matters here.
    let guild_app = {
        use keygate::domain::application::{LoginUserType, SourceApp};
        use keygate::service::DraftInput;
        let user = UserId(alice().id);
        let form = keygate::domain::validation::AppForm {
            name: "Storied".into(),
            uri: "https://storied.example.com".into(),
            ..Default::default()
        };
        let d = support::new_draft(&h.service, GUILD, user, form)
            .await
            .unwrap();
        for input in [
            DraftInput::UserType(LoginUserType::Guest),
            DraftInput::SourceApp(SourceApp::Bot),
            DraftInput::Next,
            DraftInput::Scopes(vec!["guests".into()]),
            DraftInput::Next,
        ] {
            h.service.advance_draft(&d.id, user, input).await.unwrap();
        }
        h.service.submit_draft(&d.id, user, None).await.unwrap().app
    };
    let owner = Actor::member(UserId(alice().id));
    for _ in 0..12 {
        h.service.finish(&guild_app, owner, None).await.unwrap();
    }
    let i = h
        .fake
        .slash_command(
            &alice(),
            "app",
            Some("history"),
            vec![("app", json!(guild_app.id.to_string()))],
        )
        .await;
    let first = h.fake.response(&i).await;
    let page1 = first["data"]["embeds"][0]["description"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(page1.lines().count(), 10);
    assert!(
        page1.lines().all(|l| l.contains("Finished")),
        "newest first: {page1}"
    );
    let message = h.fake.message_of(&i).unwrap();
    let (kind, older) = press(&h.fake, &alice(), &message, "page").await;
    assert_eq!(kind, 7);
    let page2 = older["embeds"][0]["description"].as_str().unwrap();
    assert!(
        page2.contains("Submitted") && page2.contains("Credentials issued"),
        "{page2}"
    );
    h.close().await;
}

async fn a_failed_post_or_delivery_is_retried_from_the_database(backend: Backend) {
    let h = with_approvals(backend, 1).await;
    // The approvals channel fails once: the requester still hears it is waiting,
    // and the request is posted by the worker soon after.
    let path = format!("/channels/{APPROVALS}/messages");
    h.fake.fail(
        "POST",
        &path,
        500,
        json!({ "message": "Internal Server Error", "code": 0 }),
        1,
    );
    let waiting = submit_request(&h.fake, &alice(), "Posted Later").await;
    assert!(
        text(&waiting).contains("waits for 1 approval"),
        "{waiting:#}"
    );
    h.fake
        .wait_until("the request is posted by the worker", |f| {
            !f.channel_messages(APPROVALS).is_empty()
        })
        .await;

    // Delivery fails entirely on approval (no DM, no Reveal post): the approval
    // stands, and the worker delivers the credentials by DM later.
    let request = request_message(&h.fake);
    h.fake.fail(
        "POST",
        "/users/@me/channels",
        500,
        json!({ "message": "boom", "code": 0 }),
        1,
    );
    let origin = format!("/channels/{}/messages", FakeDiscord::CHANNEL_ID);
    h.fake.fail(
        "POST",
        &origin,
        500,
        json!({ "message": "boom", "code": 0 }),
        1,
    );
    let (kind, approved) = press(&h.fake, &bob(), &request, "approve").await;
    assert_eq!(kind, 7);
    assert!(embed_text(&approved).contains("Approved by"));
    let dm = dm_with_credentials(&h.fake, alice().id).await;
    assert!(token(&text(&dm), "kgs_").is_some());
    h.close().await;
}

async fn denying_your_own_request_says_why(backend: Backend) {
    let h = with_approvals(backend, 1).await;
    submit_request(&h.fake, &alice(), "Self Serve").await;
    let request = request_message(&h.fake);
    // The requester holds the approver role, but it is their own request.
    let (kind, refused) = press(
        &h.fake,
        &alice().with_roles(&[APPROVER_ROLE]),
        &request,
        "deny",
    )
    .await;
    assert_eq!(kind, 4);
    let said = refused["content"].as_str().unwrap();
    assert!(said.contains("your own request"), "{said}");
    assert!(!said.contains("Something went wrong"), "{said}");
    assert_eq!(refused["flags"].as_u64().unwrap() & EPHEMERAL, EPHEMERAL);
    h.close().await;
}

/// A database from before 0002_approval_delivery: its approved requests got
/// their credentials at approval, the old way. After the upgrade the bot must
/// not DM those requesters again (an empty "credentials follow" note), while
/// a request approved since, not delivered yet, still gets its credentials.
async fn an_upgrade_from_0001_sends_old_requesters_nothing(backend: Backend) {
    use keygate::domain::credentials::ApplicationId;
    let db = support::TestDb::at_version(backend, 1).await;
    let old = ApplicationId::generate();
    let decided = chrono::Utc::now().timestamp_millis() - 86_400_000;
    db.execute_sql(&support::old_request_rows(
        old.as_str(),
        "approved",
        decided,
    ))
    .await;
    db.execute_sql(&format!(
        "INSERT INTO app_secrets (app_id, secret_hash, secret_prefix, created_at) \
         VALUES ('{old}', '{}', 'kgs_Old', {decided})",
        "0".repeat(64)
    ))
    .await;
    db.store.migrate().await.unwrap();

    // Approved after the upgrade, before the bot ran: the worker delivers it.
    db.clock.set(chrono::Utc::now());
    let settings = GuildSettings {
        approvals_required: 1,
        ..GuildSettings::defaults(GUILD)
    };
    let svc = &db.service;
    svc.save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();
    let new = support::submit(svc, UserId(bob().id), "Approved Since")
        .await
        .app;
    svc.approve(GUILD, &new.id, Actor::approver(UserId(alice().id)))
        .await
        .unwrap();

    let h = Harness::start_on(db, false).await;
    // Oldest first: once the newer one is delivered, the worker has passed the old one.
    dm_with_credentials(&h.fake, bob().id).await;
    assert_eq!(
        h.fake.dm_messages(alice().id),
        Vec::<Value>::new(),
        "the old requester is told nothing"
    );
    let request = h.service.approval_request(&old).await.unwrap().unwrap();
    assert_eq!(
        request.status,
        keygate::domain::approval::RequestStatus::Approved
    );
    h.close().await;
}

/// What members type reaches Discord as text: no masked link, no bold, in the
/// approvals channel, the denial the requester reads, and the audit channel.
async fn typed_markdown_reaches_discord_escaped(backend: Backend) {
    let h = with_approvals(backend, 1).await;
    submit_described(
        &h.fake,
        &alice(),
        "Spa __Mobile__",
        "[Approve](https://evil.example) **bold**",
    )
    .await;
    let request = request_message(&h.fake);
    let embed = &request["embeds"][0];
    assert_eq!(embed["title"], r"Application request: Spa \_\_Mobile\_\_");
    let description = embed["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "Description")
        .expect("a Description field");
    assert_eq!(
        description["value"],
        r"\[Approve\](https://evil.example) \*\*bold\*\*"
    );
    let i = h
        .fake
        .slash_command(&alice(), "app", Some("list"), vec![])
        .await;
    let listed = h.fake.response(&i).await;
    let listed = listed["data"]["embeds"][0]["description"].as_str().unwrap();
    assert!(listed.starts_with(r"**Spa \_\_Mobile\_\_** — "), "{listed}");

    let i = h
        .fake
        .press_button(&bob(), &request, &component(&request, "deny"))
        .await;
    let modal = h.fake.response(&i).await;
    let modal_id = modal["data"]["custom_id"].as_str().unwrap().to_owned();
    let reason = "||see [the form](https://evil.example)||";
    let escaped = r"\|\|see \[the form\](https://evil.example)\|\|";
    let i = h
        .fake
        .submit_modal(&bob(), &modal_id, &[("reason", reason)], Some(&request))
        .await;
    let denied = shown(&h.fake, &i, 7).await;
    let state = denied["embeds"][0]["description"].as_str().unwrap();
    assert!(state.ends_with(escaped), "{state}");
    h.fake
        .wait_until("the requester is told, escaped", |f| {
            f.dm_messages(alice().id)
                .iter()
                .any(|m| text(m).ends_with(escaped))
        })
        .await;
    h.fake
        .wait_until("the audit channel names the app, escaped", |f| {
            f.channel_messages(AUDIT).iter().any(|m| {
                m["embeds"][0]["fields"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|f| {
                        f["name"] == "Application"
                            && f["value"]
                                .as_str()
                                .is_some_and(|v| v.starts_with(r"Spa \_\_Mobile\_\_ ("))
                    })
            })
        })
        .await;
    // Nothing the bot sent anywhere holds the typed link unescaped.
    for r in h.fake.requests() {
        let body = r.body.to_string();
        assert!(!body.contains("[Approve](https"), "{} {body}", r.path);
        assert!(!body.contains("**bold**"), "{} {body}", r.path);
    }
    h.close().await;
}

async fn setup_warns_when_reminders_could_not_ping_the_approvers(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    h.fake.add_role(APPROVER_ROLE, "approvers", 0);
    // The fake's roles are not mentionable, and the bot lacks Mention Everyone.
    let saved = set_approver_role(&h.fake).await;
    assert!(
        saved.contains("Settings saved") && saved.contains("Mention Everyone"),
        "{saved}"
    );
    // View Channel, Send Messages, Embed Links and Mention Everyone.
    let bits = (1 << 10) | (1 << 11) | (1 << 14) | (1 << 17);
    h.fake
        .add_role(FakeDiscord::BOT_ROLE_ID, FakeDiscord::BOT_NAME, bits);
    let saved = set_approver_role(&h.fake).await;
    assert!(
        saved.contains("Settings saved") && !saved.contains("Mention Everyone"),
        "{saved}"
    );
    h.close().await;
}

/// `/keygate setup approver_role:…` by Alice; the reply's text.
async fn set_approver_role(fake: &FakeDiscord) -> String {
    let i = fake
        .slash_command(
            &alice(),
            "keygate",
            Some("setup"),
            vec![("approver_role", json!(APPROVER_ROLE.to_string()))],
        )
        .await;
    text(&fake.followups(&i, 1).await.remove(0))
}
