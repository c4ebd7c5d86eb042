//! Discord's 3-second deadline on both stores: with every REST call 1.5 s late, each interaction must answer first.

mod support;

use keygate::domain::ids::GuildId;
use keygate::store::Backend;
use serde_json::json;
use std::time::Duration;
use support::bot::{Harness, alice, bob, choice, component, shown, text, token};
use support::fake_discord::{FakeDiscord, Interaction};
use support::flows::{form_fields, open_wizard, submit_form, to_review};

end_to_end_on_both_stores!(
    every_interaction_answers_first_when_discord_is_slow,
    the_wizard_forms_answer_first_when_discord_is_slow,
    a_step_whose_write_is_slow_is_deferred_then_shown,
    a_step_the_gateway_delivered_late_is_deferred_at_once,
    issue_again_and_rotate_now_answer_first_when_discord_is_slow,
);

/// A step that writes: with its content in place when the write was quick
/// (7), else a deferral (6); on a busy machine either is right.
const ANSWERED_IN_PLACE: [u64; 2] = [7, 6];
/// The same for a form opened by a command: a new message (4) or a deferral (5).
const ANSWERED_NEW: [u64; 2] = [4, 5];

const GUILD: GuildId = GuildId(FakeDiscord::GUILD_ID);
const APPROVALS: u64 = 4_000_000_000_000_002;
const AUDIT: u64 = 4_000_000_000_000_003;

/// The cause, not the clock: the first REST call the bot sent after `i`
/// was dispatched is `i`'s callback, of type `kind` (a deferral, 5 or 6, for
/// a handler that writes; the audit channel's poster runs on its own).
async fn answered_first(h: &Harness, i: &Interaction, kinds: &[u64]) {
    let r = h.fake.response(i).await;
    let audit = format!("/channels/{AUDIT}/");
    // The tail of an earlier interaction (its last edit or follow-up, by
    // its own token) may still be on its way; it is not this handler's.
    let earlier = |c: &str| {
        (c.contains("/webhooks/") || c.contains("/interactions/")) && !c.contains(&i.token)
    };
    let calls: Vec<String> = h
        .fake
        .calls_after_dispatch(i)
        .into_iter()
        .filter(|c| !c.contains(&audit) && !earlier(c))
        .collect();
    let callback = format!("POST /interactions/{}/{}/callback", i.id, i.token);
    assert_eq!(
        calls.first(),
        Some(&callback),
        "calls: {calls:#?}, response: {r:#}"
    );
    assert!(
        r["type"].as_u64().is_some_and(|t| kinds.contains(&t)),
        "wanted one of {kinds:?}, response: {r:#}"
    );
}

/// A request by alice waiting in the approvals channel, Discord fast
/// meanwhile: returns the waiting message and the request.
async fn submitted(h: &Harness, name: &str) -> (serde_json::Value, serde_json::Value) {
    h.fake.set_latency(None);
    let before = h.fake.channel_messages(APPROVALS).len();
    let review = to_review(&h.fake, &alice(), name).await;
    let i = h
        .fake
        .press_button(&alice(), &review, &component(&review, "submit"))
        .await;
    shown(&h.fake, &i, 7).await;
    h.fake
        .wait_until("the request is posted", |f| {
            f.channel_messages(APPROVALS).len() > before
                && f.message_of(&i)
                    .is_some_and(|m| text(&m).contains("discord.com/channels/"))
        })
        .await;
    let waiting = h.fake.message_of(&i).unwrap();
    let request = h.fake.channel_messages(APPROVALS).pop().unwrap();
    h.fake.set_latency(Some(Duration::from_millis(1500)));
    (waiting, request)
}

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
    answered_first(&h, &i, &[5]).await;
    let saved = h.fake.followups(&i, 1).await.remove(0);
    assert!(text(&saved).contains("Settings saved"), "{saved:#}");
    assert_eq!(
        h.service.settings(GUILD).await.unwrap().approvals_required,
        1
    );

    // The wizard, then Submit, which posts to the approvals channel after
    // its answer.
    // Each step of the wizard, Back included: its write is quick, so each
    // answers with its step: the form (a modal opened by a command: a new
    // message, type 4), then the selects and buttons (an update, type 7).
    let modal = open_wizard(&h.fake, &alice()).await;
    let i = submit_form(&h.fake, &alice(), &modal, &form_fields("Slow Spa"), None).await;
    answered_first(&h, &i, &ANSWERED_NEW).await;
    let m = shown(&h.fake, &i, 4).await;
    let steps: [(&str, &[&str]); 7] = [
        ("usertype", &["guest"]),
        ("source", &["external_cma"]),
        ("next", &[]),
        ("scopes", &["appointments"]),
        ("next", &[]),
        ("back", &[]),
        ("next", &[]),
    ];
    let mut m = m;
    for (action, values) in steps {
        let id = component(&m, action);
        let i = if values.is_empty() {
            h.fake.press_button(&alice(), &m, &id).await
        } else {
            h.fake.select(&alice(), &m, &id, values).await
        };
        answered_first(&h, &i, &ANSWERED_IN_PLACE).await;
        m = shown(&h.fake, &i, 7).await;
    }
    let review = m;
    assert!(text(&review).contains("Review"), "{review:#}");
    let i = h
        .fake
        .press_button(&alice(), &review, &component(&review, "submit"))
        .await;
    answered_first(&h, &i, &ANSWERED_IN_PLACE).await;
    // Its last call, the link's edit, done before the next interaction.
    h.fake
        .wait_until("the request is posted and linked", |f| {
            !f.channel_messages(APPROVALS).is_empty()
                && f.message_of(&i)
                    .is_some_and(|m| text(&m).contains("discord.com/channels/"))
        })
        .await;
    let request = h.fake.channel_messages(APPROVALS).pop().unwrap();

    // Approval, then delivery by DM.
    let a = h
        .fake
        .press_button(&bob(), &request, &component(&request, "approve"))
        .await;
    answered_first(&h, &a, &[6]).await;
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
    let before = h.fake.dm_messages(user).len();
    let g = h
        .fake
        .press_button_in_dm(&alice(), &dm, &component(&dm, "genkey"))
        .await;
    // Pressed in the DM, the key is the press's own answer there.
    answered_first(&h, &g, &ANSWERED_NEW).await;
    h.fake
        .wait_until("the key's own DM", |f| {
            f.dm_messages(user)
                .get(before)
                .is_some_and(|m| text(m).contains("API key: `kg_"))
        })
        .await;
    let key_dm = h.fake.dm_messages(user).remove(before);
    let key = token(&text(&key_dm), "kg_").unwrap();
    // The press's tail (the credentials message loses Generate) is done
    // before Finish, so its calls are not taken for Finish's.
    h.fake
        .wait_until("the Generate button goes", |f| {
            f.dm_messages(user)
                .iter()
                .all(|m| !m.to_string().contains(":genkey"))
        })
        .await;
    let f = h
        .fake
        .press_button_in_dm(&alice(), &key_dm, &component(&key_dm, "finish"))
        .await;
    answered_first(&h, &f, &ANSWERED_IN_PLACE).await;
    let finished = shown(&h.fake, &f, 7).await;
    assert!(text(&finished).contains("removed"), "{finished:#}");

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
    answered_first(&h, &i, &[5]).await;
    let confirmation = h.fake.followups(&i, 1).await.remove(0);
    let c = h
        .fake
        .press_button(&bob(), &confirmation, &component(&confirmation, "confirm"))
        .await;
    answered_first(&h, &c, &[6]).await;
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

    // Cancel on a draft: type 7, then the draft is gone.
    h.fake.set_latency(None);
    let modal = open_wizard(&h.fake, &alice()).await;
    let i = submit_form(&h.fake, &alice(), &modal, &form_fields("Slow Cancel"), None).await;
    let step2 = shown(&h.fake, &i, 4).await;
    h.fake.set_latency(Some(Duration::from_millis(1500)));
    let c = h
        .fake
        .press_button(&alice(), &step2, &component(&step2, "cancel"))
        .await;
    answered_first(&h, &c, &ANSWERED_IN_PLACE).await;
    assert!(text(&shown(&h.fake, &c, 7).await).contains("Cancelled"));

    // Deny: the button opens the reason's modal after reads only; the
    // reason, submitted from the request's message, is deferred (type 6).
    let (_, request) = submitted(&h, "Slow Deny").await;
    let d = h
        .fake
        .press_button(&bob(), &request, &component(&request, "deny"))
        .await;
    answered_first(&h, &d, &[9]).await;
    let reason = component(&request, "deny").replace(":deny", ":denyreason");
    let r = h
        .fake
        .submit_modal(&bob(), &reason, &[("reason", "not now")], Some(&request))
        .await;
    answered_first(&h, &r, &[6]).await;
    let denied = shown(&h.fake, &r, 7).await;
    assert!(
        denied["embeds"][0]["description"]
            .as_str()
            .is_some_and(|d| d.contains("Denied by")),
        "{denied:#}"
    );

    // Withdraw.
    let (waiting, _) = submitted(&h, "Slow Withdraw").await;
    let w = h
        .fake
        .press_button(&alice(), &waiting, &component(&waiting, "withdraw"))
        .await;
    answered_first(&h, &w, &[6]).await;
    assert!(text(&shown(&h.fake, &w, 7).await).contains("withdrew"));

    // Reveal: with the requester's DMs closed, approval posts a Reveal
    // button; pressing it is deferred, and the secret follows privately.
    let (_, request) = submitted(&h, "Slow Reveal").await;
    h.fake.close_dms_of(user);
    let a = h
        .fake
        .press_button(&bob(), &request, &component(&request, "approve"))
        .await;
    answered_first(&h, &a, &[6]).await;
    // The fallback takes more slow calls than a wait allows.
    h.fake.set_latency(None);
    h.fake
        .wait_until("the Reveal button", |f| {
            f.channel_messages(FakeDiscord::CHANNEL_ID)
                .iter()
                .any(|m| text(m).contains("press **Reveal**"))
        })
        .await;
    let reveal = h
        .fake
        .channel_messages(FakeDiscord::CHANNEL_ID)
        .into_iter()
        .rfind(|m| text(m).contains("press **Reveal**"))
        .unwrap();
    h.fake.set_latency(Some(Duration::from_millis(1500)));
    let v = h
        .fake
        .press_button(&alice(), &reveal, &component(&reveal, "reveal"))
        .await;
    answered_first(&h, &v, &[6]).await;
    let creds = h.fake.followups(&v, 1).await.remove(0);
    assert!(text(&creds).contains("Secret: `kgs_"), "{creds:#}");
    assert_eq!(creds["flags"].as_u64().unwrap_or(0) & 64, 64, "{creds:#}");

    // Revoke: the command answers with the name's modal (type 9); the name,
    // submitted from no message, is deferred (type 5) before any write.
    let r = h
        .fake
        .slash_command(&bob(), "app", Some("revoke"), vec![("app", json!(app))])
        .await;
    answered_first(&h, &r, &[9]).await;
    let modal = h.fake.response(&r).await["data"]["custom_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let n = h
        .fake
        .submit_modal(&bob(), &modal, &[("name", "Slow Spa")], None)
        .await;
    answered_first(&h, &n, &[5]).await;
    h.fake
        .wait_until("the revocation is confirmed", |f| {
            f.message_of(&n)
                .is_some_and(|m| text(&m).contains("is revoked"))
        })
        .await;
    h.fake.set_latency(None);
    h.close().await;
}

/// The wizard's other forms: Cancel on a refused form of a draft never
/// stored, Back and Edit form on a stored draft, and Start over, each with
/// its form.
async fn the_wizard_forms_answer_first_when_discord_is_slow(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let slow = || h.fake.set_latency(Some(Duration::from_millis(1500)));
    let fast = || h.fake.set_latency(None);

    // A refused form, nothing stored yet: its Cancel answers in place (type 7).
    let modal = open_wizard(&h.fake, &alice()).await;
    let mut bad = form_fields("Slow Refused");
    bad[1].1 = "javascript:alert(1)".to_owned();
    let i = submit_form(&h.fake, &alice(), &modal, &bad, None).await;
    let refused = shown(&h.fake, &i, 4).await;
    assert!(text(&refused).contains("needs a few fixes"), "{refused:#}");
    slow();
    let c = h
        .fake
        .press_button(&alice(), &refused, &component(&refused, "cancel"))
        .await;
    answered_first(&h, &c, &ANSWERED_IN_PLACE).await;
    shown(&h.fake, &c, 7).await;

    // Edit form on a stored draft: the form (type 9), then its submission
    // from the step's message, answered in place (type 7).
    fast();
    let modal = open_wizard(&h.fake, &alice()).await;
    let i = submit_form(&h.fake, &alice(), &modal, &form_fields("Slow Edit"), None).await;
    let step2 = shown(&h.fake, &i, 4).await;
    // Back from step 2 reopens the stored draft's form.
    slow();
    let e = h
        .fake
        .press_button(&alice(), &step2, &component(&step2, "back"))
        .await;
    answered_first(&h, &e, &[9]).await;
    let form = h.fake.response(&e).await["data"]["custom_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Refused first: the stored draft's own Edit form, then the fixed form.
    let s = submit_form(&h.fake, &alice(), &form, &bad, Some(&step2)).await;
    answered_first(&h, &s, &ANSWERED_IN_PLACE).await;
    let refused = shown(&h.fake, &s, 7).await;
    assert!(text(&refused).contains("needs a few fixes"), "{refused:#}");
    let e = h
        .fake
        .press_button(&alice(), &refused, &component(&refused, "edit"))
        .await;
    answered_first(&h, &e, &[9]).await;
    let form = h.fake.response(&e).await["data"]["custom_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = submit_form(
        &h.fake,
        &alice(),
        &form,
        &form_fields("Slow Edited"),
        Some(&refused),
    )
    .await;
    answered_first(&h, &s, &ANSWERED_IN_PLACE).await;
    let edited = shown(&h.fake, &s, 7).await;
    assert!(text(&edited).contains("Step 2 of 4"), "{edited:#}");

    // Start over: the form (type 9), then its submission from the prompt,
    // answered in place (type 7).
    fast();
    let i = h
        .fake
        .slash_command(&alice(), "app", Some("create"), vec![])
        .await;
    let prompt = shown(&h.fake, &i, 4).await;
    slow();
    let r = h
        .fake
        .press_button(&alice(), &prompt, &component(&prompt, "restart"))
        .await;
    answered_first(&h, &r, &[9]).await;
    let form = h.fake.response(&r).await["data"]["custom_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let s = submit_form(
        &h.fake,
        &alice(),
        &form,
        &form_fields("Slow Restart"),
        Some(&prompt),
    )
    .await;
    answered_first(&h, &s, &ANSWERED_IN_PLACE).await;
    let fresh = shown(&h.fake, &s, 7).await;
    assert!(text(&fresh).contains("Step 2 of 4"), "{fresh:#}");
    fast();
    h.close().await;
}

/// `/app show`'s Issue again (type 6), then the expiry warning's Rotate now
/// in a DM (type 5).
async fn issue_again_and_rotate_now_answer_first_when_discord_is_slow(backend: Backend) {
    let h = Harness::start_with(backend, true).await;
    h.fake.add_member(&alice());
    let user = alice().id;
    // Issued through the service and never shown, as after a lost DM.
    let app = support::submit(&h.service, support::ALICE, "Slow Lost")
        .await
        .app
        .id;
    h.service
        .generate_api_key(GUILD, &app, keygate::service::Actor::member(support::ALICE))
        .await
        .unwrap();
    h.db.clock.advance(chrono::TimeDelta::seconds(2));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let i = h
        .fake
        .slash_command(
            &alice(),
            "app",
            Some("show"),
            vec![("app", json!(app.as_str()))],
        )
        .await;
    h.fake.response(&i).await;
    let show = h.fake.message_of(&i).unwrap();
    let again = show["components"][0]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["label"] == "Issue API key again")
        .map(|b| b["custom_id"].as_str().unwrap().to_owned())
        .expect("an Issue again button for the owner");
    h.fake.set_latency(Some(Duration::from_millis(1500)));
    let p = h.fake.press_button(&alice(), &show, &again).await;
    answered_first(&h, &p, &[6]).await;
    h.fake
        .wait_until("the new key by DM", |f| {
            f.dm_messages(user)
                .iter()
                .any(|m| text(m).contains("API key: `kg_"))
        })
        .await;

    // The warning, sent fast; its Rotate now, slow.
    h.fake.set_latency(None);
    let key = {
        let mut tx = h.db.store.read().await.unwrap();
        let k = tx
            .current_credential(&app, keygate::domain::lifecycle::CredentialKind::Key)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        k.unwrap()
    };
    let expires = key.expires_at.unwrap();
    h.db.clock
        .set(expires - chrono::TimeDelta::days(30) + chrono::TimeDelta::minutes(1));
    let warned = |f: &FakeDiscord| {
        f.dm_messages(user)
            .into_iter()
            .find(|m| m.to_string().contains(":rotatenow"))
    };
    h.fake
        .wait_until("the 30-day warning", |f| warned(f).is_some())
        .await;
    let warning = warned(&h.fake).unwrap();
    h.fake.set_latency(Some(Duration::from_millis(1500)));
    let r = h
        .fake
        .press_button_in_dm(&alice(), &warning, &component(&warning, "rotatenow"))
        .await;
    answered_first(&h, &r, &[5]).await;
    h.fake
        .wait_until("the rotation confirmation", |f| {
            f.message_of(&r)
                .is_some_and(|m| text(&m).contains("Rotate the **API key**"))
        })
        .await;
    h.fake.set_latency(None);
    h.close().await;
}

/// Quick work answers with its content in the callback; work slower than
/// the answer budget is deferred first (in time for Discord's 3 s) and then
/// shown by an edit, whether the step came from a button or a form.
async fn a_step_whose_write_is_slow_is_deferred_then_shown(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let modal = open_wizard(&h.fake, &alice()).await;
    let i = submit_form(&h.fake, &alice(), &modal, &form_fields("Slow Write"), None).await;
    answered_first(&h, &i, &[4]).await;
    let step2 = shown(&h.fake, &i, 4).await;

    let stall = h.db.stall_draft_writes(Duration::from_millis(1500)).await;
    let u = h
        .fake
        .select(&alice(), &step2, &component(&step2, "usertype"), &["guest"])
        .await;
    answered_first(&h, &u, &[6]).await;
    let edited = h.fake.response(&u).await;
    assert_eq!(edited["type"], 6, "{edited:#}");
    let shown_step = shown(&h.fake, &u, 7).await;
    assert!(
        shown_step["components"][0]["components"][0]["options"][0]["default"] == true,
        "the edit shows the chosen type: {shown_step:#}"
    );
    stall.await.unwrap();

    // The form again, from the step's message (Back), while writes stall.
    let b = h
        .fake
        .press_button(&alice(), &shown_step, &component(&shown_step, "back"))
        .await;
    let form = h.fake.response(&b).await["data"]["custom_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let stall = h.db.stall_draft_writes(Duration::from_millis(1500)).await;
    let s = submit_form(
        &h.fake,
        &alice(),
        &form,
        &form_fields("Slow Rewrite"),
        Some(&shown_step),
    )
    .await;
    answered_first(&h, &s, &[6]).await;
    let rewritten = shown(&h.fake, &s, 7).await;
    assert!(text(&rewritten).contains("Slow Rewrite"), "{rewritten:#}");
    stall.await.unwrap();
    h.close().await;
}

/// The answer budget counts from the interaction's creation (its id), not
/// from when its handler began: a step the gateway delivered 2.4 s late is
/// deferred at once, since waiting its whole budget for a slow write would
/// answer after Discord's 3 seconds (which the fake enforces from creation).
async fn a_step_the_gateway_delivered_late_is_deferred_at_once(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let modal = open_wizard(&h.fake, &alice()).await;
    let i = submit_form(&h.fake, &alice(), &modal, &form_fields("Late Step"), None).await;
    let step2 = shown(&h.fake, &i, 4).await;
    h.fake.enforce_deadline();

    // The write stalls until 1.5 s after the late dispatch.
    let stall = h.db.stall_draft_writes(Duration::from_millis(3900)).await;
    let (u, payload) = h.fake.select_payload(
        &alice(),
        &step2,
        &component(&step2, "usertype"),
        &["guest"],
        false,
    );
    tokio::time::sleep(Duration::from_millis(2400)).await;
    h.fake.dispatch("INTERACTION_CREATE", payload).await;
    answered_first(&h, &u, &[6]).await;
    // At once: not after some of a budget the interaction no longer has.
    let deferred_after = h.fake.latency(&u).unwrap();
    assert!(
        deferred_after < Duration::from_millis(500),
        "deferred {deferred_after:?} after the dispatch"
    );
    let shown_step = shown(&h.fake, &u, 7).await;
    assert!(
        shown_step["components"][0]["components"][0]["options"][0]["default"] == true,
        "the edit shows the chosen type: {shown_step:#}"
    );
    stall.await.unwrap();
    h.close().await;
}
