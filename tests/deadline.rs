//! Discord's 3-second deadline on both stores: with every REST call 1.5 s late, each interaction must answer first.

mod support;

use keygate::domain::ids::GuildId;
use keygate::store::Backend;
use serde_json::json;
use std::time::Duration;
use support::bot::{Harness, alice, bob, choice, component, generate_key_in_dm, text, token};
use support::fake_discord::FakeDiscord;
use support::flows::to_review;

end_to_end_on_both_stores!(every_interaction_answers_first_when_discord_is_slow,);

const GUILD: GuildId = GuildId(FakeDiscord::GUILD_ID);
const APPROVALS: u64 = 4_000_000_000_000_002;
const AUDIT: u64 = 4_000_000_000_000_003;

/// The fake refuses a callback later than 3 s after its interaction, as
/// Discord does; at 1.5 s a call, a handler that makes any other REST call
/// before its callback misses it, and its flow stops there.
async fn every_interaction_answers_first_when_discord_is_slow(backend: Backend) {
    // Delivery takes several slow calls: the approvals worker must not take
    // over a request or an approval still being handled.
    let h = Harness::start_with_stall_grace(backend, false, chrono::TimeDelta::seconds(30)).await;
    h.fake.add_channel(APPROVALS, "approvals");
    h.fake.add_channel(AUDIT, "audit");
    h.fake.set_latency(Some(Duration::from_millis(1500)));

    // Setup checks both channels over REST: after its acknowledgement.
    let i = h
        .fake
        .slash_command(
            &alice(),
            "keygate",
            Some("setup"),
            vec![
                ("approvals_channel", json!(APPROVALS.to_string())),
                ("audit_channel", json!(AUDIT.to_string())),
                ("approvals_required", json!(1)),
            ],
        )
        .await;
    assert_eq!(h.fake.response(&i).await["type"], 5);
    let saved = h.fake.followups(&i, 1).await.remove(0);
    assert!(text(&saved).contains("Settings saved"), "{saved:#}");
    assert_eq!(
        h.service.settings(GUILD).await.unwrap().approvals_required,
        1
    );

    // The wizard, then Submit, which posts to the approvals channel after
    // its answer.
    let review = to_review(&h.fake, &alice(), "Slow Spa").await;
    let i = h
        .fake
        .press_button(&alice(), &review, &component(&review, "submit"))
        .await;
    assert_eq!(h.fake.response(&i).await["type"], 6);
    h.fake
        .wait_until("the request is posted", |f| {
            !f.channel_messages(APPROVALS).is_empty()
        })
        .await;
    let request = h.fake.channel_messages(APPROVALS).pop().unwrap();

    // Approval, then delivery by DM.
    let a = h
        .fake
        .press_button(&bob(), &request, &component(&request, "approve"))
        .await;
    assert_eq!(h.fake.response(&a).await["type"], 6);
    let user = alice().id;
    h.fake
        .wait_until("the credentials by DM", |f| {
            f.dm_messages(user)
                .iter()
                .any(|m| text(m).contains("Secret: `kgs_"))
        })
        .await;
    let dm = h
        .fake
        .dm_messages(user)
        .into_iter()
        .find(|m| text(m).contains("Secret: `kgs_"))
        .unwrap();
    let (key_dm, key) = generate_key_in_dm(&h.fake, &alice(), &dm).await;
    let f = h
        .fake
        .press_button_in_dm(&alice(), &key_dm, &component(&key_dm, "finish"))
        .await;
    assert_eq!(h.fake.response(&f).await["type"], 6);

    // Rotation: the command, then Confirm.
    let app = token(&text(&dm), "app_").unwrap();
    let i = h
        .fake
        .slash_command(
            &bob(),
            "app",
            Some("rotate"),
            vec![
                ("app", json!(app)),
                ("grace", choice(&h.fake, "rotate", "grace", "1h")),
            ],
        )
        .await;
    assert_eq!(h.fake.response(&i).await["type"], 5);
    let confirmation = h.fake.followups(&i, 1).await.remove(0);
    let c = h
        .fake
        .press_button(&bob(), &confirmation, &component(&confirmation, "confirm"))
        .await;
    assert_eq!(h.fake.response(&c).await["type"], 6);
    h.fake
        .wait_until("the new key by DM", |f| {
            f.dm_messages(user)
                .iter()
                .any(|m| text(m).contains("New API key"))
        })
        .await;
    assert_eq!(
        support::verify(&h.service, &key).await,
        keygate::domain::verification::VerifyCode::Valid,
        "the old key is in its grace"
    );
    h.fake.set_latency(None);
    h.close().await;
}
