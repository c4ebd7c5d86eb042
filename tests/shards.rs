//! End to end: which shards a process runs, and who registers the commands.

mod support;

use keygate::config::Config;
use keygate::discord;
use serde_json::{Value, json};
use support::TestDb;
use support::bot::{ALICE_ID, Harness, ShardProcess, alice, bob, component, shown, text, token};
use support::fake_discord::{FakeDiscord, TestUser};
use support::flows::to_review;

fn config(fake: &FakeDiscord, shards: &[(&'static str, &'static str)]) -> Config {
    let base = fake.base_url();
    let shards = shards.to_vec();
    Config::from_lookup(move |name| match name {
        "DISCORD_TOKEN" => Some("fake-bot-token".into()),
        "DISCORD_API_URL" => Some(base.clone()),
        "HTTP_ADDR" => Some(String::new()),
        _ => shards
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_owned()),
    })
    .expect("config")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn by_default_a_process_runs_the_shards_discord_recommends() {
    let h = Harness::start().await;
    let identify = h.fake.last_identify().expect("an IDENTIFY");
    // The fake recommends one shard (GET /gateway/bot).
    assert_eq!(identify["shard"], json!([0, 1]), "{identify:#}");
    assert!(!h.fake.commands().is_empty(), "shard 0's process registers");
    h.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_running_shard_1_of_2_identifies_so_and_registers_nothing() {
    let fake = FakeDiscord::start().await;
    let db = TestDb::sqlite().await;
    let config = config(&fake, &[("SHARD_COUNT", "2"), ("SHARD_IDS", "1")]);
    let bot = discord::start(&config, db.service.clone())
        .await
        .expect("start");
    fake.wait_until("the shard identifies", |f| f.last_identify().is_some())
        .await;
    let identify = fake.last_identify().unwrap();
    // One shard, shard 1: a range read one too long would start shard 2 too.
    assert_eq!(identify["shard"], json!([1, 2]), "{identify:#}");
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    assert!(
        fake.commands().is_empty(),
        "only shard 0's process registers the commands"
    );
    bot.shutdown().await;
    db.close().await;
}

/// `/app list` as `user`; returns the shard it went to and the list's title.
async fn app_list(fake: &FakeDiscord, user: &TestUser) -> (Option<u32>, String) {
    let i = fake.slash_command(user, "app", Some("list"), vec![]).await;
    let shown = shown(fake, &i, 4).await;
    let title = shown["embeds"][0]["title"]
        .as_str()
        .unwrap_or("")
        .to_owned();
    (fake.dispatched_to(&i), title)
}

/// Two processes, shards 0 and 1 of 2, on one fake and one store: each guild is served by
/// the process running its shard, a DM by shard 0's, and killing one process leaves the other
/// guild served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_processes_serve_a_guild_each_and_shard_0_gets_the_dms() {
    let fake = FakeDiscord::start().await;
    let db = TestDb::sqlite().await;
    let zero = ShardProcess::start(&fake, &db.service, 2, 0..=0).await;
    let one = ShardProcess::start(&fake, &db.service, 2, 1..=1).await;
    assert_eq!(fake.connected_shards(), vec![(0, 2), (1, 2)]);
    let commands = fake.commands();
    assert!(!commands.is_empty());
    assert!(
        commands.iter().all(|c| c.get("guild_id").is_none()),
        "registered globally, so both guilds have them"
    );

    // GUILD_ID is shard 1's, GUILD_2_ID shard 0's.
    let in_1 = alice();
    let in_2 = bob().in_guild(FakeDiscord::GUILD_2_ID);
    assert_eq!(
        app_list(&fake, &in_1).await,
        (Some(1), "Applications (0)".to_owned())
    );
    assert_eq!(
        app_list(&fake, &in_2).await,
        (Some(0), "Applications (0)".to_owned())
    );

    // An application registered in the first guild (by shard 1's process)…
    let review = to_review(&fake, &in_1, "Sharded App").await;
    let i = fake
        .press_button(&in_1, &review, &component(&review, "submit"))
        .await;
    assert_eq!(fake.dispatched_to(&i), Some(1));
    let done = shown(&fake, &i, 7).await;
    assert!(text(&done).contains("sent to your DMs"), "{done:#}");
    fake.wait_until("the credentials DM", |f| {
        f.dm_messages(ALICE_ID)
            .first()
            .is_some_and(|m| text(m).contains("Secret: `kgs_"))
    })
    .await;
    let dm = fake.dm_messages(ALICE_ID).remove(0);

    // …gets its key from its DM's button, which Discord sends on shard 0.
    let i = fake
        .press_button_in_dm(&in_1, &dm, &component(&dm, "genkey"))
        .await;
    assert_eq!(fake.dispatched_to(&i), Some(0));
    let r: Value = fake.response(&i).await;
    assert!(r["type"] == 4 || r["type"] == 5, "answered: {r:#}");
    fake.wait_until("the key's own DM", |f| {
        f.dm_messages(ALICE_ID)
            .iter()
            .any(|m| text(m).contains("API key: `kg_"))
    })
    .await;
    let key_dm = fake
        .dm_messages(ALICE_ID)
        .into_iter()
        .find(|m| text(m).contains("API key: `kg_"))
        .expect("the key's DM");
    assert!(token(&text(&key_dm), "kg_").is_some());

    // Shard 1's process killed: the other guild is still served, by shard 0's.
    one.kill().await;
    assert_eq!(fake.connected_shards(), vec![(0, 2)]);
    assert_eq!(
        app_list(&fake, &in_2).await,
        (Some(0), "Applications (0)".to_owned())
    );
    // A new process for shard 1 serves the first guild again, from the shared store.
    let one = ShardProcess::start(&fake, &db.service, 2, 1..=1).await;
    assert_eq!(
        app_list(&fake, &in_1).await,
        (Some(1), "Applications (1)".to_owned())
    );

    one.stop().await;
    zero.stop().await;
    assert!(!fake.is_connected());
    db.close().await;
}
