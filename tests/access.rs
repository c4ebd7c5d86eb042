//! Who may see and do what, end to end on both stores: autocomplete, paging, withdraw, settings, rights re-checked.

mod support;

use keygate::domain::ids::{ChannelId, GuildId, RoleId, UserId};
use keygate::domain::settings::GuildSettings;
use keygate::service::Actor;
use keygate::store::Backend;
use serde_json::{Value, json};
use support::bot::{Harness, alice, choice, component, shown, text};
use support::fake_discord::{FakeDiscord, TestUser};
use support::flows::to_review;

end_to_end_on_both_stores!(
    autocomplete_offers_nothing_to_a_member_who_may_see_nothing,
    history_pages_follow_the_same_rule,
    withdraw_says_the_same_for_not_yours_and_no_such_app,
    settings_are_for_managers_and_can_be_cleared,
    submit_and_start_over_recheck_the_right_to_create,
);

const GUILD: GuildId = GuildId(FakeDiscord::GUILD_ID);

/// A member with no rights at all: neither creator nor approver.
fn outsider() -> TestUser {
    TestUser::member(2_000_000_000_000_077, "mallory")
}

/// An app of Alice's, made through the service the bot uses.
async fn app_of_alice(h: &Harness, name: &str) -> String {
    support::submit(&h.service, support::ALICE, name)
        .await
        .app
        .id
        .to_string()
}

/// What the member reads: the reply, or after a deferral (5) its follow-up.
async fn reply_text(h: &Harness, i: &support::fake_discord::Interaction) -> String {
    let r = h.fake.response(i).await;
    match r["type"].as_u64() {
        Some(4) => r["data"]["content"].as_str().unwrap_or("").to_owned(),
        Some(5) => text(&h.fake.followups(i, 1).await.remove(0)),
        _ => h.fake.message_of(i).map(|m| text(&m)).unwrap_or_default(),
    }
}

async fn autocomplete_offers_nothing_to_a_member_who_may_see_nothing(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    app_of_alice(&h, "Secret Project").await;
    for sub in ["show", "history", "withdraw", "rotate", "revoke"] {
        let i = h
            .fake
            .autocomplete(&alice(), "app", Some(sub), "app", "secret")
            .await;
        let offered = h.fake.response(&i).await;
        assert_eq!(
            offered["data"]["choices"].as_array().map(Vec::len),
            Some(1),
            "{sub}: a creator sees it: {offered:#}"
        );
        let i = h
            .fake
            .autocomplete(&outsider(), "app", Some(sub), "app", "secret")
            .await;
        let offered = h.fake.response(&i).await;
        assert_eq!(
            offered["data"]["choices"],
            json!([]),
            "{sub}: an outsider is offered nothing"
        );
    }
    h.close().await;
}

async fn history_pages_follow_the_same_rule(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let app = app_of_alice(&h, "Paged").await;
    let i = h
        .fake
        .slash_command(&alice(), "app", Some("history"), vec![("app", json!(app))])
        .await;
    h.fake.response(&i).await;
    let page = h.fake.message_of(&i).expect("the history");
    // A page button pressed by someone who may not see the app.
    let forged: Value = json!({
        "id": page["id"],
        "channel_id": page["channel_id"],
        "content": "",
        "components": [{"type": 1, "components": [{
            "type": 2, "style": 2, "label": "Older",
            "custom_id": format!("kg:history:1_{app}:page"),
        }]}],
        "flags": 64,
    });
    let merged = {
        let mut m = page.clone();
        m["components"] = forged["components"].clone();
        m
    };
    let p = h
        .fake
        .press_button(&outsider(), &merged, &component(&merged, "page"))
        .await;
    let said = reply_text(&h, &p).await;
    assert!(
        said.contains("only application creators and approvers"),
        "{said}"
    );
    h.close().await;
}

async fn withdraw_says_the_same_for_not_yours_and_no_such_app(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let approvals = 4_000_000_000_000_002;
    h.fake.add_channel(approvals, "approvals");
    let settings = GuildSettings {
        approvals_required: 1,
        approvals_channel: Some(ChannelId(approvals)),
        ..GuildSettings::defaults(GUILD)
    };
    h.service
        .save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();
    app_of_alice(&h, "Alices Request").await;
    let bob = TestUser::admin(2_000_000_000_000_002, "bob");
    let answer = |name: &'static str| {
        let (h, bob) = (&h, bob.clone());
        async move {
            let i = h
                .fake
                .slash_command(&bob, "app", Some("withdraw"), vec![("app", json!(name))])
                .await;
            reply_text(h, &i).await
        }
    };
    let not_yours = answer("Alices Request").await;
    let no_such = answer("Alices Requesd").await;
    assert!(not_yours.contains("no application named"), "{not_yours}");
    assert_eq!(
        not_yours.replace("Alices Request", "X"),
        no_such.replace("Alices Requesd", "X"),
        "the two answers differ only by the name typed"
    );
    h.close().await;
}

async fn settings_are_for_managers_and_can_be_cleared(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let i = h
        .fake
        .slash_command(&outsider(), "keygate", Some("settings"), vec![])
        .await;
    let refused = reply_text(&h, &i).await;
    assert!(refused.contains("Manage Server"), "{refused}");

    let settings = GuildSettings {
        approver_role: Some(RoleId(5_000_000_000_000_001)),
        ..GuildSettings::defaults(GUILD)
    };
    h.service
        .save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();
    let clear = choice(&h.fake, "setup", "clear", "approver_role");
    let i = h
        .fake
        .slash_command(&alice(), "keygate", Some("setup"), vec![("clear", clear)])
        .await;
    let saved = reply_text(&h, &i).await;
    assert!(saved.contains("Settings saved"), "{saved}");
    assert_eq!(h.service.settings(GUILD).await.unwrap().approver_role, None);
    let mut tx = h.db.store.read().await.unwrap();
    let events = tx.audit_events(GUILD, None, 10).await.unwrap();
    tx.rollback().await.unwrap();
    assert!(
        events
            .iter()
            .any(|e| e.summary.contains("cleared the approver role")),
        "audited"
    );
    h.close().await;
}

async fn submit_and_start_over_recheck_the_right_to_create(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let review = to_review(&h.fake, &alice(), "Demoted").await;
    // Alice loses Manage Server before she submits.
    let demoted = TestUser::member(alice().id, "alice");
    let i = h
        .fake
        .press_button(&demoted, &review, &component(&review, "submit"))
        .await;
    let refused = reply_text(&h, &i).await;
    assert!(refused.contains("may no longer register"), "{refused}");
    assert!(
        h.service.list_apps(GUILD).await.unwrap().is_empty(),
        "nothing was submitted"
    );
    // Start over is refused the same way.
    let i = h
        .fake
        .slash_command(&alice(), "app", Some("create"), vec![])
        .await;
    let resume = shown(&h.fake, &i, 4).await;
    let i = h
        .fake
        .press_button(&demoted, &resume, &component(&resume, "restart"))
        .await;
    let refused = reply_text(&h, &i).await;
    assert!(refused.contains("may no longer register"), "{refused}");
    h.close().await;
}
