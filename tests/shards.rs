//! End to end: which shards a process runs, and who registers the commands.

mod support;

use keygate::config::Config;
use keygate::discord;
use serde_json::json;
use support::TestDb;
use support::bot::Harness;
use support::fake_discord::FakeDiscord;

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
