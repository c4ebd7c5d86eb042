//! The key lifecycle on both stores: rotation and its grace, revocation, expiry warnings, lost credentials.

mod support;

use chrono::TimeDelta;
use keygate::domain::audit::AuditKind;
use keygate::domain::credentials::ApplicationId;
use keygate::domain::lifecycle::{CredentialKind, Grace, StoredCredential};
use keygate::domain::settings::GuildSettings;
use keygate::domain::verification::{Expectations, VerifyCode};
use keygate::service::{Actor, NewCredential, Service, ServiceError};
use support::*;

on_both_stores!(
    a_rotated_key_works_through_its_grace_then_expires,
    a_rotated_secret_works_through_its_grace_then_expires,
    rotating_again_ends_the_earlier_grace_at_once,
    a_grace_never_outlives_the_key,
    fifty_concurrent_rotations_make_one_key,
    only_the_owner_an_approver_or_a_manager_may_rotate,
    revoke_needs_the_name_and_stops_every_credential,
    expiry_warnings_go_out_once_per_stage_across_a_restart,
    a_stage_already_running_at_issue_is_skipped,
    an_expiry_is_recorded_once,
    a_credential_that_never_reached_its_owner_is_issued_again,
    issuing_again_keeps_the_earlier_grace,
    a_failed_warning_backs_off,
    rotating_an_expired_key_leaves_it_expired,
);

fn manager() -> Actor {
    Actor::manager(BOB)
}

async fn current(db: &TestDb, app: &ApplicationId, kind: CredentialKind) -> StoredCredential {
    let mut tx = db.store.read().await.unwrap();
    let c = tx.current_credential(app, kind).await.unwrap();
    tx.rollback().await.unwrap();
    c.expect("a current credential")
}

fn exposed(new: &NewCredential) -> String {
    new.expose().to_owned()
}

async fn audit_kinds(db: &TestDb, app: &ApplicationId) -> Vec<AuditKind> {
    let mut tx = db.store.read().await.unwrap();
    let events = tx.audit_events(GUILD, Some(app), 100).await.unwrap();
    tx.rollback().await.unwrap();
    events.into_iter().rev().map(|e| e.kind).collect()
}

/// Every due expiry warning, claimed as the worker does before sending.
async fn claim_all(svc: &Service) -> Vec<keygate::service::ClaimedWarning> {
    let mut claimed = Vec::new();
    for due in svc.due_warnings().await.unwrap() {
        claimed.extend(svc.claim_warning(due).await.unwrap());
    }
    claimed
}

async fn authenticate(svc: &Service, app: &ApplicationId, secret: &str) -> VerifyCode {
    svc.authenticate_app(app.as_str(), secret, &Expectations::default())
        .await
        .unwrap()
        .code
}

async fn a_rotated_key_works_through_its_grace_then_expires(db: &TestDb) {
    let svc = &db.service;
    for grace in [Grace::Hour, Grace::Day, Grace::Week, Grace::Month] {
        let (app, old_key) = active_app(db, &format!("Grace {}", grace.as_str())).await;
        let old = current(db, &app, CredentialKind::Key).await;
        let r = svc
            .rotate(Some(GUILD), &old.id, grace, manager())
            .await
            .unwrap();
        let new_key = exposed(&r.new);
        assert_eq!(r.grace_ends_at, db.clock.now() + grace.duration());

        let before = svc
            .verify_key(old_key.expose(), &Expectations::default())
            .await
            .unwrap();
        assert_eq!(before.code, VerifyCode::Valid, "{grace:?}");
        let g = before.credential.unwrap().grace.clone().expect("in grace");
        assert_eq!(g.replaced_by, r.new_id);
        assert_eq!(g.ends_at, r.grace_ends_at);
        assert_eq!(verify(svc, &new_key).await, VerifyCode::Valid);

        db.clock.advance(grace.duration() - TimeDelta::seconds(1));
        assert_eq!(verify(svc, old_key.expose()).await, VerifyCode::Valid);
        db.clock.advance(TimeDelta::seconds(1));
        assert_eq!(
            verify(svc, old_key.expose()).await,
            VerifyCode::Expired,
            "{grace:?}: the grace ran out"
        );
        assert_eq!(verify(svc, &new_key).await, VerifyCode::Valid);
        assert!(audit_kinds(db, &app).await.contains(&AuditKind::KeyRotated));
    }
    let (app, old_key) = active_app(db, "Grace now").await;
    let old = current(db, &app, CredentialKind::Key).await;
    let r = svc
        .rotate(Some(GUILD), &old.id, Grace::Now, manager())
        .await
        .unwrap();
    assert_eq!(
        verify(svc, old_key.expose()).await,
        VerifyCode::Revoked,
        "cut off by grace:now"
    );
    assert_eq!(verify(svc, &exposed(&r.new)).await, VerifyCode::Valid);
}

async fn a_rotated_secret_works_through_its_grace_then_expires(db: &TestDb) {
    let svc = &db.service;
    for grace in [Grace::Hour, Grace::Week, Grace::Month] {
        let submitted = submit(svc, ALICE, &format!("Secret {}", grace.as_str())).await;
        let app = submitted.app.id.clone();
        let old_secret = submitted.credentials.unwrap().secret.expose().to_owned();
        let old = current(db, &app, CredentialKind::Secret).await;
        let r = svc
            .rotate(Some(GUILD), &old.id, grace, Actor::member(ALICE))
            .await
            .unwrap();
        db.clock.advance(grace.duration() - TimeDelta::seconds(1));
        assert_eq!(
            authenticate(svc, &app, &old_secret).await,
            VerifyCode::Valid
        );
        db.clock.advance(TimeDelta::seconds(1));
        assert_eq!(
            authenticate(svc, &app, &old_secret).await,
            VerifyCode::Expired,
            "{grace:?}"
        );
        assert_eq!(
            authenticate(svc, &app, &exposed(&r.new)).await,
            VerifyCode::Valid
        );
    }
    let submitted = submit(svc, ALICE, "Secretive").await;
    let app = submitted.app.id.clone();
    let old_secret = submitted.credentials.unwrap().secret.expose().to_owned();
    let old = current(db, &app, CredentialKind::Secret).await;
    let r = svc
        .rotate(Some(GUILD), &old.id, Grace::Day, Actor::member(ALICE))
        .await
        .unwrap();
    let new_secret = exposed(&r.new);
    assert!(new_secret.starts_with("kgs_"));
    let during = svc
        .authenticate_app(app.as_str(), &old_secret, &Expectations::default())
        .await
        .unwrap();
    assert_eq!(during.code, VerifyCode::Valid);
    assert_eq!(
        during
            .credential
            .unwrap()
            .grace
            .as_ref()
            .unwrap()
            .replaced_by,
        r.new_id
    );
    assert_eq!(
        authenticate(svc, &app, &new_secret).await,
        VerifyCode::Valid
    );
    db.clock.advance(TimeDelta::hours(24));
    assert_eq!(
        authenticate(svc, &app, &old_secret).await,
        VerifyCode::Expired
    );
    assert_eq!(
        authenticate(svc, &app, &new_secret).await,
        VerifyCode::Valid
    );

    let newest = current(db, &app, CredentialKind::Secret).await;
    svc.rotate(Some(GUILD), &newest.id, Grace::Now, Actor::member(ALICE))
        .await
        .unwrap();
    assert_eq!(
        authenticate(svc, &app, &new_secret).await,
        VerifyCode::Revoked
    );
    assert!(
        audit_kinds(db, &app)
            .await
            .contains(&AuditKind::SecretRotated)
    );
}

async fn rotating_again_ends_the_earlier_grace_at_once(db: &TestDb) {
    let svc = &db.service;
    let (app, first) = active_app(db, "Twice").await;
    let k1 = current(db, &app, CredentialKind::Key).await;
    let r1 = svc
        .rotate(Some(GUILD), &k1.id, Grace::Week, manager())
        .await
        .unwrap();
    let plan = svc
        .plan_rotation(
            &svc.app(GUILD, &app).await.unwrap(),
            CredentialKind::Key,
            Grace::Week,
            manager(),
        )
        .await
        .unwrap();
    assert_eq!(plan.current.id, r1.new_id, "bound to the key current now");
    assert_eq!(
        plan.ending_grace.as_ref().map(|c| c.id.as_str()),
        Some(k1.id.as_str()),
        "the confirmation says the earlier grace ends"
    );
    let r2 = svc
        .rotate(Some(GUILD), &r1.new_id, Grace::Week, manager())
        .await
        .unwrap();
    assert_eq!(r2.ended.len(), 1);
    assert_eq!(
        verify(svc, first.expose()).await,
        VerifyCode::Revoked,
        "an app has at most one key in grace"
    );
    assert_eq!(verify(svc, &exposed(&r1.new)).await, VerifyCode::Valid);
    assert_eq!(verify(svc, &exposed(&r2.new)).await, VerifyCode::Valid);

    // A confirmation bound to a key no longer current changes nothing and says who.
    let before = db.row_counts().await;
    match svc
        .rotate(Some(GUILD), &k1.id, Grace::Week, Actor::member(ALICE))
        .await
    {
        Err(ServiceError::AlreadyRotated { by }) => assert_eq!(by, Some(BOB)),
        other => panic!("{other:?}"),
    }
    assert_eq!(db.row_counts().await, before);
}

async fn a_grace_never_outlives_the_key(db: &TestDb) {
    let svc = &db.service;
    let settings = GuildSettings {
        key_lifetime: TimeDelta::days(2),
        ..GuildSettings::defaults(GUILD)
    };
    svc.save_settings(Actor::member(ALICE), &settings)
        .await
        .unwrap();
    let (app, key) = active_app(db, "Short Life").await;
    let old = current(db, &app, CredentialKind::Key).await;
    assert_eq!(old.expires_at, Some(db.clock.now() + TimeDelta::days(2)));
    let r = svc
        .rotate(Some(GUILD), &old.id, Grace::Month, manager())
        .await
        .unwrap();
    assert_eq!(Some(r.grace_ends_at), old.expires_at);
    db.clock.advance(TimeDelta::days(2));
    assert_eq!(verify(svc, key.expose()).await, VerifyCode::Expired);
}

async fn fifty_concurrent_rotations_make_one_key(db: &TestDb) {
    let (app, _) = active_app(db, "Stampede").await;
    let old = current(db, &app, CredentialKind::Key).await;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let svc = db.service.clone();
        let id = old.id.clone();
        tasks.spawn(async move { svc.rotate(Some(GUILD), &id, Grace::Week, manager()).await });
    }
    let (mut rotated, mut refused) = (0, 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(_) => rotated += 1,
            Err(ServiceError::AlreadyRotated { by }) => {
                assert_eq!(by, Some(BOB));
                refused += 1
            }
            Err(e) => panic!("unexpected: {e}"),
        }
    }
    assert_eq!((rotated, refused), (1, 49));
    let mut tx = db.store.read().await.unwrap();
    let keys = tx.credentials_of(&app, CredentialKind::Key).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(keys.len(), 2, "one new key");
}

async fn only_the_owner_an_approver_or_a_manager_may_rotate(db: &TestDb) {
    let svc = &db.service;
    let (app, _) = active_app(db, "Guarded").await;
    let old = current(db, &app, CredentialKind::Key).await;
    let before = db.row_counts().await;
    assert!(matches!(
        svc.rotate(Some(GUILD), &old.id, Grace::Week, Actor::member(CAROL))
            .await,
        Err(ServiceError::NotAllowed)
    ));
    assert!(matches!(
        svc.rotate(Some(GuildId(GUILD.0 + 1)), &old.id, Grace::Week, manager())
            .await,
        Err(ServiceError::AppNotFound)
    ));
    assert_eq!(db.row_counts().await, before);
    for actor in [Actor::member(ALICE), Actor::approver(CAROL), manager()] {
        let c = current(db, &app, CredentialKind::Key).await;
        svc.rotate(Some(GUILD), &c.id, Grace::Now, actor)
            .await
            .unwrap();
    }
    // No key yet: the confirmation points to Generate API Key.
    let fresh = submit(svc, ALICE, "Keyless").await.app;
    assert!(matches!(
        svc.plan_rotation(&fresh, CredentialKind::Key, Grace::Week, manager())
            .await,
        Err(ServiceError::NoKeyYet)
    ));
}

use keygate::domain::ids::GuildId;

async fn revoke_needs_the_name_and_stops_every_credential(db: &TestDb) {
    let svc = &db.service;
    let submitted = submit(svc, ALICE, "Front Desk").await;
    let app = submitted.app.id.clone();
    let secret = submitted.credentials.unwrap().secret.expose().to_owned();
    let key = svc
        .generate_api_key(GUILD, &app, Actor::member(ALICE))
        .await
        .unwrap()
        .key;
    let before = db.row_counts().await;
    assert!(matches!(
        svc.revoke(GUILD, &app, manager(), "Front Desks").await,
        Err(ServiceError::NameMismatch)
    ));
    assert!(matches!(
        svc.revoke(GUILD, &app, Actor::member(CAROL), "Front Desk")
            .await,
        Err(ServiceError::NotAllowed)
    ));
    assert_eq!(db.row_counts().await, before, "a refusal changes nothing");
    assert_eq!(verify(svc, key.expose()).await, VerifyCode::Valid);

    // The name is compared as names are: case does not matter.
    svc.revoke(GUILD, &app, manager(), "front desk")
        .await
        .unwrap();
    assert_eq!(verify(svc, key.expose()).await, VerifyCode::Revoked);
    assert_eq!(authenticate(svc, &app, &secret).await, VerifyCode::Revoked);
    assert!(audit_kinds(db, &app).await.contains(&AuditKind::KeyRevoked));
    // A revoked app's name is free again.
    let again = submit(svc, ALICE, "Front Desk").await;
    assert_ne!(again.app.id, app);
}

async fn key_lasting(db: &TestDb, name: &str, days: i64) -> (ApplicationId, StoredCredential) {
    let settings = GuildSettings {
        key_lifetime: TimeDelta::days(days),
        ..GuildSettings::defaults(GUILD)
    };
    db.service
        .save_settings(Actor::member(ALICE), &settings)
        .await
        .unwrap();
    let (app, _) = active_app(db, name).await;
    let key = current(db, &app, CredentialKind::Key).await;
    (app, key)
}

async fn expiry_warnings_go_out_once_per_stage_across_a_restart(db: &TestDb) {
    let svc = &db.service;
    let (_, key) = key_lasting(db, "Warned", 40).await;
    let expires = key.expires_at.unwrap();
    assert!(claim_all(svc).await.is_empty());
    db.clock.advance(TimeDelta::days(10));
    let w = claim_all(svc).await;
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].days, 30);
    // Claimed: neither this process nor another takes it again meanwhile.
    assert!(claim_all(svc).await.is_empty());
    let other = db.restarted_service();
    assert!(claim_all(&other).await.is_empty());
    // The claimant died before it sent anything: the lease lapses, the
    // warning goes out from another process, with the same nonce.
    db.clock.advance(TimeDelta::seconds(61));
    let again = claim_all(&other).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].nonce(), w[0].nonce());
    assert!(again[0].nonce().len() <= 25);
    other.warning_sent(&again[0], false).await.unwrap();
    // The first one's late completion writes nothing twice.
    svc.warning_sent(&w[0], false).await.unwrap();
    assert!(claim_all(svc).await.is_empty());
    let restarted = db.restarted_service();
    assert!(claim_all(&restarted).await.is_empty());

    db.clock.set(expires - TimeDelta::days(5));
    let w = claim_all(&restarted).await;
    assert_eq!(w.iter().map(|w| w.days).collect::<Vec<_>>(), vec![7]);
    restarted.warning_sent(&w[0], true).await.unwrap();
    db.clock.set(expires - TimeDelta::hours(3));
    let w = claim_all(svc).await;
    assert_eq!(w.iter().map(|w| w.days).collect::<Vec<_>>(), vec![1]);
    svc.warning_sent(&w[0], false).await.unwrap();
    db.clock.set(expires + TimeDelta::days(1));
    assert!(claim_all(svc).await.is_empty());
    let kinds = audit_kinds(db, &key.app_id).await;
    assert_eq!(
        kinds
            .iter()
            .filter(|k| **k == AuditKind::ExpiryWarning)
            .count(),
        1,
        "only the warning that could not reach the owner goes to the audit channel"
    );
}

async fn a_stage_already_running_at_issue_is_skipped(db: &TestDb) {
    let svc = &db.service;
    let (_, key) = key_lasting(db, "Ten Days", 10).await;
    let expires = key.expires_at.unwrap();
    db.clock.advance(TimeDelta::days(2));
    assert!(
        claim_all(svc).await.is_empty(),
        "no \"30 days left\" for a 10-day key"
    );
    db.clock.set(expires - TimeDelta::days(7));
    let w = claim_all(svc).await;
    assert_eq!(w.iter().map(|w| w.days).collect::<Vec<_>>(), vec![7]);
    svc.warning_sent(&w[0], false).await.unwrap();
    // Down over every stage of another key: only the most urgent goes out.
    let (_, other) = key_lasting(db, "Forty Days", 40).await;
    db.clock
        .set(other.expires_at.unwrap() - TimeDelta::hours(2));
    let w = claim_all(svc).await;
    let days: Vec<(String, i64)> = w.iter().map(|w| (w.due.key.id.clone(), w.days)).collect();
    assert_eq!(days, vec![(other.id.clone(), 1)]);
    svc.warning_sent(&w[0], false).await.unwrap();
    db.clock.advance(TimeDelta::minutes(5));
    assert!(claim_all(svc).await.is_empty());
}

async fn an_expiry_is_recorded_once(db: &TestDb) {
    let svc = &db.service;
    let (app, key) = key_lasting(db, "Mortal", 3).await;
    assert_eq!(svc.record_expiries().await.unwrap(), 0);
    db.clock.set(key.expires_at.unwrap());
    assert_eq!(svc.record_expiries().await.unwrap(), 1);
    assert_eq!(svc.record_expiries().await.unwrap(), 0);
    assert_eq!(db.restarted_service().record_expiries().await.unwrap(), 0);
    assert_eq!(
        audit_kinds(db, &app)
            .await
            .iter()
            .filter(|k| **k == AuditKind::KeyExpired)
            .count(),
        1
    );
}

async fn a_credential_that_never_reached_its_owner_is_issued_again(db: &TestDb) {
    let svc = &db.service;
    let submitted = submit(svc, ALICE, "Lost In Transit").await;
    let app = submitted.app.id.clone();
    let lost = submitted.credentials.unwrap();
    // While its delivery may still be under way, it is not replaced.
    assert!(matches!(
        svc.issue_credentials(GUILD, &app).await,
        Err(ServiceError::CredentialsBeingDelivered)
    ));
    db.clock.advance(svc.policy().stall_grace);
    let again = svc.issue_credentials(GUILD, &app).await.unwrap();
    assert_ne!(again.secret_id, lost.secret_id);
    assert_eq!(
        authenticate(svc, &app, lost.secret.expose()).await,
        VerifyCode::Revoked
    );
    assert_eq!(
        authenticate(svc, &app, again.secret.expose()).await,
        VerifyCode::Valid
    );
    svc.credential_shown(&again.secret_id).await.unwrap();
    assert!(matches!(
        svc.issue_credentials(GUILD, &app).await,
        Err(ServiceError::CredentialsAlreadyIssued)
    ));

    assert_eq!(
        audit_kinds(db, &app)
            .await
            .iter()
            .filter(|k| matches!(
                k,
                AuditKind::CredentialsIssued | AuditKind::CredentialReissued
            ))
            .count(),
        2,
        "one event per issue: the first, and the one in its place"
    );

    // The same for a key generated but never shown.
    let first = svc
        .generate_api_key(GUILD, &app, Actor::member(ALICE))
        .await
        .unwrap();
    assert!(matches!(
        svc.generate_api_key(GUILD, &app, Actor::member(ALICE))
            .await,
        Err(ServiceError::KeyAlreadyGenerated)
    ));
    db.clock.advance(svc.policy().stall_grace);
    let second = svc
        .generate_api_key(GUILD, &app, Actor::member(ALICE))
        .await
        .unwrap();
    assert_eq!(verify(svc, first.key.expose()).await, VerifyCode::Revoked);
    assert_eq!(verify(svc, second.key.expose()).await, VerifyCode::Valid);
    assert!(
        audit_kinds(db, &app)
            .await
            .contains(&AuditKind::CredentialReissued)
    );
}

async fn issuing_again_keeps_the_earlier_grace(db: &TestDb) {
    let svc = &db.service;
    let (app, k1) = active_app(db, "Grace Kept").await;
    let old = current(db, &app, CredentialKind::Key).await;
    let r = svc
        .rotate(Some(GUILD), &old.id, Grace::Week, manager())
        .await
        .unwrap();
    // The rotated key never reached its owner.
    assert!(matches!(
        svc.issue_again(Some(GUILD), &r.new_id, Actor::member(ALICE))
            .await,
        Err(ServiceError::CredentialsBeingDelivered)
    ));
    db.clock.advance(svc.policy().stall_grace);
    assert!(matches!(
        svc.issue_again(Some(GUILD), &r.new_id, manager()).await,
        Err(ServiceError::NotOwner)
    ));
    let again = svc
        .issue_again(Some(GUILD), &r.new_id, Actor::member(ALICE))
        .await
        .unwrap();
    assert_eq!(verify(svc, &exposed(&r.new)).await, VerifyCode::Revoked);
    assert_eq!(verify(svc, &exposed(&again.new)).await, VerifyCode::Valid);
    let first = svc
        .verify_key(k1.expose(), &Expectations::default())
        .await
        .unwrap();
    assert_eq!(
        first.code,
        VerifyCode::Valid,
        "the first key keeps its grace"
    );
    assert_eq!(
        first
            .credential
            .unwrap()
            .grace
            .as_ref()
            .unwrap()
            .replaced_by,
        again.new_id,
        "and names the key that took the lost one's place"
    );
    svc.credential_shown(&again.new_id).await.unwrap();
    db.clock.advance(svc.policy().stall_grace);
    assert!(matches!(
        svc.issue_again(Some(GUILD), &again.new_id, Actor::member(ALICE))
            .await,
        Err(ServiceError::AlreadyShown)
    ));
}

async fn a_failed_warning_backs_off(db: &TestDb) {
    let svc = &db.service;
    let (_, key) = key_lasting(db, "Flaky", 40).await;
    db.clock.set(key.expires_at.unwrap() - TimeDelta::days(30));
    let mut waits = Vec::new();
    for _ in 0..4 {
        let w = claim_all(svc).await.pop().expect("due");
        let retry_at = svc.warning_failed(&w, None).await.unwrap();
        let wait = retry_at - db.clock.now();
        assert!(claim_all(svc).await.is_empty(), "not before its next try");
        waits.push(wait);
        db.clock.set(retry_at);
    }
    for (n, wait) in waits.iter().enumerate() {
        let base = TimeDelta::seconds(1 << n);
        assert!(
            *wait >= base && *wait <= base + base / 4,
            "try {n} waited {wait}"
        );
    }
    // A 429 waits at least what Discord asked.
    let w = claim_all(svc).await.pop().expect("due");
    let retry_at = svc
        .warning_failed(&w, Some(std::time::Duration::from_secs(120)))
        .await
        .unwrap();
    assert!(retry_at - db.clock.now() >= TimeDelta::seconds(120));
    // Never more than 10 minutes apart.
    let mut w = w;
    w.due.failures = 40;
    let retry_at = svc.warning_failed(&w, None).await.unwrap();
    assert!(retry_at - db.clock.now() <= TimeDelta::minutes(10));
}

async fn rotating_an_expired_key_leaves_it_expired(db: &TestDb) {
    let svc = &db.service;
    let (app, _) = key_lasting(db, "Too Late Setup", 2).await;
    let _ = app;
    let (app, key) = active_app(db, "Too Late").await;
    let old = current(db, &app, CredentialKind::Key).await;
    db.clock.advance(TimeDelta::days(3));
    let r = svc
        .rotate(Some(GUILD), &old.id, Grace::Week, manager())
        .await
        .unwrap();
    assert_eq!(verify(svc, key.expose()).await, VerifyCode::Expired);
    assert_eq!(verify(svc, &exposed(&r.new)).await, VerifyCode::Valid);
}

// ---- end to end: the real bot against the fake Discord ------------------------------------

use keygate::domain::ids::{ChannelId, UserId};
use keygate::store::Backend;
use serde_json::{Value, json};
use support::bot::{Harness, alice, bob, choice, component, text, token, wait_until_no_dm_holds};
use support::fake_discord::{FakeDiscord, TestUser};
use support::flows::{submit_and_get_dm, to_review};

end_to_end_on_both_stores!(
    a_rotation_confirmed_by_a_manager_reaches_the_owner,
    fifty_concurrent_confirm_presses_make_one_key,
    revoke_asks_for_the_name_then_stops_every_credential,
    expiry_warnings_reach_the_owner_once_with_rotate_now,
    an_unreachable_owner_stops_a_rotation_before_anything_changes,
    an_owner_gets_a_credential_that_never_reached_them_issued_again,
    a_key_generated_at_minute_14_does_not_keep_the_secret_past_15,
    a_crash_between_issuing_and_showing_the_secret_is_recovered,
    a_revoked_app_gets_no_late_delivery,
    a_database_from_before_the_lifecycle_migrates_straight,
);

const AUDIT: u64 = 4_000_000_000_000_009;
const EPHEMERAL: u64 = 1 << 6;

async fn with_audit_channel(backend: Backend, manual_clock: bool) -> Harness {
    let h = Harness::start_with(backend, manual_clock).await;
    h.fake.add_channel(AUDIT, "audit");
    let settings = GuildSettings {
        audit_channel: Some(ChannelId(AUDIT)),
        ..GuildSettings::defaults(GUILD)
    };
    h.service
        .save_settings(Actor::member(UserId(alice().id)), &settings)
        .await
        .unwrap();
    h
}

/// An app of Alice's with its key, made through the service the bot uses.
async fn app_with_key(h: &Harness, name: &str) -> (ApplicationId, String) {
    let app = submit(&h.service, ALICE, name).await.app;
    let key = h
        .service
        .generate_api_key(GUILD, &app.id, Actor::member(ALICE))
        .await
        .unwrap();
    (app.id, key.key.expose().to_owned())
}

/// `/app rotate` as `user`; returns the confirmation message.
async fn rotate_command(h: &Harness, user: &TestUser, app: &ApplicationId, grace: &str) -> Value {
    let options = vec![
        ("app", json!(app.as_str())),
        ("what", choice(&h.fake, "rotate", "what", "key")),
        ("grace", choice(&h.fake, "rotate", "grace", grace)),
    ];
    let i = h
        .fake
        .slash_command(user, "app", Some("rotate"), options)
        .await;
    assert_eq!(h.fake.response(&i).await["type"], 5, "deferred first");
    let confirmation = h.fake.followups(&i, 1).await.remove(0);
    assert_eq!(
        confirmation["flags"].as_u64().unwrap() & EPHEMERAL,
        EPHEMERAL
    );
    confirmation
}

fn bodies_to(fake: &FakeDiscord, channel: u64) -> Vec<String> {
    let prefix = format!("/channels/{channel}/messages");
    fake.requests()
        .into_iter()
        .filter(|r| r.path.starts_with(&prefix))
        .map(|r| r.body.to_string())
        .collect()
}

fn dms_with(fake: &FakeDiscord, user: u64, needle: &str) -> Vec<Value> {
    fake.dm_messages(user)
        .into_iter()
        .filter(|m| text(m).contains(needle))
        .collect()
}

async fn a_rotation_confirmed_by_a_manager_reaches_the_owner(backend: Backend) {
    let h = with_audit_channel(backend, false).await;
    let (app, old_key) = app_with_key(&h, "Rotating").await;
    let confirmation = rotate_command(&h, &bob(), &app, "1h").await;
    let asked = text(&confirmation);
    assert!(asked.contains("Rotate the **API key**"), "{asked}");
    assert!(asked.contains("keeps working until"), "{asked}");

    let i = h
        .fake
        .press_button(&bob(), &confirmation, &component(&confirmation, "confirm"))
        .await;
    assert_eq!(h.fake.response(&i).await["type"], 6, "acknowledged first");
    let user = alice().id;
    h.fake
        .wait_until("the new key reaches the owner", |f| {
            !dms_with(f, user, "API key: `kg_").is_empty()
        })
        .await;
    let dm = dms_with(&h.fake, user, "API key: `kg_").remove(0);
    let new_key = token(&text(&dm), "kg_").unwrap();
    assert!(text(&dm).contains("New API key"), "{dm:#}");
    assert!(
        dms_with(&h.fake, bob().id, "kg_").is_empty(),
        "never to the manager who confirmed"
    );
    h.fake
        .wait_until("the confirmation says what happened", |f| {
            f.message_of(&i)
                .is_some_and(|m| text(&m).contains("✅ Rotated"))
        })
        .await;

    let old = h
        .service
        .verify_key(&old_key, &Expectations::default())
        .await
        .unwrap();
    assert_eq!(old.code, VerifyCode::Valid, "the old key keeps its grace");
    assert!(old.credential.unwrap().grace.is_some());
    assert_eq!(verify(&h.service, &new_key).await, VerifyCode::Valid);

    // /app show lists both keys with their state.
    let i = h
        .fake
        .slash_command(
            &bob(),
            "app",
            Some("show"),
            vec![("app", json!(app.as_str()))],
        )
        .await;
    let r = h.fake.response(&i).await;
    let shown = h.fake.message_of(&i).unwrap_or_else(|| r["data"].clone());
    let keys = shown["embeds"][0]["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "API keys")
        .map(|f| f["value"].as_str().unwrap().to_owned())
        .unwrap();
    assert!(keys.contains("**active**"), "{keys}");
    assert!(keys.contains("**in grace until"), "{keys}");
    assert!(keys.contains("last used") || keys.contains("never used"));

    // The same confirmation again: someone rotated it already, nothing changes.
    let again = h
        .fake
        .press_button(&bob(), &confirmation, &component(&confirmation, "confirm"))
        .await;
    let refused = h.fake.followups(&again, 1).await.remove(0);
    assert!(text(&refused).contains("already rotated"), "{refused:#}");
    h.fake
        .wait_until("the rotation is in the audit channel", |f| {
            bodies_to(f, AUDIT)
                .iter()
                .any(|b| b.contains("Key rotated"))
        })
        .await;
    for body in bodies_to(&h.fake, AUDIT) {
        assert!(
            !body.contains(&new_key) && !body.contains(&old_key),
            "{body}"
        );
    }
    h.close().await;
}

async fn fifty_concurrent_confirm_presses_make_one_key(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let (app, _) = app_with_key(&h, "Stampede").await;
    let confirmation = rotate_command(&h, &bob(), &app, "7d").await;
    let id = component(&confirmation, "confirm");
    let manager = bob();
    let presses = futures_util::future::join_all(
        (0..50).map(|_| h.fake.press_button(&manager, &confirmation, &id)),
    )
    .await;
    let user = alice().id;
    h.fake
        .wait_until("49 presses learn it was rotated", |f| {
            presses.iter().map(|i| f.followup_count(i)).sum::<usize>() == 49
        })
        .await;
    h.fake
        .wait_until("one new key, by DM", |f| {
            dms_with(f, user, "API key: `kg_").len() == 1
        })
        .await;
    let mut tx = h.db.store.read().await.unwrap();
    let keys = tx.credentials_of(&app, CredentialKind::Key).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(keys.len(), 2, "exactly one new key");
    let mut tx = h.db.store.read().await.unwrap();
    let events = tx.audit_events(GUILD, Some(&app), 100).await.unwrap();
    tx.rollback().await.unwrap();
    assert_eq!(
        events
            .iter()
            .filter(|e| e.kind == AuditKind::KeyRotated)
            .count(),
        1
    );
    assert_eq!(
        dms_with(&h.fake, user, "follows…").len(),
        0,
        "the losers' DM placeholders are gone"
    );
    h.close().await;
}

async fn revoke_asks_for_the_name_then_stops_every_credential(backend: Backend) {
    let h = with_audit_channel(backend, false).await;
    let (app, key) = app_with_key(&h, "Doomed App").await;
    // On PostgreSQL another process, its cache holding the key for a minute,
    // hears of the revocation at once.
    let peer = Service::new(
        h.db.peer_store().await,
        std::sync::Arc::new(keygate::domain::catalog::ScopeCatalog::builtin()),
    )
    .with_policy(keygate::service::Policy {
        verify_cache_ttl: std::time::Duration::from_secs(60),
        ..keygate::service::Policy::default()
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn({
        let peer = peer.clone();
        async move { peer.follow_credential_changes(stopped).await }
    });
    if backend == Backend::Postgres {
        h.fake
            .wait_until("the peer listens", |_| {
                peer.is_following_credential_changes()
            })
            .await;
    }
    assert_eq!(verify(&peer, &key).await, VerifyCode::Valid);

    let open = |user: TestUser| {
        let fake = &h.fake;
        let app = app.clone();
        async move {
            let i = fake
                .slash_command(
                    &user,
                    "app",
                    Some("revoke"),
                    vec![("app", json!(app.as_str()))],
                )
                .await;
            let r = fake.response(&i).await;
            assert_eq!(r["type"], 9, "a modal: {r:#}");
            r["data"]["custom_id"].as_str().unwrap().to_owned()
        }
    };
    let modal = open(bob()).await;
    let wrong = h
        .fake
        .submit_modal(&bob(), &modal, &[("name", "Doomed Ap")], None)
        .await;
    assert_eq!(h.fake.response(&wrong).await["type"], 5);
    let said = h.fake.followups(&wrong, 1).await.remove(0);
    assert!(
        text(&said).contains("not the application's name"),
        "{said:#}"
    );
    assert_eq!(verify(&h.service, &key).await, VerifyCode::Valid);

    let modal = open(bob()).await;
    let right = h
        .fake
        .submit_modal(&bob(), &modal, &[("name", "Doomed App")], None)
        .await;
    assert_eq!(h.fake.response(&right).await["type"], 5);
    h.fake
        .wait_until("the revocation is confirmed", |f| {
            f.message_of(&right)
                .is_some_and(|m| text(&m).contains("is revoked"))
        })
        .await;
    assert_eq!(verify(&h.service, &key).await, VerifyCode::Revoked);
    let user = alice().id;
    h.fake
        .wait_until("the owner is told", |f| {
            !dms_with(f, user, "was revoked").is_empty()
        })
        .await;
    if backend == Backend::Postgres {
        let started = std::time::Instant::now();
        while verify(&peer, &key).await != VerifyCode::Revoked {
            assert!(
                started.elapsed() < std::time::Duration::from_secs(20),
                "the other process never heard of the revocation"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    }
    h.fake
        .wait_until("the revocation is in the audit channel", |f| {
            bodies_to(f, AUDIT).iter().any(|b| b.contains("Revoked"))
        })
        .await;
    let _ = stop.send(true);
    let _ = follower.await;
    peer.store().close().await;
    h.close().await;
}

async fn expiry_warnings_reach_the_owner_once_with_rotate_now(backend: Backend) {
    let mut h = with_audit_channel(backend, true).await;
    // The owner is in the server (a member who left is warned of in the audit channel).
    h.fake.add_member(&alice());
    let (app, _) = app_with_key(&h, "Expiring").await;
    let key = {
        let mut tx = h.db.store.read().await.unwrap();
        let k = tx
            .current_credential(&app, CredentialKind::Key)
            .await
            .unwrap();
        tx.rollback().await.unwrap();
        k.unwrap()
    };
    let expires = key.expires_at.unwrap();
    h.db.clock
        .set(expires - TimeDelta::days(30) + TimeDelta::minutes(1));
    let user = alice().id;
    h.fake
        .wait_until("the 30-day warning", |f| {
            !dms_with(f, user, "expires").is_empty()
        })
        .await;
    let warning = dms_with(&h.fake, user, "expires").remove(0);
    let i = h
        .fake
        .press_button_in_dm(&alice(), &warning, &component(&warning, "rotatenow"))
        .await;
    let r = h.fake.response(&i).await;
    assert_eq!(r["type"], 5, "acknowledged first: {r:#}");
    h.fake
        .wait_until("the rotation confirmation", |f| {
            f.message_of(&i)
                .is_some_and(|m| text(&m).contains("Rotate the **API key**"))
        })
        .await;

    // A restart neither loses nor repeats a stage.
    h.restart().await;
    tokio::time::sleep(std::time::Duration::from_millis(2500)).await;
    // Counted as sent, not as stored: the fake keeps a nonce for ever, so a
    // repeat would not show as a second message.
    let sent = h
        .fake
        .requests()
        .iter()
        .filter(|r| r.method == "POST" && r.body.to_string().contains("expires <t:"))
        .count();
    assert_eq!(sent, 1, "the 30-day stage went out once");

    // DMs closed: the next stage goes to the audit channel instead, once.
    h.fake.close_dms_of(user);
    h.db.clock
        .set(expires - TimeDelta::days(7) + TimeDelta::minutes(1));
    h.fake
        .wait_until("the warning in the audit channel", |f| {
            bodies_to(f, AUDIT)
                .iter()
                .any(|b| b.contains("could not be reached by DM"))
        })
        .await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let in_audit = bodies_to(&h.fake, AUDIT)
        .iter()
        .filter(|b| b.contains("could not be reached by DM"))
        .count();
    assert_eq!(in_audit, 1);
    h.close().await;
}

async fn an_unreachable_owner_stops_a_rotation_before_anything_changes(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    let (app, _) = app_with_key(&h, "Closed").await;
    h.fake.close_dms_of(alice().id);
    let confirmation = rotate_command(&h, &bob(), &app, "7d").await;
    let before = h.db.row_counts().await;
    let i = h
        .fake
        .press_button(&bob(), &confirmation, &component(&confirmation, "confirm"))
        .await;
    h.fake
        .wait_until("the manager is told", |f| {
            f.message_of(&i)
                .is_some_and(|m| text(&m).contains("Nothing changed"))
        })
        .await;
    assert_eq!(h.db.row_counts().await, before);

    // The owner confirming gets it in a message only they see.
    let confirmation = rotate_command(&h, &alice(), &app, "7d").await;
    let i = h
        .fake
        .press_button(
            &alice(),
            &confirmation,
            &component(&confirmation, "confirm"),
        )
        .await;
    let shown = h.fake.followups(&i, 1).await.remove(0);
    assert_eq!(shown["flags"].as_u64().unwrap() & EPHEMERAL, EPHEMERAL);
    let key = token(&text(&shown), "kg_").expect("the new key");
    assert!(text(&shown).contains("cannot remove it after 15 minutes"));
    assert_eq!(verify(&h.service, &key).await, VerifyCode::Valid);
    h.close().await;
}

async fn an_owner_gets_a_credential_that_never_reached_them_issued_again(backend: Backend) {
    let h = Harness::start_with(backend, false).await;
    // Issued through the service and never shown: as after a lost DM, once
    // no delivery of it can still be under way.
    let (app, lost_key) = app_with_key(&h, "Never Shown").await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
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
    let shown = h.fake.message_of(&i).unwrap();
    let again = shown["components"][0]["components"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["label"] == "Issue API key again")
        .map(|b| b["custom_id"].as_str().unwrap().to_owned())
        .expect("an Issue again button for the owner");
    let p = h.fake.press_button(&alice(), &shown, &again).await;
    assert_eq!(h.fake.response(&p).await["type"], 6);
    let user = alice().id;
    h.fake
        .wait_until("the new key by DM", |f| {
            !dms_with(f, user, "API key: `kg_").is_empty()
        })
        .await;
    let key = token(&text(&dms_with(&h.fake, user, "API key: `kg_")[0]), "kg_").unwrap();
    assert_eq!(verify(&h.service, &key).await, VerifyCode::Valid);
    assert_eq!(verify(&h.service, &lost_key).await, VerifyCode::Revoked);
    // Nobody else is offered it.
    let i = h
        .fake
        .slash_command(
            &bob(),
            "app",
            Some("show"),
            vec![("app", json!(app.as_str()))],
        )
        .await;
    h.fake.response(&i).await;
    let theirs = h.fake.message_of(&i).unwrap();
    assert!(!theirs.to_string().contains("again"), "{theirs:#}");
    h.close().await;
}

async fn a_key_generated_at_minute_14_does_not_keep_the_secret_past_15(backend: Backend) {
    let h = Harness::start_with(backend, true).await;
    let review = to_review(&h.fake, &alice(), "Minute Fourteen").await;
    let (dm, _, secret) = submit_and_get_dm(&h, &alice(), &review).await;
    h.db.clock.advance(TimeDelta::minutes(14));
    let (_, key) = support::bot::generate_key_in_dm(&h.fake, &alice(), &dm).await;
    h.db.clock.advance(TimeDelta::minutes(1));
    let user = alice().id;
    wait_until_no_dm_holds(&h.fake, user, "the Secret is gone at minute 15", &secret).await;
    assert_eq!(
        dms_with(&h.fake, user, &key).len(),
        1,
        "the key keeps its own lifetime"
    );
    h.db.clock.advance(TimeDelta::minutes(14));
    wait_until_no_dm_holds(&h.fake, user, "the key is gone at its own minute 15", &key).await;
    h.close().await;
}

async fn a_crash_between_issuing_and_showing_the_secret_is_recovered(backend: Backend) {
    let mut h = with_audit_channel(backend, true).await;
    let approvals = 4_000_000_000_000_008;
    h.fake.add_channel(approvals, "approvals");
    let settings = GuildSettings {
        approvals_required: 1,
        approvals_channel: Some(ChannelId(approvals)),
        audit_channel: Some(ChannelId(AUDIT)),
        ..GuildSettings::defaults(GUILD)
    };
    h.service
        .save_settings(Actor::member(ALICE), &settings)
        .await
        .unwrap();
    let review = to_review(&h.fake, &alice(), "Crash Test").await;
    let i = h
        .fake
        .press_button(&alice(), &review, &component(&review, "submit"))
        .await;
    h.fake.response(&i).await;
    h.fake
        .wait_until("the request is posted", |f| {
            !f.channel_messages(approvals).is_empty()
        })
        .await;
    let request = h.fake.channel_messages(approvals).pop().unwrap();

    // The bot dies while it writes the Secret into the requester's DM.
    h.restart_on_own_runtime().await;
    let dm_channel = h.fake.open_dm_channel(alice().id);
    h.fake
        .hang("PATCH", &format!("/channels/{dm_channel}/messages"));
    h.fake
        .press_button(&bob(), &request, &component(&request, "approve"))
        .await;
    h.fake
        .wait_until("the Secret is on its way", |f| {
            f.requests()
                .iter()
                .any(|r| r.method == "PATCH" && r.body.to_string().contains("kgs_"))
        })
        .await;
    h.crash().await;
    let lost = h
        .fake
        .requests()
        .iter()
        .find(|r| r.method == "PATCH" && r.body.to_string().contains("kgs_"))
        .and_then(|r| token(&r.body.to_string(), "kgs_"))
        .unwrap();

    // Back up once the dead process's lease on the delivery lapsed: the
    // approval is delivered with a new Secret, in the same DM (its nonce),
    // and the lost one is dead.
    h.fake.unhang();
    h.db.clock
        .advance(keygate::domain::retry::LEASE + chrono::TimeDelta::seconds(1));
    h.start_bot().await;
    let user = alice().id;
    h.fake
        .wait_until("a Secret reaches the requester", |f| {
            f.dm_messages(user)
                .iter()
                .any(|m| text(m).contains("Secret: `kgs_"))
        })
        .await;
    let dm = dms_with(&h.fake, user, "Secret: `kgs_").remove(0);
    let secret = token(&text(&dm), "kgs_").unwrap();
    assert_ne!(secret, lost);
    let notes = h
        .fake
        .dm_messages(user)
        .iter()
        .filter(|m| text(m).contains("was approved"))
        .count();
    assert_eq!(notes, 0, "the one note was filled, no spare is left");
    let app = ApplicationId::parse(&token(&text(&dm), "app_").unwrap()).unwrap();
    assert_eq!(
        authenticate(&h.service, &app, &secret).await,
        VerifyCode::Valid
    );
    assert_eq!(
        authenticate(&h.service, &app, &lost).await,
        VerifyCode::Revoked
    );
    h.close().await;
}

async fn a_revoked_app_gets_no_late_delivery(backend: Backend) {
    let h = with_audit_channel(backend, false).await;
    let approvals = 4_000_000_000_000_008;
    h.fake.add_channel(approvals, "approvals");
    let settings = GuildSettings {
        approvals_required: 1,
        approvals_channel: Some(ChannelId(approvals)),
        audit_channel: Some(ChannelId(AUDIT)),
        ..GuildSettings::defaults(GUILD)
    };
    h.service
        .save_settings(Actor::member(ALICE), &settings)
        .await
        .unwrap();
    // Approved behind the bot's back, so its delivery is left to the worker,
    // then revoked before the worker gets to it.
    let app = submit(&h.service, ALICE, "Revoked Early").await.app;
    h.service
        .approve(GUILD, &app.id, Actor::approver(BOB))
        .await
        .unwrap();
    support::revoke(&h.service, GUILD, &app.id, manager())
        .await
        .unwrap();
    // Past the stall grace (1 s here) the worker takes the approval, once.
    tokio::time::sleep(std::time::Duration::from_secs(3)).await;
    let stalled = h.service.stalled_requests().await.unwrap();
    assert!(
        !stalled.undelivered.iter().any(|a| a.id == app.id),
        "settled, not retried forever"
    );
    assert!(
        h.fake.dm_messages(alice().id).is_empty(),
        "no note, no credentials for a revoked app"
    );
    h.close().await;
}

/// A database keygate used before rotation existed: an active app, a revoked
/// one, and a key that expired long ago.
async fn a_database_from_before_the_lifecycle_migrates_straight(backend: Backend) {
    let db = TestDb::at_version(backend, 3).await;
    let now = chrono::Utc::now().timestamp_millis();
    let year = 365 * 86_400_000_i64;
    let app = |id: &str, name: &str, status: &str| {
        format!(
            "INSERT INTO applications (id, guild_id, owner_id, name, name_key, uri, description, \
             login_user_type, source_app, status, created_at, updated_at) VALUES ('{id}', {}, {}, \
             '{name}', '{}', 'https://x.example', '', 'guest', 'bot', '{status}', {}, {now})",
            GUILD.0,
            ALICE.0,
            name.to_lowercase(),
            now - year / 2
        )
    };
    let active = "app_0000000000000000000act";
    let revoked = "app_0000000000000000000rev";
    let stale = "app_000000000000000000stal";
    for sql in [
        app(active, "Active", "key_issued"),
        app(revoked, "Gone", "revoked"),
        app(stale, "Stale", "key_issued"),
        format!(
            "INSERT INTO app_secrets (app_id, secret_hash, secret_prefix, created_at, id) VALUES \
             ('{active}', 'h1', 'kgs_a', {now}, 'sec_a'), ('{revoked}', 'h2', 'kgs_r', {now}, 'sec_r'), \
             ('{stale}', 'h3', 'kgs_s', {now}, 'sec_s')"
        ),
        format!(
            "INSERT INTO api_keys (key_hash, app_id, key_prefix, created_at, expires_at, revoked_at, id) VALUES \
             ('k1', '{active}', 'kg_a', {}, {}, NULL, 'key_a'), \
             ('k2', '{revoked}', 'kg_r', {now}, {}, {now}, 'key_r'), \
             ('k3', '{stale}', 'kg_s', {}, {}, NULL, 'key_s')",
            now - year / 2,
            now + year / 2,
            now + year,
            now - 2 * year,
            now - year
        ),
    ] {
        db.execute_sql(&sql).await;
    }
    db.store.migrate().await.unwrap();

    let active = ApplicationId::parse(active).unwrap();
    let revoked = ApplicationId::parse(revoked).unwrap();
    let stale = ApplicationId::parse(stale).unwrap();
    let one = |app: ApplicationId, kind| {
        let store = db.store.clone();
        async move {
            let mut tx = store.read().await.unwrap();
            let c = tx.credentials_of(&app, kind).await.unwrap().remove(0);
            tx.rollback().await.unwrap();
            c
        }
    };
    let secret = one(active.clone(), CredentialKind::Secret).await;
    assert!(
        secret.is_current() && secret.shown_at.is_some(),
        "{secret:?}"
    );
    let key = one(active.clone(), CredentialKind::Key).await;
    assert!(
        key.shown_at.is_some(),
        "delivered the old way: never issued again"
    );
    assert_eq!(
        db.service.record_expiries().await.unwrap(),
        0,
        "a key that expired before the migration gets no expiry event now"
    );
    let gone = one(revoked.clone(), CredentialKind::Secret).await;
    assert!(
        gone.revoked_at.is_some(),
        "a revoked app's Secret is revoked"
    );
    let _ = one(stale, CredentialKind::Key).await;
    // The active key's warnings are scheduled from its expiry.
    db.clock.set(key.expires_at.unwrap() - TimeDelta::days(30));
    let due = claim_all(&db.service).await;
    assert_eq!(due.iter().map(|w| w.days).collect::<Vec<_>>(), vec![30]);
    // A revoked app's name is free.
    let again = submit(&db.service, ALICE, "Gone").await;
    assert_ne!(again.app.id, revoked);
    db.close().await;
}
