//! End to end on both stores: the real bot against a fake Discord, as a member would use it.

mod support;

use keygate::domain::ids::{GuildId, UserId};
use keygate::domain::settings::GuildSettings;
use keygate::domain::verification::{Expectations, VerifyCode};
use keygate::domain::wizard::SavedDraft;
use keygate::service::{Actor, DraftStart, ServiceError};
use keygate::store::Backend;
use serde_json::{Value, json};
use support::bot::{
    Harness, alice, bob, component, generate_key_in_dm, selected, shown, text, token,
    wait_until_no_dm_holds,
};
use support::fake_discord::{FakeDiscord, Interaction, TestUser};
use support::flows::{
    form_fields, open_wizard, step2_to_review, submit_and_get_dm, submit_form, to_review,
};
use support::verify;

end_to_end_on_both_stores!(
    whole_wizard_to_the_key_then_finish_redacts,
    a_submit_whose_answer_fails_still_delivers_the_credentials,
    invalid_form_lists_every_problem_and_keeps_the_input,
    back_and_next_keep_selections_and_cancel_deletes_the_draft,
    a_restarted_bot_continues_the_wizard,
    double_and_concurrent_generate_presses_make_one_key,
    closed_dms_fall_back_to_an_ephemeral_reply,
    another_user_cannot_drive_the_wizard,
    short_dm_lifetime_redacts_also_across_a_restart,
    a_key_whose_message_the_bot_never_learned_is_still_redacted,
    a_finish_whose_answer_fails_still_redacts,
    user_text_never_pings,
    list_show_and_autocomplete,
    only_creators_may_start_the_wizard,
    a_wizard_key_verifies_over_http_for_its_app_only,
    create_answers_with_the_form_and_stores_the_draft_on_its_submission,
    an_offered_form_is_stored_for_its_member_only,
    start_over_replaces_the_draft_only_when_its_form_is_submitted,
);

const GUILD: GuildId = GuildId(FakeDiscord::GUILD_ID);
const EPHEMERAL: u64 = 1 << 6;

/// Every log line of this test binary, at trace level (the bot's own cap
/// on chatty crates is what keeps their payloads out), to check for secrets.
fn logs() -> keygate::telemetry::LogBuffer {
    support::captured_logs("trace")
}

/// The whole wizard, then Generate API Key: the DM showing the key, the
/// Application ID, the Secret and the key.
async fn wizard_to_key(
    h: &Harness,
    user: &TestUser,
    name: &str,
) -> (Value, String, String, String) {
    let review = to_review(&h.fake, user, name).await;
    let (dm, app_id, secret) = submit_and_get_dm(h, user, &review).await;
    let (key_dm, key) = generate_key_in_dm(&h.fake, user, &dm).await;
    (key_dm, app_id, secret, key)
}

/// Every body the bot sent to the guild's channels (not DMs, not ephemeral).
fn guild_channel_bodies(fake: &FakeDiscord) -> Vec<String> {
    let dm_channels: Vec<String> = [alice().id, bob().id]
        .iter()
        .filter_map(|u| fake.dm_channel_of(*u))
        .map(|c| format!("/channels/{c}/"))
        .collect();
    fake.requests()
        .into_iter()
        .filter(|r| {
            r.path.starts_with("/channels/") && !dm_channels.iter().any(|d| r.path.starts_with(d))
        })
        .map(|r| r.body.to_string())
        .collect()
}

async fn whole_wizard_to_the_key_then_finish_redacts(backend: Backend) {
    let logs = logs();
    let h = Harness::start_with(backend, false).await;
    let commands = h.fake.commands();
    assert_eq!(commands[0]["name"], "app");

    let review = to_review(&h.fake, &alice(), "Spa Mobile").await;
    assert_eq!(review["embeds"][0]["title"], "Review");
    let (dm, app_id, secret) = submit_and_get_dm(&h, &alice(), &review).await;
    assert_eq!(secret.len(), 48);
    assert!(dm["content"].as_str().unwrap().contains("Shown once"));

    let (with_key, key) = generate_key_in_dm(&h.fake, &alice(), &dm).await;
    assert!(
        !text(&with_key).contains(&secret),
        "the key comes in a DM of its own"
    );
    // Once the key is shown, the credentials message keeps only Finish.
    let user = alice().id;
    h.fake
        .wait_until("the Generate button goes", |f| {
            f.dm_messages(user)[0]["components"][0]["components"]
                .as_array()
                .is_some_and(|b| b.len() == 1)
        })
        .await;
    let credentials = h.fake.dm_messages(alice().id).remove(0);
    assert!(
        text(&credentials).contains(&secret),
        "the Secret keeps its own lifetime"
    );
    let verdict = h
        .service
        .verify_key(&key, &Expectations::default())
        .await
        .unwrap();
    let v = &verdict.credential.expect("the delivered key verifies").app;
    assert_eq!(v.id.as_str(), app_id);
    assert_eq!(v.scopes, vec!["appointments", "guests"]);

    let i = h
        .fake
        .press_button_in_dm(&alice(), &with_key, &component(&with_key, "finish"))
        .await;
    let finished = shown(&h.fake, &i, 7).await;
    let left = text(&finished);
    assert!(left.contains("removed"), "{left}");
    assert!(!left.contains(&secret) && !left.contains(&key), "{left}");
    assert_eq!(finished["components"], json!([]));
    // Finish removes the Secret's DM too, at once.
    let user = alice().id;
    h.fake
        .wait_until("every delivered credential is removed", |f| {
            f.dm_messages(user)
                .iter()
                .all(|m| !text(m).contains(&secret) && !text(m).contains(&key))
        })
        .await;

    // The key's message was learnt from its callback: its redaction is
    // keyed by it, and Finish marked it done.
    let rows =
        h.db.text_pairs(
            "SELECT CAST(message_id AS TEXT), CAST(interaction_id AS TEXT) FROM dm_redactions \
             WHERE done_at IS NOT NULL",
        )
        .await;
    let key_message = with_key["id"].as_str().unwrap().to_owned();
    assert!(rows.contains(&(key_message, None)), "{rows:?}");
    // Secrets went to the requester only: never a guild channel, the database or a log line.
    for body in guild_channel_bodies(&h.fake) {
        assert!(!body.contains(&secret) && !body.contains(&key), "{body}");
    }
    for (table, column, value) in h.db.all_text().await {
        assert!(
            !value.contains(&secret) && !value.contains(&key),
            "{table}.{column}"
        );
    }
    let logged = logs.text();
    assert!(
        logged.contains("INTERACTION_CREATE") || logged.len() > 1000,
        "the capture sees the bot's logs"
    );
    assert!(logged.contains("TRACE"), "the capture runs at trace level");
    for line in logged.lines() {
        let leaked = [&secret[..], &key[..], &secret[4..20], &key[3..19]]
            .iter()
            .any(|s| line.contains(s));
        assert!(
            !leaked,
            "a secret, or part of one, reached a log line: {}",
            line.replace(&secret[4..20], "<SECRET>")
                .replace(&key[3..19], "<KEY>")
        );
    }
    h.close().await;
}

async fn invalid_form_lists_every_problem_and_keeps_the_input(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let modal = open_wizard(&h.fake, &alice()).await;
    let before = h.db.row_counts().await;
    let bad = vec![
        ("name", String::new()),
        ("uri", "javascript:alert(1)".to_owned()),
        ("description", "fine".to_owned()),
        ("login_urls", "http://spa.example.com/cb".to_owned()),
        ("logout_urls", "not a url".to_owned()),
    ];
    let i = submit_form(&h.fake, &alice(), &modal, &bad, None).await;
    let problems = shown(&h.fake, &i, 4).await;
    let text = problems["content"].as_str().unwrap();
    for field in [
        "Name",
        "URI",
        "Post-login redirect URLs",
        "Post-logout redirect URLs",
    ] {
        assert!(
            text.contains(&format!("**{field}**")),
            "{field} missing in {text}"
        );
    }
    assert!(!text.contains("**Description**"));
    assert_eq!(
        h.db.row_counts().await,
        before,
        "a rejected form writes nothing"
    );

    let i = h
        .fake
        .press_button(&alice(), &problems, &component(&problems, "edit"))
        .await;
    let reopened = h.fake.response(&i).await;
    assert_eq!(reopened["type"], 9);
    let values: Vec<(String, String)> = reopened["data"]["components"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            let input = &row["components"][0];
            (
                input["custom_id"].as_str().unwrap().to_owned(),
                input["value"].as_str().unwrap_or("").to_owned(),
            )
        })
        .collect();
    let typed: Vec<(String, String)> = bad
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    assert_eq!(values, typed, "the modal comes back as typed");

    // Fixed, from the problem message: the wizard carries on in the same message.
    let i = submit_form(
        &h.fake,
        &alice(),
        &modal,
        &form_fields("Fixed"),
        Some(&problems),
    )
    .await;
    let step2 = shown(&h.fake, &i, 7).await;
    assert!(step2["content"].as_str().unwrap().contains("Step 2 of 4"));
    h.close().await;
}

async fn back_and_next_keep_selections_and_cancel_deletes_the_draft(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let review = to_review(&h.fake, &alice(), "Roundtrip").await;
    let i = h
        .fake
        .press_button(&alice(), &review, &component(&review, "back"))
        .await;
    let step3 = shown(&h.fake, &i, 7).await;
    // Options come in catalog order.
    assert_eq!(selected(&step3, "scopes"), vec!["guests", "appointments"]);
    let i = h
        .fake
        .press_button(&alice(), &step3, &component(&step3, "back"))
        .await;
    let step2 = shown(&h.fake, &i, 7).await;
    assert_eq!(selected(&step2, "usertype"), vec!["guest"]);
    assert_eq!(selected(&step2, "source"), vec!["external_cma"]);
    // Back from step 2 is the form, pre-filled.
    let i = h
        .fake
        .press_button(&alice(), &step2, &component(&step2, "back"))
        .await;
    let modal = h.fake.response(&i).await;
    assert_eq!(modal["type"], 9);
    assert_eq!(
        modal["data"]["components"][0]["components"][0]["value"],
        "Roundtrip"
    );
    let i = h
        .fake
        .press_button(&alice(), &step2, &component(&step2, "next"))
        .await;
    let step3 = shown(&h.fake, &i, 7).await;
    assert_eq!(selected(&step3, "scopes"), vec!["guests", "appointments"]);

    // View APIs answers on the side and leaves the wizard as it is.
    let i = h
        .fake
        .select(&alice(), &step3, &component(&step3, "apis"), &["guests"])
        .await;
    let apis = shown(&h.fake, &i, 4).await;
    assert!(
        apis["content"].as_str().unwrap().contains("/v1/"),
        "{apis:#}"
    );

    let i = h
        .fake
        .press_button(&alice(), &step3, &component(&step3, "cancel"))
        .await;
    let cancelled = shown(&h.fake, &i, 7).await;
    assert!(cancelled["content"].as_str().unwrap().contains("Cancelled"));
    let counts = h.db.row_counts().await;
    assert!(counts.contains(&("wizard_drafts", 0)), "{counts:?}");
    let i = h
        .fake
        .press_button(&alice(), &step3, &component(&step3, "next"))
        .await;
    let stale = shown(&h.fake, &i, 4).await;
    assert!(
        stale["content"]
            .as_str()
            .unwrap()
            .contains("expired or was closed"),
        "{stale:#}"
    );
    h.close().await;
}

async fn a_restarted_bot_continues_the_wizard(backend: Backend) {
    let mut h = Harness::start_with(backend, false).await;
    let modal = open_wizard(&h.fake, &alice()).await;
    let i = submit_form(&h.fake, &alice(), &modal, &form_fields("Survivor"), None).await;
    let step2 = shown(&h.fake, &i, 4).await;
    let i = h
        .fake
        .select(
            &alice(),
            &step2,
            &component(&step2, "usertype"),
            &["employee"],
        )
        .await;
    let step2 = shown(&h.fake, &i, 7).await;
    let i = h
        .fake
        .select(&alice(), &step2, &component(&step2, "source"), &["bot"])
        .await;
    let step2 = shown(&h.fake, &i, 7).await;

    h.restart().await;
    assert_eq!(h.fake.connections(), 2);
    let i = h
        .fake
        .press_button(&alice(), &step2, &component(&step2, "next"))
        .await;
    let step3 = shown(&h.fake, &i, 7).await;
    assert!(step3["content"].as_str().unwrap().contains("Step 3 of 4"));
    // /app create again offers the open draft back.
    let i = h
        .fake
        .slash_command(&alice(), "app", Some("create"), vec![])
        .await;
    let prompt = shown(&h.fake, &i, 4).await;
    let i = h
        .fake
        .press_button(&alice(), &prompt, &component(&prompt, "resume"))
        .await;
    let resumed = shown(&h.fake, &i, 7).await;
    assert!(resumed["content"].as_str().unwrap().contains("Step 3 of 4"));
    // Start over opens an empty form; its submission drops the draft.
    let i = h
        .fake
        .slash_command(&alice(), "app", Some("create"), vec![])
        .await;
    let prompt = shown(&h.fake, &i, 4).await;
    let i = h
        .fake
        .press_button(&alice(), &prompt, &component(&prompt, "restart"))
        .await;
    let fresh = h.fake.response(&i).await;
    assert_eq!(fresh["type"], 9);
    assert!(
        fresh["data"]["components"][0]["components"][0]["value"].is_null(),
        "{fresh:#}"
    );
    let modal = fresh["data"]["custom_id"].as_str().unwrap();
    let i = submit_form(
        &h.fake,
        &alice(),
        modal,
        &form_fields("Second life"),
        Some(&prompt),
    )
    .await;
    shown(&h.fake, &i, 7).await;
    let i = h
        .fake
        .press_button(&alice(), &step3, &component(&step3, "next"))
        .await;
    let stale = shown(&h.fake, &i, 4).await;
    assert!(
        stale["content"]
            .as_str()
            .unwrap()
            .contains("expired or was closed"),
        "{stale:#}"
    );
    h.close().await;
}

/// The REST calls the bot made from `since` on, as `METHOD path`.
fn calls_since(fake: &FakeDiscord, since: usize) -> Vec<String> {
    fake.requests()[since..]
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect()
}

fn callback_of(i: &support::fake_discord::Interaction) -> String {
    format!("POST /interactions/{}/{}/callback", i.id, i.token)
}

/// The open draft of a member, as `/app create` would find it (a read).
async fn open_draft_of(h: &Harness, user: &TestUser) -> Option<SavedDraft> {
    match h.service.open_draft(GUILD, UserId(user.id)).await.unwrap() {
        DraftStart::New(_) => None,
        DraftStart::Existing(saved) => Some(*saved),
    }
}

/// A modal cannot follow a deferral, so `/app create` answers with it after
/// reads only: the draft is stored when the form is submitted.
async fn create_answers_with_the_form_and_stores_the_draft_on_its_submission(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let since = h.fake.requests().len();
    let i = h
        .fake
        .slash_command(&alice(), "app", Some("create"), vec![])
        .await;
    let r = h.fake.response(&i).await;
    assert_eq!(r["type"], 9, "a modal: {r:#}");
    assert_eq!(
        calls_since(&h.fake, since).first(),
        Some(&callback_of(&i)),
        "the interaction's first REST call is its callback"
    );
    let counts = h.db.row_counts().await;
    assert!(
        counts.contains(&("wizard_drafts", 0)),
        "nothing is stored before the form is submitted: {counts:?}"
    );
    assert_eq!(open_draft_of(&h, &alice()).await, None);

    // The submission stores the draft, and the wizard runs to the end.
    let modal = r["data"]["custom_id"].as_str().unwrap();
    let i = submit_form(&h.fake, &alice(), modal, &form_fields("Late Bloom"), None).await;
    let step2 = shown(&h.fake, &i, 4).await;
    let saved = open_draft_of(&h, &alice()).await.expect("stored now");
    assert_eq!(saved.draft.form.name, "Late Bloom");
    assert_eq!(saved.user_id, UserId(alice().id));
    assert!(
        modal.contains(&saved.id),
        "the form's id is the draft's: {modal}"
    );
    let review = step2_to_review(&h.fake, &alice(), &step2).await;
    let (_, app_id, _) = submit_and_get_dm(&h, &alice(), &review).await;
    let app = h.service.app_by_name(GUILD, "Late Bloom").await.unwrap();
    assert_eq!(app.id.as_str(), app_id);
    let counts = h.db.row_counts().await;
    assert!(counts.contains(&("wizard_drafts", 0)), "{counts:?}");
    h.close().await;
}

/// A form offered to one member stores nothing when another submits it.
async fn an_offered_form_is_stored_for_its_member_only(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let modal = open_wizard(&h.fake, &alice()).await;
    let i = submit_form(&h.fake, &bob(), &modal, &form_fields("Squatter"), None).await;
    let refused = shown(&h.fake, &i, 4).await;
    assert!(text(&refused).contains("not your wizard"), "{refused:#}");
    let counts = h.db.row_counts().await;
    assert!(counts.contains(&("wizard_drafts", 0)), "{counts:?}");
    assert_eq!(open_draft_of(&h, &bob()).await, None);
    let i = submit_form(&h.fake, &alice(), &modal, &form_fields("Mine"), None).await;
    shown(&h.fake, &i, 4).await;
    let saved = open_draft_of(&h, &alice()).await.expect("Alice's draft");
    assert_eq!(saved.draft.form.name, "Mine");
    h.close().await;
}

/// Start over answers with a form too: the old draft is dropped when the new
/// form is submitted, so dismissing the form keeps it.
async fn start_over_replaces_the_draft_only_when_its_form_is_submitted(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let modal = open_wizard(&h.fake, &alice()).await;
    let i = submit_form(&h.fake, &alice(), &modal, &form_fields("Original"), None).await;
    let step2 = shown(&h.fake, &i, 4).await;
    let i = h
        .fake
        .select(&alice(), &step2, &component(&step2, "usertype"), &["guest"])
        .await;
    let step2 = shown(&h.fake, &i, 7).await;
    let original = open_draft_of(&h, &alice()).await.expect("stored");

    let start_over = || async {
        let i = h
            .fake
            .slash_command(&alice(), "app", Some("create"), vec![])
            .await;
        let prompt = shown(&h.fake, &i, 4).await;
        assert!(text(&prompt).contains("Original"), "{prompt:#}");
        let since = h.fake.requests().len();
        let i = h
            .fake
            .press_button(&alice(), &prompt, &component(&prompt, "restart"))
            .await;
        let r = h.fake.response(&i).await;
        assert_eq!(r["type"], 9, "a modal: {r:#}");
        assert_eq!(calls_since(&h.fake, since).first(), Some(&callback_of(&i)));
        (prompt, r["data"]["custom_id"].as_str().unwrap().to_owned())
    };

    // Dismissed (the member closes the form): the draft is as it was.
    let (_, dismissed) = start_over().await;
    assert_eq!(
        open_draft_of(&h, &alice()).await.as_ref(),
        Some(&original),
        "Start over wrote before its form"
    );
    let i = h
        .fake
        .select(&alice(), &step2, &component(&step2, "source"), &["bot"])
        .await;
    let step2 = shown(&h.fake, &i, 7).await;
    assert_eq!(selected(&step2, "usertype"), vec!["guest"]);

    // Submitted: the new draft takes the old one's place, in one step.
    let (prompt, modal) = start_over().await;
    assert_ne!(modal, dismissed, "each form offers a draft of its own");
    let i = submit_form(
        &h.fake,
        &alice(),
        &modal,
        &form_fields("Replacement"),
        Some(&prompt),
    )
    .await;
    let fresh = shown(&h.fake, &i, 7).await;
    assert!(text(&fresh).contains("Step 2 of 4"), "{fresh:#}");
    assert!(selected(&fresh, "usertype").is_empty(), "{fresh:#}");
    let replacement = open_draft_of(&h, &alice()).await.expect("the new draft");
    assert_ne!(replacement.id, original.id);
    assert_eq!(replacement.draft.form.name, "Replacement");
    let counts = h.db.row_counts().await;
    assert!(counts.contains(&("wizard_drafts", 1)), "{counts:?}");
    let i = h
        .fake
        .press_button(&alice(), &step2, &component(&step2, "next"))
        .await;
    assert!(
        text(&shown(&h.fake, &i, 4).await).contains("expired or was closed"),
        "the old draft is gone"
    );
    // The dismissed form, were it submitted now, would find another draft
    // than the one it replaces: refused, and the replacement stays.
    let i = submit_form(&h.fake, &alice(), &dismissed, &form_fields("Stale"), None).await;
    let refused = shown(&h.fake, &i, 4).await;
    assert!(
        text(&refused).contains("already have an unfinished application"),
        "{refused:#}"
    );
    assert_eq!(open_draft_of(&h, &alice()).await, Some(replacement));
    h.close().await;
}

async fn double_and_concurrent_generate_presses_make_one_key(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let review = to_review(&h.fake, &alice(), "Racer").await;
    let (dm, _, _) = submit_and_get_dm(&h, &alice(), &review).await;
    let genkey = component(&dm, "genkey");
    let user = alice();
    let (a, b) = tokio::join!(
        h.fake.press_button_in_dm(&user, &dm, &genkey),
        h.fake.press_button_in_dm(&user, &dm, &genkey)
    );
    let later = h.fake.press_button_in_dm(&user, &dm, &genkey).await;
    // Each press's answer (its callback, or the edit after its deferral):
    // one carries the key, the others refuse, and a refusal given as the
    // callback is seen by the presser only.
    let presses = [&a, &b, &later];
    h.fake
        .wait_until("every press answered with content", |f| {
            presses.iter().all(|i| {
                f.message_of(i)
                    .is_some_and(|m| m["flags"].as_u64().unwrap_or(0) & (1 << 7) == 0)
            })
        })
        .await;
    let (mut keys, mut refusals) = (0, 0);
    for i in presses {
        let answer = h.fake.message_of(i).unwrap();
        let r = h.fake.response(i).await;
        if text(&answer).contains("API key: `kg_") {
            keys += 1;
        } else {
            assert!(text(&answer).contains("already generated"), "{answer:#}");
            if r["type"] == 4 {
                assert_eq!(r["data"]["flags"].as_u64().unwrap() & EPHEMERAL, EPHEMERAL);
            }
            refusals += 1;
        }
    }
    assert_eq!((keys, refusals), (1, 2));
    let counts = h.db.row_counts().await;
    assert!(counts.contains(&("api_keys", 1)), "{counts:?}");
    // Pressed in the DM: the key went to that channel, not found again.
    let opened = |i: &Interaction| {
        h.fake
            .calls_after_dispatch(i)
            .iter()
            .any(|c| c.contains("/users/@me/channels"))
    };
    assert!(!opened(&a) && !opened(&b), "no DM channel was looked up");
    // One callback each: a refusal after a deferral is a follow-up, with
    // no second callback, which Discord would refuse (40060), tried first.
    for i in presses {
        let callback = format!("POST /interactions/{}/{}/callback", i.id, i.token);
        let callbacks = h
            .fake
            .calls_after_dispatch(i)
            .iter()
            .filter(|c| **c == callback)
            .count();
        assert_eq!(callbacks, 1, "{:#?}", h.fake.calls_after_dispatch(i));
    }
    h.close().await;
}

async fn closed_dms_fall_back_to_an_ephemeral_reply(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    h.fake.close_dms_of(alice().id);
    let review = to_review(&h.fake, &alice(), "No DMs").await;
    let i = h
        .fake
        .press_button(&alice(), &review, &component(&review, "submit"))
        .await;
    shown(&h.fake, &i, 7).await;
    h.fake
        .wait_until("the wizard says the DMs are closed", |f| {
            f.message_of(&i)
                .is_some_and(|m| text(&m).contains("DMs are closed"))
        })
        .await;
    let private = h.fake.followups(&i, 1).await.remove(0);
    assert_eq!(private["flags"].as_u64().unwrap() & EPHEMERAL, EPHEMERAL);
    let secret = token(private["content"].as_str().unwrap(), "kgs_").expect("the secret");
    assert!(h.fake.dm_messages(alice().id).is_empty());

    let g = h
        .fake
        .press_button(&alice(), &private, &component(&private, "genkey"))
        .await;
    assert_eq!(h.fake.response(&g).await["type"], 6);
    let with_key = h.fake.followups(&g, 1).await.remove(0);
    assert_eq!(with_key["flags"].as_u64().unwrap() & EPHEMERAL, EPHEMERAL);
    let key = token(with_key["content"].as_str().unwrap(), "kg_").expect("the key");
    assert!(
        text(&with_key).contains("cannot remove it after 15 minutes"),
        "says truthfully what happens to it: {with_key:#}"
    );
    assert_eq!(verify(&h.service, &key).await, VerifyCode::Valid);
    let f = h
        .fake
        .press_button(&alice(), &with_key, &component(&with_key, "finish"))
        .await;
    let finished = shown(&h.fake, &f, 7).await;
    assert!(!finished["content"].as_str().unwrap().contains(&secret));
    for body in guild_channel_bodies(&h.fake) {
        assert!(!body.contains(&secret) && !body.contains(&key), "{body}");
    }
    h.close().await;
}

async fn another_user_cannot_drive_the_wizard(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let modal = open_wizard(&h.fake, &alice()).await;
    let i = submit_form(&h.fake, &alice(), &modal, &form_fields("Mine"), None).await;
    let step2 = shown(&h.fake, &i, 4).await;
    for (action, value) in [
        ("usertype", Some("guest")),
        ("next", None),
        ("cancel", None),
        ("back", None),
    ] {
        let id = component(&step2, action);
        let i = match value {
            Some(v) => h.fake.select(&bob(), &step2, &id, &[v]).await,
            None => h.fake.press_button(&bob(), &step2, &id).await,
        };
        let refused = shown(&h.fake, &i, 4).await;
        assert!(
            refused["content"]
                .as_str()
                .unwrap()
                .contains("not your wizard"),
            "{action}: {refused:#}"
        );
        assert_eq!(refused["flags"].as_u64().unwrap() & EPHEMERAL, EPHEMERAL);
    }
    let i = submit_form(&h.fake, &bob(), &modal, &form_fields("Hijack"), None).await;
    assert!(
        shown(&h.fake, &i, 4).await["content"]
            .as_str()
            .unwrap()
            .contains("not your wizard")
    );
    // Alice's draft is untouched.
    let i = h
        .fake
        .press_button(&alice(), &step2, &component(&step2, "next"))
        .await;
    let refused = shown(&h.fake, &i, 4).await;
    assert!(
        refused["content"]
            .as_str()
            .unwrap()
            .contains("Login User Type"),
        "nothing was chosen: {refused:#}"
    );
    h.close().await;
}

/// DMs that carry a secret are redacted a second after they are sent.
async fn dm_lifetime_of_a_second(h: &Harness) {
    let settings = GuildSettings {
        dm_lifetime: chrono::TimeDelta::seconds(1),
        ..GuildSettings::defaults(GUILD)
    };
    h.service
        .save_settings(
            Actor::member(keygate::domain::ids::UserId(alice().id)),
            &settings,
        )
        .await
        .unwrap();
}

async fn short_dm_lifetime_redacts_also_across_a_restart(backend: Backend) {
    let mut h = Harness::start_with(backend, false).await;
    dm_lifetime_of_a_second(&h).await;
    let review = to_review(&h.fake, &alice(), "Short Lived").await;
    let (dm, _, secret) = submit_and_get_dm(&h, &alice(), &review).await;
    let user = alice().id;
    wait_until_no_dm_holds(&h.fake, user, "the DM is redacted", &secret).await;

    // Generate pressed on the DM as it was before the redaction: the key is
    // shown, the Secret does not come back, and the key gets its own lifetime.
    let redacted = h.fake.dm_messages(user).remove(0);
    assert!(
        component(&redacted, "genkey").contains(":genkey"),
        "Generate stays: no key yet"
    );
    let (_, key) = generate_key_in_dm(&h.fake, &alice(), &dm).await;
    assert!(
        h.fake
            .dm_messages(user)
            .iter()
            .all(|m| !text(m).contains(&secret)),
        "the Secret came back"
    );
    wait_until_no_dm_holds(&h.fake, user, "the key is redacted too", &key).await;

    // The bot is down when the second DM falls due: the next one redacts it at once.
    let review = to_review(&h.fake, &alice(), "Outlives The Bot").await;
    let (_, _, secret) = submit_and_get_dm(&h, &alice(), &review).await;
    h.stop_bot().await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    assert!(
        h.fake
            .dm_messages(user)
            .iter()
            .any(|m| m["content"].as_str().unwrap_or("").contains(&secret)),
        "still there while the bot is down"
    );
    h.restart().await;
    wait_until_no_dm_holds(
        &h.fake,
        user,
        "the overdue DM is redacted after the restart",
        &secret,
    )
    .await;
    h.close().await;
}

/// The key is the press's answer, so the bot learns its message's id from
/// the callback's response. Should it never learn it (here Discord makes
/// the message but its response is lost; a crash would leave the same),
/// the worker still finds the message by its interaction and redacts it
/// when it falls due.
async fn a_key_whose_message_the_bot_never_learned_is_still_redacted(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    dm_lifetime_of_a_second(&h).await;
    let review = to_review(&h.fake, &alice(), "Never Noted").await;
    let (dm, _, _) = submit_and_get_dm(&h, &alice(), &review).await;
    h.fake
        .fail_after_applying("POST", "/callback", 500, server_error(), 1);
    // …and so is the one question the bot asks after a lost answer.
    h.fake
        .fail("GET", "/messages/@original", 500, server_error(), 1);
    let (key_dm, key) = generate_key_in_dm(&h.fake, &alice(), &dm).await;
    let user = alice().id;
    wait_until_no_dm_holds(&h.fake, user, "the key's message is redacted", &key).await;
    let redacted = h
        .fake
        .dm_messages(user)
        .into_iter()
        .find(|m| m["id"] == key_dm["id"])
        .expect("the key's message");
    assert!(text(&redacted).contains("removed"), "{redacted:#}");
    assert!(
        h.fake
            .requests()
            .iter()
            .any(|r| r.method == "GET" && r.query.contains("after=")),
        "the worker looked the answer up"
    );
    // The member saw the key: the worker counted it as shown, so it cannot
    // pass for lost and be issued again in place of the one they hold.
    let shown =
        h.db.text_pairs("SELECT id, CAST(shown_at AS TEXT) FROM api_keys")
            .await;
    assert!(
        shown.len() == 1 && shown[0].1.is_some(),
        "the key counts as shown: {shown:?}"
    );
    h.close().await;
}

/// Discord's body of a 500.
fn server_error() -> Value {
    json!({ "message": "500: Internal Server Error", "code": 0 })
}

/// The next interaction callback gets a 500, and is not carried out.
fn the_next_callback_fails(fake: &FakeDiscord) {
    fake.fail("POST", "/callback", 500, server_error(), 1);
}

/// Finish's own edit is what removes the secrets; when Discord refuses it,
/// the redaction is not marked done but left, due now, to the worker.
async fn a_finish_whose_answer_fails_still_redacts(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let review = to_review(&h.fake, &alice(), "Refused Finish").await;
    let (dm, _, secret) = submit_and_get_dm(&h, &alice(), &review).await;
    the_next_callback_fails(&h.fake);
    h.fake
        .press_button_in_dm(&alice(), &dm, &component(&dm, "finish"))
        .await;
    let user = alice().id;
    wait_until_no_dm_holds(
        &h.fake,
        user,
        "the Secret's DM is redacted all the same",
        &secret,
    )
    .await;
    h.close().await;
}

async fn user_text_never_pings(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let name = "@everyone <@123> <@&456>";
    let review = to_review(&h.fake, &alice(), name).await;
    let (dm, _, _) = submit_and_get_dm(&h, &alice(), &review).await;
    generate_key_in_dm(&h.fake, &alice(), &dm).await;
    let i = h
        .fake
        .slash_command(&alice(), "app", Some("list"), vec![])
        .await;
    h.fake.response(&i).await;
    let echoed: Vec<_> = h
        .fake
        .requests()
        .into_iter()
        .filter(|r| r.body.to_string().contains("@everyone"))
        .collect();
    assert!(
        echoed.len() >= 6,
        "the name is echoed in several messages: {}",
        echoed.len()
    );
    for r in echoed {
        // A callback carries the message in `data`.
        let message = if r.body.get("data").is_some() {
            &r.body["data"]
        } else {
            &r.body
        };
        let allowed = &message["allowed_mentions"];
        assert!(
            allowed.is_object(),
            "{} {} sends no allowed_mentions: {}",
            r.method,
            r.path,
            r.body
        );
        assert_eq!(allowed["parse"], json!([]), "{} {}", r.method, r.path);
        assert!(allowed["users"].as_array().is_none_or(|u| u.is_empty()));
        assert!(allowed["roles"].as_array().is_none_or(|u| u.is_empty()));
    }
    h.close().await;
}

async fn list_show_and_autocomplete(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let (_, app_id, secret, _) = wizard_to_key(&h, &alice(), "Listed App").await;

    let i = h
        .fake
        .slash_command(&bob(), "app", Some("list"), vec![])
        .await;
    let list = h.fake.response(&i).await;
    assert_eq!(
        list["data"]["flags"].as_u64().unwrap() & EPHEMERAL,
        EPHEMERAL
    );
    let text = list["data"]["embeds"][0]["description"].as_str().unwrap();
    for part in [
        "Listed App",
        "External CMA",
        "Mobile Booking",
        "Guest",
        "Active",
        "kg_",
    ] {
        assert!(text.contains(part), "{part} missing in {text}");
    }
    let i = h
        .fake
        .autocomplete(&bob(), "app", Some("show"), "app", "list")
        .await;
    let choices = h.fake.response(&i).await;
    assert_eq!(choices["data"]["choices"][0]["value"], app_id.as_str());

    let i = h
        .fake
        .slash_command(&bob(), "app", Some("show"), vec![("app", json!(app_id))])
        .await;
    let show = h.fake.response(&i).await;
    let embed = show["data"]["embeds"][0].to_string();
    for part in [
        "Listed App",
        "https://spa.example.com/callback",
        "Appointments",
        "Guests",
        &app_id,
    ] {
        assert!(embed.contains(part), "{part} missing in {embed}");
    }
    assert!(!embed.contains(&secret));
    let i = h
        .fake
        .slash_command(
            &bob(),
            "app",
            Some("show"),
            vec![("app", json!("listed app"))],
        )
        .await;
    assert!(
        h.fake.response(&i).await.to_string().contains(&app_id),
        "by name, any case"
    );
    let i = h
        .fake
        .slash_command(&bob(), "app", Some("show"), vec![("app", json!("nope"))])
        .await;
    let missing = h.fake.response(&i).await;
    assert!(
        missing["data"]["content"]
            .as_str()
            .unwrap()
            .contains("no application named"),
        "{missing:#}"
    );
    h.close().await;
}

async fn only_creators_may_start_the_wizard(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let member = TestUser::member(2_000_000_000_000_009, "carol");
    let i = h
        .fake
        .slash_command(&member, "app", Some("create"), vec![])
        .await;
    let refused = h.fake.response(&i).await;
    assert_eq!(refused["type"], 4);
    assert!(
        refused["data"]["content"]
            .as_str()
            .unwrap()
            .contains("Manage Server"),
        "{refused:#}"
    );
    let counts = h.db.row_counts().await;
    assert!(counts.contains(&("wizard_drafts", 0)));

    // With a creator role set, holding it is enough.
    let settings = GuildSettings {
        creator_role: Some(keygate::domain::ids::RoleId(77)),
        ..GuildSettings::defaults(GUILD)
    };
    h.service
        .save_settings(Actor::member(keygate::domain::ids::UserId(1)), &settings)
        .await
        .unwrap();
    let creator = TestUser::member(2_000_000_000_000_010, "dan").with_roles(&[77]);
    let i = h
        .fake
        .slash_command(&creator, "app", Some("create"), vec![])
        .await;
    assert_eq!(h.fake.response(&i).await["type"], 9);
    assert!(matches!(
        h.service.app_by_name(GUILD, "x").await,
        Err(ServiceError::AppNotFound)
    ));
    h.close().await;
}

async fn a_wizard_key_verifies_over_http_for_its_app_only(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let (_, app_id, secret, key) = wizard_to_key(&h, &alice(), "Verified App").await;
    let review = to_review(&h.fake, &bob(), "Another App").await;
    let (_, other_app, _) = submit_and_get_dm(&h, &bob(), &review).await;

    let api = keygate::http::start("127.0.0.1:0".parse().unwrap(), &[], h.service.clone())
        .await
        .unwrap();
    let client = reqwest::Client::new();
    let verify = |body: Value| {
        let request = client
            .post(format!("http://{}/v1/keys/verify", api.addr()))
            .json(&body);
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    };
    let valid = verify(json!({ "key": key, "app_id": app_id })).await;
    assert_eq!(valid["code"], "VALID", "{valid}");
    assert_eq!(valid["app"]["name"], "Verified App");
    assert_eq!(valid["app"]["guild_id"], FakeDiscord::GUILD_ID.to_string());
    assert_eq!(valid["scopes"], json!(["appointments", "guests"]));
    assert!(valid["key"]["expires_at"].as_str().unwrap().ends_with('Z'));
    let wrong = verify(json!({ "key": key, "app_id": other_app })).await;
    assert_eq!(
        wrong["code"], "WRONG_APP",
        "this key works only for its app"
    );
    let scoped = verify(json!({ "key": key, "scopes": ["payroll"] })).await;
    assert_eq!(scoped["code"], "INSUFFICIENT_SCOPE");
    let mut typo = key.clone().into_bytes();
    typo[5] = if typo[5] == b'a' { b'b' } else { b'a' };
    let typo = String::from_utf8(typo).unwrap();
    assert_eq!(verify(json!({ "key": typo })).await["code"], "MALFORMED");
    let auth = client
        .post(format!("http://{}/v1/apps/authenticate", api.addr()))
        .basic_auth(&app_id, Some(&secret))
        .send()
        .await
        .unwrap()
        .json::<Value>()
        .await
        .unwrap();
    assert_eq!(
        auth["code"], "VALID",
        "the delivered ID and Secret authenticate"
    );

    // The use shows in /app show once stamped.
    assert_eq!(h.service.flush_last_used().await.unwrap(), 1);
    let i = h
        .fake
        .slash_command(&alice(), "app", Some("show"), vec![("app", json!(app_id))])
        .await;
    let show = h.fake.response(&i).await;
    let embed = show["data"]["embeds"][0].to_string();
    assert!(embed.contains("last used <t:"), "{embed}");

    let metrics = client
        .get(format!("http://{}/metrics", api.addr()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(r#"keygate_discord_interactions_total{kind="component"}"#),
        "{metrics}"
    );
    api.shutdown().await;
    h.close().await;
}

/// The application is written before Submit's answer: when Discord refuses
/// the answer, the credentials still go out by DM, not lost with the screen.
async fn a_submit_whose_answer_fails_still_delivers_the_credentials(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let review = to_review(&h.fake, &alice(), "Lost Answer").await;
    the_next_callback_fails(&h.fake);
    h.fake
        .press_button(&alice(), &review, &component(&review, "submit"))
        .await;
    let user = alice().id;
    h.fake
        .wait_until("the credentials by DM", |f| {
            f.dm_messages(user)
                .iter()
                .any(|m| text(m).contains("Secret: `kgs_"))
        })
        .await;
    h.close().await;
}
