//! The binary as an operator meets it: configuration errors and `migrate`.

use std::process::Command;

fn keygate(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_keygate"));
    // A clean environment in an empty folder: no .env, no inherited settings.
    cmd.current_dir(dir)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default());
    cmd
}

#[test]
fn run_without_a_token_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path()).output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("DISCORD_TOKEN is not set"), "{stderr}");
    assert!(
        !dir.path().join("keygate.db").exists(),
        "nothing is created before the configuration is complete"
    );
}

#[test]
fn a_bad_setting_names_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path())
        .env("DISCORD_TOKEN", "x")
        .env("HTTP_ADDR", "nowhere")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("HTTP_ADDR is invalid"), "{stderr}");
}

#[test]
fn migrate_creates_the_sqlite_database() {
    let dir = tempfile::tempdir().unwrap();
    let out = keygate(dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("keygate.db").exists());
    // A second run finds nothing to do and still succeeds.
    let again = keygate(dir.path()).arg("migrate").output().unwrap();
    assert!(again.status.success());
}

#[test]
fn dotenv_in_the_working_folder_is_read() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "DATABASE_URL=sqlite://from-dotenv.db\n",
    )
    .unwrap();
    let out = keygate(dir.path()).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(dir.path().join("from-dotenv.db").exists());
}
