//! Self-tests of the Discord emulator: everything it sends parses in serenity, a real poise bot works against it, and a member sees only what Discord would show them.

mod support;

use serde_json::{Value, json};
use serenity::all::{
    ActionRowComponent, AutocompleteChoice, ButtonStyle, ChannelId, CommandDataOptionValue,
    CommandOptionType, ComponentInteractionDataKind, CreateActionRow, CreateAllowedMentions,
    CreateAttachment, CreateAutocompleteResponse, CreateButton, CreateCommand, CreateCommandOption,
    CreateEmbed, CreateInputText, CreateInteractionResponse, CreateInteractionResponseFollowup,
    CreateInteractionResponseMessage, CreateMessage, CreateModal, CreateSelectMenu,
    CreateSelectMenuKind, CreateSelectMenuOption, EditInteractionResponse, EditMessage, Event,
    GatewayEvent, GuildId, Http, HttpBuilder, HttpError, InputTextStyle,
    Interaction as SerenityInteraction, InteractionId, MessageFlags, Nonce,
    PermissionOverwriteType, Permissions, RoleId, UserId,
};
use std::time::Duration;
use support::fake_discord::{FakeDiscord, TestUser};
use support::ping_bot::{start_ping_bot, start_ping_bot_shard};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const ALICE: u64 = 2_000_000_000_000_001;
const BOB: u64 = 2_000_000_000_000_002;

fn http(fake: &FakeDiscord) -> Http {
    HttpBuilder::new("fake-bot-token")
        .proxy(fake.base_url())
        .ratelimiter_disabled(true)
        .application_id(FakeDiscord::APPLICATION_ID.into())
        .build()
}

/// Parses as serenity's shard does, which turns an unparsable dispatch into `Event::Unknown`.
fn parse_interaction(d: &Value) -> SerenityInteraction {
    let direct = serde_json::from_value::<SerenityInteraction>(d.clone())
        .unwrap_or_else(|e| panic!("serenity rejects the interaction: {e}\n{d:#}"));
    let frame = json!({ "op": 0, "t": "INTERACTION_CREATE", "s": 2, "d": d });
    match serde_json::from_value::<GatewayEvent>(frame).expect("gateway frame") {
        GatewayEvent::Dispatch(2, Event::InteractionCreate(_)) => direct,
        other => panic!("not an INTERACTION_CREATE dispatch: {other:?}"),
    }
}

fn message_with_components() -> CreateMessage {
    CreateMessage::new()
        .content("pick one")
        .embed(CreateEmbed::new().title("App").field("Name", "shop", true))
        .components(vec![
            CreateActionRow::Buttons(vec![
                CreateButton::new("approve")
                    .label("Approve")
                    .style(ButtonStyle::Success),
                CreateButton::new_link("https://example.com").label("Docs"),
            ]),
            CreateActionRow::SelectMenu(
                CreateSelectMenu::new(
                    "scopes",
                    CreateSelectMenuKind::String {
                        options: vec![
                            CreateSelectMenuOption::new("Read", "read"),
                            CreateSelectMenuOption::new("Write", "write").description("w"),
                        ],
                    },
                )
                .max_values(2),
            ),
        ])
}

async fn register_app_command(fake: &FakeDiscord, http: &Http) -> u64 {
    let show = CreateCommandOption::new(CommandOptionType::SubCommand, "show", "Show an app")
        .add_sub_option(
            CreateCommandOption::new(CommandOptionType::String, "name", "App name")
                .required(true)
                .set_autocomplete(true),
        )
        .add_sub_option(CreateCommandOption::new(
            CommandOptionType::User,
            "owner",
            "Owner",
        ))
        .add_sub_option(CreateCommandOption::new(
            CommandOptionType::Integer,
            "count",
            "N",
        ));
    let registered = GuildId::new(FakeDiscord::GUILD_ID)
        .set_commands(
            http,
            vec![
                CreateCommand::new("app")
                    .description("Apps")
                    .add_option(show),
            ],
        )
        .await
        .expect("serenity parses the registered commands");
    assert_eq!(fake.commands().len(), 1);
    assert_eq!(registered[0].name, "app");
    registered[0].id.get()
}

#[tokio::test]
async fn interaction_payloads_parse_in_serenity() {
    let fake = FakeDiscord::start().await;
    let http = http(&fake);
    let app_id = register_app_command(&fake, &http).await;
    let admin = TestUser::admin(ALICE, "alice").with_roles(&[77]);
    let member = TestUser::member(BOB, "bob");

    let (_, d) = fake.slash_command_payload(
        &admin,
        "app",
        Some("show"),
        vec![
            ("name", json!("shop")),
            ("owner", json!(BOB)),
            ("count", json!(3)),
        ],
    );
    let SerenityInteraction::Command(c) = parse_interaction(&d) else {
        panic!("not a command")
    };
    assert_eq!((c.data.name.as_str(), c.data.id.get()), ("app", app_id));
    assert_eq!(c.guild_id, Some(GuildId::new(FakeDiscord::GUILD_ID)));
    assert_eq!(c.user.id.get(), ALICE);
    let m = c.member.as_ref().expect("member");
    assert!(
        m.permissions
            .unwrap()
            .contains(Permissions::MANAGE_GUILD | Permissions::ADMINISTRATOR)
    );
    assert_eq!(m.roles[0].get(), 77);
    assert!(
        c.app_permissions
            .unwrap()
            .contains(Permissions::SEND_MESSAGES)
    );
    let CommandDataOptionValue::SubCommand(opts) = &c.data.options[0].value else {
        panic!("no subcommand: {:?}", c.data.options)
    };
    assert_eq!(c.data.options[0].name, "show");
    assert_eq!(opts[0].value, CommandDataOptionValue::String("shop".into()));
    assert_eq!(
        opts[1].value,
        CommandDataOptionValue::User(UserId::new(BOB))
    );
    assert_eq!(opts[2].value, CommandDataOptionValue::Integer(3));
    assert!(
        c.data.resolved.users.contains_key(&UserId::new(BOB)),
        "a user option is resolved"
    );

    let (_, d) =
        fake.slash_command_payload(&member, "unregistered", None, vec![("flag", json!(true))]);
    let SerenityInteraction::Command(c) = parse_interaction(&d) else {
        panic!("not a command")
    };
    assert!(
        !c.member
            .unwrap()
            .permissions
            .unwrap()
            .contains(Permissions::MANAGE_GUILD)
    );
    assert_eq!(
        c.data.options[0].value,
        CommandDataOptionValue::Boolean(true)
    );

    let (_, d) = fake.autocomplete_payload(&member, "app", Some("show"), "name", "sh");
    let SerenityInteraction::Autocomplete(c) = parse_interaction(&d) else {
        panic!("not autocomplete")
    };
    let focused = c.data.autocomplete().expect("a focused option");
    assert_eq!((focused.name, focused.value), ("name", "sh"));

    ChannelId::new(FakeDiscord::CHANNEL_ID)
        .send_message(&http, message_with_components())
        .await
        .expect("serenity parses the created message");
    let message = fake.channel_messages(FakeDiscord::CHANNEL_ID).remove(0);

    let (_, d) = fake.button_payload(&member, &message, "approve", false);
    let SerenityInteraction::Component(c) = parse_interaction(&d) else {
        panic!("not a component")
    };
    assert_eq!(c.data.custom_id, "approve");
    assert!(matches!(c.data.kind, ComponentInteractionDataKind::Button));
    assert_eq!(c.message.components.len(), 2);
    assert_eq!(c.message.embeds[0].fields[0].value, "shop");
    assert_eq!(c.channel_id.get(), FakeDiscord::CHANNEL_ID);

    let (_, d) = fake.select_payload(&member, &message, "scopes", &["read", "write"], false);
    let SerenityInteraction::Component(c) = parse_interaction(&d) else {
        panic!("not a component")
    };
    let ComponentInteractionDataKind::StringSelect { values } = &c.data.kind else {
        panic!("not a string select: {:?}", c.data.kind)
    };
    assert_eq!(values, &["read", "write"]);

    for msg in [Some(&message), None] {
        let (_, d) = fake.modal_payload(
            &member,
            "form",
            &[("name", "shop"), ("uri", "https://x")],
            msg,
            false,
        );
        let SerenityInteraction::Modal(m) = parse_interaction(&d) else {
            panic!("not a modal")
        };
        assert_eq!(m.data.custom_id, "form");
        let ActionRowComponent::InputText(t) = &m.data.components[1].components[0] else {
            panic!("not a text input")
        };
        assert_eq!(
            (t.custom_id.as_str(), t.value.as_deref()),
            ("uri", Some("https://x"))
        );
        assert_eq!(m.message.is_some(), msg.is_some());
    }

    for (d, kind) in [
        (
            fake.button_payload(&member, &message, "approve", true).1,
            "button",
        ),
        (
            fake.select_payload(&member, &message, "scopes", &["read"], true)
                .1,
            "select",
        ),
        (
            fake.modal_payload(&member, "form", &[("name", "x")], None, true)
                .1,
            "modal",
        ),
    ] {
        let i = parse_interaction(&d);
        assert_eq!(i.guild_id(), None, "{kind} in a DM");
        let (user, channel, member) = match &i {
            SerenityInteraction::Component(c) => (c.user.id, c.channel_id, c.member.is_some()),
            SerenityInteraction::Modal(m) => (m.user.id, m.channel_id, m.member.is_some()),
            other => panic!("unexpected {other:?}"),
        };
        assert_eq!(user.get(), BOB);
        assert!(!member);
        assert_eq!(Some(channel.get()), fake.dm_channel_of(BOB));
    }

    let frame = fake.ready_frame();
    match serde_json::from_value::<GatewayEvent>(frame).expect("READY frame") {
        GatewayEvent::Dispatch(1, Event::Ready(r)) => {
            assert_eq!(r.ready.user.id.get(), FakeDiscord::APPLICATION_ID);
            assert_eq!(r.ready.application.id.get(), FakeDiscord::APPLICATION_ID);
        }
        other => panic!("not READY: {other:?}"),
    }
}

#[tokio::test]
async fn rest_answers_parse_in_serenity() {
    let fake = FakeDiscord::start().await;
    let http = http(&fake);
    assert_eq!(http.get_gateway().await.unwrap().url, fake.gateway_url());
    assert_eq!(http.get_bot_gateway().await.unwrap().shards, 1);
    let info = http.get_current_application_info().await.unwrap();
    assert_eq!(info.owner.unwrap().id.get(), FakeDiscord::OWNER_ID);
    assert!(http.get_current_user().await.unwrap().bot);

    let dm = UserId::new(ALICE).create_dm_channel(&http).await.unwrap();
    assert_eq!(Some(dm.id.get()), fake.dm_channel_of(ALICE));
    assert_eq!(
        dm.id,
        UserId::new(ALICE)
            .create_dm_channel(&http)
            .await
            .unwrap()
            .id
    );
    let quiet = dm
        .send_message(
            &http,
            CreateMessage::new()
                .content(format!("hi <@{ALICE}>"))
                .allowed_mentions(CreateAllowedMentions::new()),
        )
        .await
        .unwrap();
    assert!(quiet.mentions.is_empty(), "allowed_mentions is honoured");
    let loud = dm
        .send_message(
            &http,
            CreateMessage::new().content(format!("hi <@{ALICE}>")),
        )
        .await
        .unwrap();
    assert_eq!(
        loud.mentions[0].id.get(),
        ALICE,
        "by default mentions go through"
    );

    let edited = dm
        .id
        .edit_message(&http, quiet.id, EditMessage::new().content("edited"))
        .await
        .unwrap();
    assert_eq!(edited.content, "edited");
    assert!(edited.edited_timestamp.is_some());
    assert_eq!(
        http.get_message(dm.id, quiet.id).await.unwrap().content,
        "edited"
    );

    let with_file = dm
        .send_message(
            &http,
            CreateMessage::new()
                .content("your key")
                .add_file(CreateAttachment::bytes(b"secret".to_vec(), "key.txt")),
        )
        .await
        .unwrap();
    let a = &with_file.attachments[0];
    assert_eq!((a.filename.as_str(), a.size), ("key.txt", 6));
    assert_eq!(fake.attachment(a.id.get()).unwrap().1, b"secret");
    assert_eq!(
        fake.requests().last().unwrap().body["content"],
        "your key",
        "payload_json is the body"
    );

    dm.id.delete_message(&http, loud.id).await.unwrap();
    let contents: Vec<Value> = fake
        .dm_messages(ALICE)
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(contents, vec![json!("edited"), json!("your key")]);
    assert_eq!(fake.wait_for_dm(ALICE, 2).await.len(), 2);

    let guild = GuildId::new(FakeDiscord::GUILD_ID);
    assert_eq!(
        http.get_guild(guild).await.unwrap().owner_id.get(),
        FakeDiscord::OWNER_ID
    );
    assert!(
        guild
            .channels(&http)
            .await
            .unwrap()
            .contains_key(&ChannelId::new(FakeDiscord::CHANNEL_ID))
    );
    fake.add_role(88, "Reviewers", Permissions::MANAGE_GUILD.bits());
    // @everyone, the bot's role and Reviewers.
    assert_eq!(guild.roles(&http).await.unwrap().len(), 3);
    fake.add_member(&TestUser::member(BOB, "bob"));
    assert_eq!(
        guild
            .member(&http, UserId::new(BOB))
            .await
            .unwrap()
            .user
            .name,
        "bob"
    );
    assert!(guild.member(&http, UserId::new(ALICE)).await.is_err());
    assert!(
        ChannelId::new(FakeDiscord::CHANNEL_ID)
            .to_channel(&http)
            .await
            .unwrap()
            .guild()
            .is_some()
    );
    assert!(dm.id.to_channel(&http).await.unwrap().private().is_some());
}

#[tokio::test]
async fn interaction_responses_as_the_user_sees_them() {
    let fake = FakeDiscord::start().await;
    let http = http(&fake);
    let user = TestUser::member(ALICE, "alice");
    let reply = |content: &str| {
        CreateInteractionResponse::Message(CreateInteractionResponseMessage::new().content(content))
    };

    let (i, _) = fake.slash_command_payload(&user, "app", None, vec![]);
    let id = InteractionId::new(i.id);
    http.create_interaction_response(id, &i.token, &reply("hello"), vec![])
        .await
        .unwrap();
    assert_eq!(fake.response(&i).await["data"]["content"], "hello");
    assert_eq!(fake.message_of(&i).unwrap()["content"], "hello");
    let again = http
        .create_interaction_response(id, &i.token, &reply("twice"), vec![])
        .await;
    assert!(again.is_err(), "an interaction is acknowledged once");
    http.edit_original_interaction_response(
        &i.token,
        &EditInteractionResponse::new().content("bye"),
        vec![],
    )
    .await
    .unwrap();
    assert_eq!(fake.message_of(&i).unwrap()["content"], "bye");
    let f = http
        .create_followup_message(
            &i.token,
            &CreateInteractionResponseFollowup::new()
                .content("secret")
                .ephemeral(true),
            vec![],
        )
        .await
        .unwrap();
    assert!(f.flags.unwrap().contains(MessageFlags::EPHEMERAL));
    assert_eq!(fake.followups(&i, 1).await[0]["content"], "secret");
    let visible: Vec<Value> = fake
        .channel_messages(FakeDiscord::CHANNEL_ID)
        .iter()
        .map(|m| m["content"].clone())
        .collect();
    assert_eq!(
        visible,
        vec![json!("bye")],
        "ephemeral messages are not in the channel"
    );

    // Deferred: the first follow-up fills in the "thinking…" message.
    let (i, _) = fake.slash_command_payload(&user, "app", None, vec![]);
    let defer =
        CreateInteractionResponse::Defer(CreateInteractionResponseMessage::new().ephemeral(true));
    http.create_interaction_response(InteractionId::new(i.id), &i.token, &defer, vec![])
        .await
        .unwrap();
    let thinking = fake.message_of(&i).unwrap();
    assert_eq!(thinking["flags"], 64 | 128);
    http.create_followup_message(
        &i.token,
        &CreateInteractionResponseFollowup::new().content("done"),
        vec![],
    )
    .await
    .unwrap();
    let done = fake.message_of(&i).unwrap();
    assert_eq!(
        (
            done["id"].clone(),
            done["content"].clone(),
            done["flags"].clone()
        ),
        (thinking["id"].clone(), json!("done"), json!(64))
    );

    // A component's type 7 updates the message it sits on.
    ChannelId::new(FakeDiscord::CHANNEL_ID)
        .send_message(&http, message_with_components())
        .await
        .unwrap();
    let message = fake
        .channel_messages(FakeDiscord::CHANNEL_ID)
        .pop()
        .unwrap();
    let (b, _) = fake.button_payload(&user, &message, "approve", false);
    let update = CreateInteractionResponse::UpdateMessage(
        CreateInteractionResponseMessage::new()
            .content("approved")
            .components(vec![]),
    );
    http.create_interaction_response(InteractionId::new(b.id), &b.token, &update, vec![])
        .await
        .unwrap();
    let updated = fake.message_of(&b).unwrap();
    assert_eq!(
        (updated["id"].clone(), updated["content"].clone()),
        (message["id"].clone(), json!("approved"))
    );
    assert_eq!(updated["components"], json!([]));
    assert_eq!(
        fake.channel_messages(FakeDiscord::CHANNEL_ID)
            .last()
            .unwrap(),
        &updated
    );

    let (m, _) = fake.button_payload(&user, &updated, "edit", false);
    let modal =
        CreateInteractionResponse::Modal(CreateModal::new("form", "Edit").components(vec![
            CreateActionRow::InputText(CreateInputText::new(InputTextStyle::Short, "Name", "name")),
        ]));
    http.create_interaction_response(InteractionId::new(m.id), &m.token, &modal, vec![])
        .await
        .unwrap();
    assert_eq!(fake.modal_of(&m).unwrap()["custom_id"], "form");

    let (a, _) = fake.autocomplete_payload(&user, "app", None, "name", "s");
    let choices = CreateInteractionResponse::Autocomplete(
        CreateAutocompleteResponse::new()
            .set_choices(vec![AutocompleteChoice::new("shop", "shop")]),
    );
    http.create_interaction_response(InteractionId::new(a.id), &a.token, &choices, vec![])
        .await
        .unwrap();
    let r = fake.response(&a).await;
    assert_eq!(
        (r["type"].clone(), r["data"]["choices"][0]["value"].clone()),
        (json!(8), json!("shop"))
    );
}

#[tokio::test]
async fn failures_are_injected_and_recorded() {
    let fake = FakeDiscord::start().await;
    let http = http(&fake);
    fake.fail(
        "GET",
        "/users/@me",
        500,
        json!({ "message": "boom", "code": 0 }),
        1,
    );
    let err = http
        .get_current_user()
        .await
        .expect_err("the injected failure");
    assert!(err.to_string().contains("boom"), "{err}");
    assert!(
        http.get_current_user().await.is_ok(),
        "only `times` requests fail"
    );

    fake.fail(
        "POST",
        "/messages",
        429,
        json!({ "message": "You are being rate limited.", "retry_after": 1.5, "global": false }),
        1,
    );
    let channel = ChannelId::new(FakeDiscord::CHANNEL_ID);
    let err = channel.say(&http, "x").await.expect_err("rate limited");
    let serenity::Error::Http(serenity::all::HttpError::UnsuccessfulRequest(resp)) = &err else {
        panic!("{err:?}")
    };
    assert_eq!(resp.status_code.as_u16(), 429);
    assert!(channel.say(&http, "x").await.is_ok());

    fake.fail(
        "GET",
        "/gateway",
        429,
        json!({ "message": "slow down", "retry_after": 1.5 }),
        1,
    );
    let raw = raw_get(&fake, "/api/v10/gateway").await;
    assert!(raw.starts_with("HTTP/1.1 429"), "{raw}");
    assert!(raw.to_ascii_lowercase().contains("retry-after: 2"), "{raw}");
    assert!(
        raw_get(&fake, "/api/v10/nowhere")
            .await
            .starts_with("HTTP/1.1 404")
    );

    fake.close_dms_of(BOB);
    let dm = UserId::new(BOB).create_dm_channel(&http).await.unwrap();
    let err = dm.say(&http, "hello").await.expect_err("DMs closed");
    let serenity::Error::Http(serenity::all::HttpError::UnsuccessfulRequest(resp)) = &err else {
        panic!("{err:?}")
    };
    assert_eq!((resp.status_code.as_u16(), resp.error.code), (403, 50007));
    assert!(fake.dm_messages(BOB).is_empty());

    let paths: Vec<String> = fake
        .requests()
        .iter()
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert_eq!(
        paths.iter().filter(|p| *p == "GET /users/@me").count(),
        2,
        "{paths:?}"
    );
    assert!(
        paths.contains(&"GET /nowhere".to_owned()),
        "unknown routes are recorded: {paths:?}"
    );
}

async fn raw_get(fake: &FakeDiscord, path: &str) -> String {
    let addr = fake.base_url().trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    out
}

async fn ping(fake: &FakeDiscord, user: &TestUser) -> support::fake_discord::Interaction {
    let i = fake.slash_command(user, "ping", None, vec![]).await;
    let r = fake.response(&i).await;
    assert_eq!(
        (r["type"].clone(), r["data"]["content"].clone()),
        (json!(4), json!("pong"))
    );
    assert_eq!(fake.message_of(&i).unwrap()["content"], "pong");
    i
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ping_bot_connects_answers_heartbeats_and_restarts() {
    let fake = FakeDiscord::start_with_heartbeat(Duration::from_millis(200)).await;
    let user = TestUser::member(ALICE, "alice");
    let bot = start_ping_bot(&fake).await;
    fake.wait_ready().await;
    let names: Vec<Value> = fake.commands().iter().map(|c| c["name"].clone()).collect();
    assert_eq!(names, vec![json!("ping")]);
    assert!(
        fake.last_identify().unwrap()["token"]
            .as_str()
            .unwrap()
            .contains("fake-bot-token")
    );
    ping(&fake, &user).await;

    // serenity checks the previous heartbeat was ACKed before it sends the next one, and its
    // loop wakes at least every 500 ms, so a second heartbeat proves an ACK got through.
    fake.wait_until("a second heartbeat", |f| f.heartbeats() >= 2)
        .await;
    assert_eq!((fake.connections(), fake.resumes()), (1, 0));
    assert!(fake.is_connected());

    fake.disconnect();
    fake.wait_until("the bot resumes", |f| f.resumes() == 1 && f.is_connected())
        .await;
    ping(&fake, &user).await;

    bot.shutdown().await;
    fake.wait_until("the bot disconnects", |f| !f.is_connected())
        .await;

    let bot = start_ping_bot(&fake).await;
    fake.wait_ready().await;
    ping(&fake, &user).await;
    assert_eq!(fake.connections(), 2);
    // The shutdown above is the one under test; each costs up to 500 ms of serenity's read timeout.
    bot.abort();
}

/// The control for the heartbeat check above: without ACKs the bot does drop the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "takes 6 s: serenity's shard restart waits out its own 5 s shutdown timeout"]
async fn unanswered_heartbeats_make_the_bot_drop_the_connection() {
    let fake = FakeDiscord::start_with_heartbeat(Duration::from_millis(200)).await;
    let bot = start_ping_bot(&fake).await;
    fake.wait_ready().await;
    fake.stop_acking_heartbeats();
    fake.wait_until("the bot gives up on the connection", |f| !f.is_connected())
        .await;
    // serenity now waits out its 5 s pause between shard boots before identifying again.
    bot.abort();
}

#[tokio::test]
async fn enforced_nonces_deduplicate_messages() {
    let fake = FakeDiscord::start().await;
    let http = http(&fake);
    let channel = ChannelId::new(FakeDiscord::CHANNEL_ID);
    let send = |nonce: Nonce, enforce: bool, content: &'static str| {
        let http = &http;
        async move {
            channel
                .send_message(
                    http,
                    CreateMessage::new()
                        .content(content)
                        .nonce(nonce)
                        .enforce_nonce(enforce),
                )
                .await
                .unwrap()
        }
    };

    let first = send(Nonce::String("kga1".into()), true, "one").await;
    assert!(matches!(&first.nonce, Some(Nonce::String(n)) if n == "kga1"));
    let again = send(Nonce::String("kga1".into()), true, "one, retried").await;
    assert_eq!(again.id, first.id);
    assert_eq!(again.content, "one");
    let stored = fake.channel_messages(FakeDiscord::CHANNEL_ID);
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["nonce"], json!("kga1"));

    // Integer nonces too; the same nonce in another channel is another message.
    let n1 = send(Nonce::Number(42), true, "two").await;
    assert!(matches!(n1.nonce, Some(Nonce::Number(42))));
    assert_eq!(send(Nonce::Number(42), true, "two").await.id, n1.id);
    fake.add_channel(4_000_000_000_000_002, "audit");
    let elsewhere = ChannelId::new(4_000_000_000_000_002)
        .send_message(
            &http,
            CreateMessage::new()
                .content("two")
                .nonce(Nonce::Number(42))
                .enforce_nonce(true),
        )
        .await
        .unwrap();
    assert_ne!(elsewhere.id, n1.id);
    assert_eq!(fake.channel_messages(FakeDiscord::CHANNEL_ID).len(), 2);

    // Without enforce_nonce the nonce is only echoed.
    let a = send(Nonce::String("free".into()), false, "three").await;
    let b = send(Nonce::String("free".into()), false, "three").await;
    assert_ne!(a.id, b.id);
    assert!(matches!(&b.nonce, Some(Nonce::String(n)) if n == "free"));
    assert_eq!(fake.channel_messages(FakeDiscord::CHANNEL_ID).len(), 4);
}

async fn bot_permissions_in(http: &Http, channel: u64) -> Permissions {
    let guild = GuildId::new(FakeDiscord::GUILD_ID);
    let partial = http.get_guild(guild).await.unwrap();
    let channel = http
        .get_channel(ChannelId::new(channel))
        .await
        .unwrap()
        .guild()
        .expect("a guild channel");
    assert_eq!(channel.guild_id, guild);
    let me = http
        .get_member(guild, UserId::new(FakeDiscord::APPLICATION_ID))
        .await
        .unwrap();
    assert_eq!(me.roles, vec![RoleId::new(FakeDiscord::BOT_ROLE_ID)]);
    partial.user_permissions_in(&channel, &me)
}

#[tokio::test]
async fn the_bot_can_be_denied_a_channel() {
    let fake = FakeDiscord::start().await;
    let http = http(&fake);
    const AUDIT: u64 = 4_000_000_000_000_002;
    fake.add_channel(AUDIT, "audit-log");

    let guild = GuildId::new(FakeDiscord::GUILD_ID);
    let partial = http.get_guild(guild).await.unwrap();
    assert!(
        partial
            .roles
            .contains_key(&RoleId::new(FakeDiscord::GUILD_ID))
    );
    let bot_role = &partial.roles[&RoleId::new(FakeDiscord::BOT_ROLE_ID)];
    assert_eq!(bot_role.name, FakeDiscord::BOT_NAME);
    assert!(bot_role.managed);
    let channels = guild.channels(&http).await.unwrap();
    assert_eq!(channels.len(), 2);
    assert_eq!(channels[&ChannelId::new(AUDIT)].name, "audit-log");
    assert_eq!(
        channels[&ChannelId::new(FakeDiscord::CHANNEL_ID)].name,
        "general"
    );

    for c in [FakeDiscord::CHANNEL_ID, AUDIT] {
        let perms = bot_permissions_in(&http, c).await;
        assert!(
            perms.contains(
                Permissions::VIEW_CHANNEL
                    | Permissions::SEND_MESSAGES
                    | Permissions::EMBED_LINKS
                    | Permissions::READ_MESSAGE_HISTORY
            ),
            "{perms:?}"
        );
    }

    fake.deny_bot_in_channel(AUDIT, Permissions::SEND_MESSAGES.bits());
    let channel = http
        .get_channel(ChannelId::new(AUDIT))
        .await
        .unwrap()
        .guild()
        .unwrap();
    assert_eq!(channel.permission_overwrites.len(), 1);
    assert_eq!(
        channel.permission_overwrites[0].kind,
        PermissionOverwriteType::Member(UserId::new(FakeDiscord::APPLICATION_ID))
    );
    let perms = bot_permissions_in(&http, AUDIT).await;
    assert!(!perms.contains(Permissions::SEND_MESSAGES), "{perms:?}");
    assert!(perms.contains(Permissions::VIEW_CHANNEL), "{perms:?}");
    // Other channels are unaffected.
    assert!(
        bot_permissions_in(&http, FakeDiscord::CHANNEL_ID)
            .await
            .contains(Permissions::SEND_MESSAGES)
    );
    ChannelId::new(FakeDiscord::CHANNEL_ID)
        .say(&http, "still fine")
        .await
        .unwrap();

    // Posting where the bot may not post fails as on Discord, and nothing is created.
    let err = ChannelId::new(AUDIT)
        .say(&http, "denied")
        .await
        .unwrap_err();
    match err {
        serenity::Error::Http(HttpError::UnsuccessfulRequest(res)) => {
            assert_eq!(res.status_code.as_u16(), 403);
            assert_eq!(res.error.code, 50013);
            assert_eq!(res.error.message, "Missing Permissions");
        }
        other => panic!("expected 403 50013, got {other:?}"),
    }
    assert!(fake.channel_messages(AUDIT).is_empty());

    // Without VIEW_CHANNEL Discord answers 50001 instead.
    fake.deny_bot_in_channel(AUDIT, Permissions::VIEW_CHANNEL.bits());
    let perms = bot_permissions_in(&http, AUDIT).await;
    assert!(!perms.contains(Permissions::VIEW_CHANNEL), "{perms:?}");
    assert!(!perms.contains(Permissions::SEND_MESSAGES), "{perms:?}");
    match ChannelId::new(AUDIT).say(&http, "denied").await {
        Err(serenity::Error::Http(HttpError::UnsuccessfulRequest(res))) => {
            assert_eq!((res.status_code.as_u16(), res.error.code), (403, 50001));
        }
        other => panic!("expected 403 50001, got {other:?}"),
    }
}

#[test]
fn the_two_guilds_are_on_different_shards_of_two() {
    // Discord's routing: (guild_id >> 22) % shard_count.
    assert_eq!((FakeDiscord::GUILD_ID >> 22) % 2, 1);
    assert_eq!((FakeDiscord::GUILD_2_ID >> 22) % 2, 0);
    assert_eq!(FakeDiscord::shard_of(FakeDiscord::GUILD_ID, 2), 1);
    assert_eq!(FakeDiscord::shard_of(FakeDiscord::GUILD_2_ID, 2), 0);
    // With one shard everything is shard 0's.
    assert_eq!(FakeDiscord::shard_of(FakeDiscord::GUILD_ID, 1), 0);
}

#[tokio::test]
async fn the_second_guild_has_its_own_roles_channels_and_payloads() {
    let fake = FakeDiscord::start().await;
    let http = http(&fake);
    let (one, two) = (
        GuildId::new(FakeDiscord::GUILD_ID),
        GuildId::new(FakeDiscord::GUILD_2_ID),
    );
    const AUDIT_2: u64 = 4_000_000_000_000_202;
    fake.add_channel_in(FakeDiscord::GUILD_2_ID, AUDIT_2, "audit-2");
    fake.add_role_in(FakeDiscord::GUILD_2_ID, 99, "Approvers 2", 0);

    let partial = http.get_guild(two).await.unwrap();
    assert_eq!(partial.owner_id.get(), FakeDiscord::OWNER_ID);
    let mut roles: Vec<u64> = partial.roles.keys().map(|r| r.get()).collect();
    roles.sort_unstable();
    assert_eq!(
        roles,
        vec![99, FakeDiscord::GUILD_2_ID, FakeDiscord::BOT_ROLE_2_ID],
        "@everyone is the guild's id; the first guild's roles are not listed"
    );
    assert_eq!(one.roles(&http).await.unwrap().len(), 2);
    let mut channels: Vec<u64> = two
        .channels(&http)
        .await
        .unwrap()
        .keys()
        .map(|c| c.get())
        .collect();
    channels.sort_unstable();
    assert_eq!(channels, vec![FakeDiscord::CHANNEL_2_ID, AUDIT_2]);
    assert_eq!(one.channels(&http).await.unwrap().len(), 1);
    for (channel, guild) in [
        (FakeDiscord::CHANNEL_ID, one),
        (FakeDiscord::CHANNEL_2_ID, two),
        (AUDIT_2, two),
    ] {
        let c = ChannelId::new(channel)
            .to_channel(&http)
            .await
            .unwrap()
            .guild()
            .expect("a guild channel");
        assert_eq!(c.guild_id, guild, "channel {channel}");
    }
    let me = two
        .member(&http, UserId::new(FakeDiscord::APPLICATION_ID))
        .await
        .unwrap();
    assert_eq!(me.guild_id, two);
    assert_eq!(me.roles, vec![RoleId::new(FakeDiscord::BOT_ROLE_2_ID)]);
    let channel = ChannelId::new(AUDIT_2)
        .to_channel(&http)
        .await
        .unwrap()
        .guild()
        .unwrap();
    assert!(
        partial
            .user_permissions_in(&channel, &me)
            .contains(Permissions::SEND_MESSAGES)
    );
    ChannelId::new(AUDIT_2).say(&http, "hello").await.unwrap();
    assert_eq!(fake.channel_messages(AUDIT_2).len(), 1);

    // Members are the same in both guilds, each answered with the guild asked about.
    let bob = TestUser::member(BOB, "bob").in_guild(FakeDiscord::GUILD_2_ID);
    fake.add_member(&bob);
    for guild in [one, two] {
        assert_eq!(
            guild
                .member(&http, UserId::new(BOB))
                .await
                .unwrap()
                .guild_id,
            guild
        );
    }
    // Discord answers 10004 for a guild the bot is not in.
    let unknown = raw_get(&fake, "/api/v10/guilds/1000000000000003/channels").await;
    assert!(unknown.starts_with("HTTP/1.1 404"), "{unknown}");
    assert!(unknown.contains("10004"), "{unknown}");

    let (_, d) = fake.slash_command_payload(&bob, "app", Some("list"), vec![]);
    assert_eq!(d["data"]["guild_id"], FakeDiscord::GUILD_2_ID.to_string());
    assert_eq!(
        d["authorizing_integration_owners"]["0"],
        FakeDiscord::GUILD_2_ID.to_string()
    );
    let SerenityInteraction::Command(c) = parse_interaction(&d) else {
        panic!("not a command")
    };
    assert_eq!(c.guild_id, Some(two));
    assert_eq!(c.channel_id.get(), FakeDiscord::CHANNEL_2_ID);
    assert_eq!(c.member.expect("a member").user.id.get(), BOB);
    let (_, d) = fake.autocomplete_payload(&bob, "app", Some("show"), "name", "sh");
    assert_eq!(d["guild_id"], FakeDiscord::GUILD_2_ID.to_string());
    assert_eq!(d["data"]["guild_id"], FakeDiscord::GUILD_2_ID.to_string());

    // READY of shard 0 of 1 lists both guilds.
    let ready = fake.ready_frame();
    assert_eq!(ready["d"]["shard"], json!([0, 1]));
    assert_eq!(ready["d"]["guilds"].as_array().unwrap().len(), 2);
}

/// Two processes, each running one shard of two: each guild's events reach its shard's
/// connection, DMs shard 0's, and a resumed connection stays its shard's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ping_bots_on_shards_0_and_1_of_2_each_get_their_guilds_events() {
    let fake = FakeDiscord::start().await;
    let zero = start_ping_bot_shard(&fake, 0, 2).await;
    fake.wait_shard_ready(0).await;
    assert!(!fake.is_shard_connected(1));
    let one = start_ping_bot_shard(&fake, 1, 2).await;
    fake.wait_shard_ready(1).await;
    assert_eq!(fake.connected_shards(), vec![(0, 2), (1, 2)]);
    assert_eq!(fake.last_identify().unwrap()["shard"], json!([1, 2]));

    let in_1 = TestUser::member(ALICE, "alice");
    let in_2 = TestUser::member(BOB, "bob").in_guild(FakeDiscord::GUILD_2_ID);
    let i = ping(&fake, &in_1).await;
    assert_eq!(fake.dispatched_to(&i), Some(1));
    let i = ping(&fake, &in_2).await;
    assert_eq!(fake.dispatched_to(&i), Some(0));

    // A DM has no guild: Discord sends it on shard 0.
    let dm = UserId::new(ALICE)
        .create_dm_channel(&zero.http)
        .await
        .unwrap();
    dm.say(&zero.http, "hi").await.unwrap();
    let message = fake.dm_messages(ALICE).remove(0);
    let i = fake.press_button_in_dm(&in_1, &message, "nothing").await;
    assert_eq!(fake.dispatched_to(&i), Some(0));

    // Shard 1 resumes its own session; shard 0's connection is untouched.
    let resumes = fake.resumes();
    fake.disconnect_shard(1);
    assert!(fake.is_shard_connected(0));
    fake.wait_until("shard 1 resumes", |f| {
        f.resumes() > resumes && f.is_shard_connected(1)
    })
    .await;
    assert_eq!(fake.connected_shards(), vec![(0, 2), (1, 2)]);
    let i = ping(&fake, &in_1).await;
    assert_eq!(fake.dispatched_to(&i), Some(1));

    one.shutdown().await;
    fake.wait_until("shard 1 disconnects", |f| !f.is_shard_connected(1))
        .await;
    // Shard 0 still answers its guild.
    let i = ping(&fake, &in_2).await;
    assert_eq!(fake.dispatched_to(&i), Some(0));
    zero.shutdown().await;
    fake.wait_until("both are gone", |f| !f.is_connected())
        .await;
}

/// A bot's interaction callback, sent as serenity sends it.
async fn answer(
    fake: &FakeDiscord,
    i: &support::fake_discord::Interaction,
    response: CreateInteractionResponse,
) {
    http(fake)
        .create_interaction_response(InteractionId::new(i.id), &i.token, &response, vec![])
        .await
        .expect("the callback is accepted");
}

#[tokio::test]
async fn a_member_sees_only_their_own_ephemeral_messages_dms_and_modals() {
    let fake = FakeDiscord::start().await;
    let (alice, bob) = (
        TestUser::admin(ALICE, "alice"),
        TestUser::member(BOB, "bob"),
    );
    let channel = 4_000_000_000_000_002;
    fake.add_channel(channel, "approvals");

    // Alice's command in #approvals is answered ephemerally there, with a button.
    let (i, _) = fake.command_payload(&alice, Some(channel), "app", Some("create"), vec![]);
    let row = CreateActionRow::Buttons(vec![CreateButton::new("kg:press").label("Press")]);
    let reply = CreateInteractionResponseMessage::new()
        .content("only alice")
        .ephemeral(true)
        .components(vec![row]);
    answer(&fake, &i, CreateInteractionResponse::Message(reply)).await;
    let id = fake.message_of(&i).expect("the reply")["id"]
        .as_str()
        .and_then(|id| id.parse::<u64>().ok())
        .expect("its id");
    let shown = |user: &TestUser| {
        fake.view(FakeDiscord::GUILD_ID, user)["messages"][channel.to_string()].clone()
    };
    assert_eq!(shown(&alice)[0]["content"], "only alice");
    assert_eq!(shown(&alice)[0]["interaction"]["command"], "app create");
    assert_eq!(
        shown(&bob),
        json!([]),
        "bob does not see alice's ephemeral reply"
    );
    assert!(fake.message_seen_by(BOB, id).is_none());
    assert!(
        fake.component_payload(&bob, id, "kg:press", None).is_err(),
        "nor press its button"
    );
    assert!(
        fake.component_payload(&alice, id, "kg:nothing", None)
            .is_err(),
        "no such button"
    );
    let (_, press) = fake
        .component_payload(&alice, id, "kg:press", None)
        .expect("alice presses her button");
    assert_eq!(press["channel_id"], channel.to_string());

    // A DM is its recipient's alone.
    let dm = ChannelId::new(fake.open_dm_channel(ALICE));
    let secret = dm
        .send_message(&http(&fake), CreateMessage::new().content("alice's secret"))
        .await
        .expect("a DM");
    assert_eq!(
        fake.view(FakeDiscord::GUILD_ID, &alice)["dm"]["messages"][0]["content"],
        "alice's secret"
    );
    assert!(fake.message_seen_by(BOB, secret.id.get()).is_none());
    assert_eq!(
        fake.view(FakeDiscord::GUILD_ID, &bob)["dm"]["messages"],
        json!([])
    );

    // A modal opened in #approvals is hers, checked as Discord's client checks it, and its
    // submit comes from #approvals with every input, in the modal's order.
    let (i, _) = fake.command_payload(&alice, Some(channel), "app", Some("create"), vec![]);
    let modal = CreateModal::new("kg:form", "Form").components(vec![
        CreateActionRow::InputText(
            CreateInputText::new(InputTextStyle::Short, "Name", "name").max_length(5),
        ),
        CreateActionRow::InputText(
            CreateInputText::new(InputTextStyle::Paragraph, "Notes", "notes").required(false),
        ),
    ]);
    answer(&fake, &i, CreateInteractionResponse::Modal(modal)).await;
    assert_eq!(
        fake.view(FakeDiscord::GUILD_ID, &alice)["modal"]["custom_id"],
        "kg:form"
    );
    assert!(fake.view(FakeDiscord::GUILD_ID, &bob)["modal"].is_null());
    let fields = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<std::collections::HashMap<_, _>>()
    };
    for refused in [
        fields(&[]),
        fields(&[("name", "too long")]),
        fields(&[("name", "ok"), ("x", "?")]),
    ] {
        assert!(
            fake.modal_submit_payload(&alice, i.id, &refused).is_err(),
            "{refused:?}"
        );
    }
    assert!(
        fake.modal_submit_payload(&bob, i.id, &fields(&[("name", "ok")]))
            .is_err()
    );
    let (submitted, submit) = fake
        .modal_submit_payload(&alice, i.id, &fields(&[("name", "ok")]))
        .expect("a valid submit");
    assert!(
        !fake.view(FakeDiscord::GUILD_ID, &alice)["modal"].is_null(),
        "unanswered, the form stays open"
    );
    let thanks = CreateInteractionResponseMessage::new().content("saved");
    answer(
        &fake,
        &submitted,
        CreateInteractionResponse::Message(thanks),
    )
    .await;
    assert_eq!(submit["channel_id"], channel.to_string());
    let inputs: Vec<_> = submit["data"]["components"]
        .as_array()
        .expect("rows")
        .iter()
        .map(|row| {
            (
                row["components"][0]["custom_id"].clone(),
                row["components"][0]["value"].clone(),
            )
        })
        .collect();
    assert_eq!(
        inputs,
        vec![(json!("name"), json!("ok")), (json!("notes"), json!(""))]
    );
    parse_interaction(&submit);
    assert!(
        fake.view(FakeDiscord::GUILD_ID, &alice)["modal"].is_null(),
        "the bot's answer closes it"
    );
}

#[tokio::test]
async fn the_emulator_answers_the_bot_only() {
    let fake = FakeDiscord::start().await;
    let client = reqwest::Client::new();
    let url = format!("{}/api/v10/users/@me", fake.base_url());
    let status = |r: reqwest::Response| r.status().as_u16();
    assert_eq!(
        status(client.get(&url).send().await.expect("the bot's call")),
        200
    );
    let from_a_page = client
        .get(&url)
        .header("Origin", "https://evil.example")
        .send();
    assert_eq!(status(from_a_page.await.expect("a page's call")), 403);
    let rebound = client.get(&url).header("Host", "evil.example").send();
    assert_eq!(status(rebound.await.expect("a rebound call")), 403);
}
