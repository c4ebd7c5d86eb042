//! Driving the wizard as a member would, for the end-to-end suites.

use super::bot::{Harness, component, shown, token};
use super::fake_discord::{FakeDiscord, Interaction, TestUser};
use serde_json::Value;

const EPHEMERAL: u64 = 1 << 6;

pub fn form_fields(name: &str) -> Vec<(&'static str, String)> {
    vec![
        ("name", name.to_owned()),
        ("uri", "https://spa.example.com".to_owned()),
        ("description", "Guests book treatments.".to_owned()),
        ("login_urls", "https://spa.example.com/callback".to_owned()),
        ("logout_urls", "https://spa.example.com/bye".to_owned()),
    ]
}

pub async fn submit_form(
    fake: &FakeDiscord,
    user: &TestUser,
    modal_id: &str,
    fields: &[(&'static str, String)],
    message: Option<&Value>,
) -> Interaction {
    let fields: Vec<(&str, &str)> = fields.iter().map(|(k, v)| (*k, v.as_str())).collect();
    fake.submit_modal(user, modal_id, &fields, message).await
}

/// `/app create` up to the modal; returns the modal's custom_id.
pub async fn open_wizard(fake: &FakeDiscord, user: &TestUser) -> String {
    let i = fake
        .slash_command(user, "app", Some("create"), vec![])
        .await;
    let r = fake.response(&i).await;
    assert_eq!(r["type"], 9, "a modal: {r:#}");
    assert_eq!(r["data"]["title"], "Create application");
    assert_eq!(r["data"]["components"].as_array().unwrap().len(), 5);
    r["data"]["custom_id"].as_str().unwrap().to_owned()
}

/// From `/app create` to the review step.
pub async fn to_review(fake: &FakeDiscord, user: &TestUser, name: &str) -> Value {
    let modal = open_wizard(fake, user).await;
    let i = submit_form(fake, user, &modal, &form_fields(name), None).await;
    let step2 = shown(fake, &i, 4).await;
    step2_to_review(fake, user, &step2).await
}

/// From step 2, as the form's submission showed it, to the review step.
pub async fn step2_to_review(fake: &FakeDiscord, user: &TestUser, step2: &Value) -> Value {
    assert!(
        step2["content"].as_str().unwrap().contains("Step 2 of 4"),
        "{step2:#}"
    );
    assert_eq!(step2["flags"].as_u64().unwrap() & EPHEMERAL, EPHEMERAL);
    let i = fake
        .select(user, step2, &component(step2, "usertype"), &["guest"])
        .await;
    let step2 = shown(fake, &i, 7).await;
    let i = fake
        .select(
            user,
            &step2,
            &component(&step2, "source"),
            &["external_cma"],
        )
        .await;
    let step2 = shown(fake, &i, 7).await;
    let i = fake
        .press_button(user, &step2, &component(&step2, "next"))
        .await;
    let step3 = shown(fake, &i, 7).await;
    assert!(step3["content"].as_str().unwrap().contains("Step 3 of 4"));
    let i = fake
        .select(
            user,
            &step3,
            &component(&step3, "scopes"),
            &["appointments", "guests"],
        )
        .await;
    let step3 = shown(fake, &i, 7).await;
    let i = fake
        .press_button(user, &step3, &component(&step3, "next"))
        .await;
    let review = shown(fake, &i, 7).await;
    assert!(review["content"].as_str().unwrap().contains("Step 4 of 4"));
    review
}

/// Submit, then the DM with the ID and Secret.
pub async fn submit_and_get_dm(
    h: &Harness,
    user: &TestUser,
    review: &Value,
) -> (Value, String, String) {
    let earlier = h.fake.dm_messages(user.id).len();
    let i = h
        .fake
        .press_button(user, review, &component(review, "submit"))
        .await;
    let done = shown(&h.fake, &i, 7).await;
    assert!(
        done["content"]
            .as_str()
            .unwrap()
            .contains("sent to your DMs"),
        "{done:#}"
    );
    let id = user.id;
    // A placeholder first, filled once its redaction is stored.
    h.fake
        .wait_until("the credentials DM", |f| {
            f.dm_messages(id).get(earlier).is_some_and(|m| {
                m["content"]
                    .as_str()
                    .unwrap_or("")
                    .contains("Secret: `kgs_")
            })
        })
        .await;
    let dm = h.fake.dm_messages(user.id).remove(earlier);
    let content = dm["content"].as_str().unwrap();
    let app_id = token(content, "app_").expect("the Application ID");
    let secret = token(content, "kgs_").expect("the Secret");
    (dm, app_id, secret)
}
