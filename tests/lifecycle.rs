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
    assert!(svc.claim_due_warnings().await.unwrap().is_empty());
    db.clock.advance(TimeDelta::days(10));
    let w = svc.claim_due_warnings().await.unwrap();
    assert_eq!(w.len(), 1);
    assert_eq!(w[0].days, 30);
    // Claimed: neither this process nor another takes it again meanwhile.
    assert!(svc.claim_due_warnings().await.unwrap().is_empty());
    let other = db.restarted_service();
    assert!(other.claim_due_warnings().await.unwrap().is_empty());
    // The claimant died before it sent anything: the lease lapses, the
    // warning goes out from another process, with the same nonce.
    db.clock.advance(TimeDelta::seconds(61));
    let again = other.claim_due_warnings().await.unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].nonce(), w[0].nonce());
    assert!(again[0].nonce().len() <= 25);
    other.warning_sent(&again[0], false).await.unwrap();
    // The first one's late completion writes nothing twice.
    svc.warning_sent(&w[0], false).await.unwrap();
    assert!(svc.claim_due_warnings().await.unwrap().is_empty());
    let restarted = db.restarted_service();
    assert!(restarted.claim_due_warnings().await.unwrap().is_empty());

    db.clock.set(expires - TimeDelta::days(5));
    let w = restarted.claim_due_warnings().await.unwrap();
    assert_eq!(w.iter().map(|w| w.days).collect::<Vec<_>>(), vec![7]);
    restarted.warning_sent(&w[0], true).await.unwrap();
    db.clock.set(expires - TimeDelta::hours(3));
    let w = svc.claim_due_warnings().await.unwrap();
    assert_eq!(w.iter().map(|w| w.days).collect::<Vec<_>>(), vec![1]);
    svc.warning_sent(&w[0], false).await.unwrap();
    db.clock.set(expires + TimeDelta::days(1));
    assert!(svc.claim_due_warnings().await.unwrap().is_empty());
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
        svc.claim_due_warnings().await.unwrap().is_empty(),
        "no \"30 days left\" for a 10-day key"
    );
    db.clock.set(expires - TimeDelta::days(7));
    let w = svc.claim_due_warnings().await.unwrap();
    assert_eq!(w.iter().map(|w| w.days).collect::<Vec<_>>(), vec![7]);
    svc.warning_sent(&w[0], false).await.unwrap();
    // Down over every stage of another key: only the most urgent goes out.
    let (_, other) = key_lasting(db, "Forty Days", 40).await;
    db.clock
        .set(other.expires_at.unwrap() - TimeDelta::hours(2));
    let w = svc.claim_due_warnings().await.unwrap();
    let days: Vec<(String, i64)> = w.iter().map(|w| (w.due.key.id.clone(), w.days)).collect();
    assert_eq!(days, vec![(other.id.clone(), 1)]);
    svc.warning_sent(&w[0], false).await.unwrap();
    db.clock.advance(TimeDelta::minutes(5));
    assert!(svc.claim_due_warnings().await.unwrap().is_empty());
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
