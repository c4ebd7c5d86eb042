//! The store conformance suite: every use case against SQLite and PostgreSQL.

mod support;

use keygate::domain::application::{AppStatus, LoginUserType, SourceApp};
use keygate::domain::approval::{ApprovalError, RequestStatus};
use keygate::domain::audit::{AuditKind, NewAuditEvent};
use keygate::domain::catalog::ScopeCatalog;
use keygate::domain::credentials::{API_KEY_PREFIX, ApiKey, ApplicationId, ClientSecret};
use keygate::domain::ids::{ChannelId, GuildId, InteractionId, MessageId};
use keygate::domain::settings::GuildSettings;
use keygate::domain::validation::{AppForm, Field};
use keygate::domain::verification::{Expectations, VerifyCode};
use keygate::domain::wizard::{SavedDraft, WizardAction, WizardStep};
use keygate::service::{
    Actor, ApproveOutcome, DraftInput, DraftStart, Policy, Service, ServiceError, new_draft_id,
};
use keygate::store::DmRedaction;
use keygate::store::{Backend, Store};
use std::str::FromStr;
use support::*;

on_both_stores!(
    a_key_in_an_answer_not_yet_found_is_not_issued_again,
    an_answer_redaction_is_keyed_by_its_message_once_found,
    migrations_are_idempotent_and_start_empty,
    whole_flow_without_approval,
    fifty_concurrent_key_generations_make_one_key,
    concurrent_decisions_record_one_outcome,
    approval_rules_hold,
    bad_input_is_rejected_and_writes_nothing,
    no_clear_secret_is_ever_stored,
    verify_tells_each_code_in_order,
    authenticate_checks_the_secret,
    changes_reach_the_cache_at_once_in_process,
    another_process_sees_a_revocation,
    last_used_is_written_at_most_once_a_minute,
    readiness_follows_the_database,
    drafts_belong_to_one_user_and_survive_a_restart,
    concurrent_forms_leave_one_draft,
    a_draft_submitted_twice_at_once_makes_one_app,
    a_draft_edited_while_submit_queues_is_submitted_as_edited,
    names_are_unique_per_guild_ignoring_case,
    audit_log_is_append_only_and_outbox_posts_once,
    a_late_audit_release_leaves_a_newer_lease_alone,
    redactions_are_scheduled_and_done_once,
    settings_round_trip,
    a_write_ended_without_commit_rolls_back_and_frees_the_writer,
    list_and_show_apps,
    revoking_one_app_leaves_the_others_cached,
    a_dropped_listener_flushes_the_cache_and_is_reopened,
    names_compare_after_nfkc,
    stored_name_keys_are_recomputed_once,
    approvals_decided_before_0002_count_as_delivered,
    retry_schedules_and_channel_pauses_round_trip,
    background_jobs_claim_each_item_for_one_process,
);

async fn require_approvals(db: &TestDb, n: u8) {
    let settings = GuildSettings {
        approvals_required: n,
        ..GuildSettings::defaults(GUILD)
    };
    db.service
        .save_settings(Actor::member(ALICE), &settings)
        .await
        .unwrap();
}

async fn migrations_are_idempotent_and_start_empty(db: &TestDb) {
    db.store.migrate().await.unwrap();
    let counts = db.row_counts().await;
    assert_eq!(counts.len(), keygate::store::TABLES.len());
    assert!(counts.iter().all(|(_, n)| *n == 0), "{counts:?}");
}

async fn whole_flow_without_approval(db: &TestDb) {
    let svc = &db.service;
    let submitted = submit(svc, ALICE, "Spa Mobile").await;
    assert!(submitted.request.is_none());
    let app = submitted.app.clone();
    assert_eq!(app.status, AppStatus::Approved);
    assert_eq!(app.scopes, vec!["appointments", "guests"]);
    assert!(app.id.as_str().starts_with("app_"));

    // With no approval required, Submit issues the credentials, once.
    let creds = submitted.credentials.expect("credentials at submit");
    assert!(creds.secret.expose().starts_with("kgs_"));
    assert!(matches!(
        svc.issue_credentials(GUILD, &app.id).await,
        Err(ServiceError::CredentialsBeingDelivered)
    ));
    svc.credential_shown(&creds.secret_id).await.unwrap();
    assert!(matches!(
        svc.issue_credentials(GUILD, &app.id).await,
        Err(ServiceError::CredentialsAlreadyIssued)
    ));
    // Only the owner generates the key.
    assert!(matches!(
        svc.generate_api_key(GUILD, &app.id, Actor::approver(BOB))
            .await,
        Err(ServiceError::NotOwner)
    ));
    let issued = svc
        .generate_api_key(GUILD, &app.id, Actor::member(ALICE))
        .await
        .unwrap();
    assert!(issued.key.expose().starts_with(API_KEY_PREFIX));
    assert_eq!(issued.app.status, AppStatus::KeyIssued);
    assert!(matches!(
        svc.generate_api_key(GUILD, &app.id, Actor::member(ALICE))
            .await,
        Err(ServiceError::KeyAlreadyGenerated)
    ));
    let finished = svc.finishing(&app.id, Actor::member(ALICE)).await.unwrap();
    svc.finish(&finished, Actor::member(ALICE), None)
        .await
        .unwrap();

    let verdict = svc
        .verify_key(issued.key.expose(), &Expectations::default())
        .await
        .unwrap();
    let v = &verdict.credential.expect("the new key must verify").app;
    assert_eq!(v.id, app.id);
    assert_eq!(v.guild_id, GUILD);
    assert_eq!(v.scopes, vec!["appointments", "guests"]);
    assert_eq!(v.user_type, LoginUserType::Guest);
    assert_eq!(v.source_app, SourceApp::ExternalCma);

    let shown = svc.app(GUILD, &app.id).await.unwrap();
    assert_eq!(shown.status, AppStatus::KeyIssued);
    assert_eq!(
        shown.key_prefix.as_deref(),
        Some(&issued.key.display_prefix()[..])
    );

    let mut tx = db.store.read().await.unwrap();
    let kinds: Vec<AuditKind> = tx
        .audit_events(GUILD, Some(&app.id), 50)
        .await
        .unwrap()
        .into_iter()
        .rev()
        .map(|e| e.kind)
        .collect();
    tx.rollback().await.unwrap();
    assert_eq!(
        kinds,
        vec![
            AuditKind::DraftSubmitted,
            AuditKind::CredentialsIssued,
            AuditKind::KeyGenerated,
            AuditKind::Finished
        ]
    );
}

async fn fifty_concurrent_key_generations_make_one_key(db: &TestDb) {
    let app = submit(&db.service, ALICE, "Race").await.app;
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let svc = db.service.clone();
        let id = app.id.clone();
        tasks.spawn(async move { svc.generate_api_key(GUILD, &id, Actor::member(ALICE)).await });
    }
    let (mut keys, mut refused) = (Vec::new(), 0);
    while let Some(result) = tasks.join_next().await {
        match result.unwrap() {
            Ok(issued) => keys.push(issued.key),
            Err(ServiceError::KeyAlreadyGenerated) => refused += 1,
            Err(other) => panic!("unexpected error: {other:?}"),
        }
    }
    assert_eq!(keys.len(), 1);
    assert_eq!(refused, 49);
    let counts = db.row_counts().await;
    assert!(counts.contains(&("api_keys", 1)), "{counts:?}");
    assert_eq!(
        verify(&db.service, keys[0].expose()).await,
        VerifyCode::Valid
    );
}

async fn concurrent_decisions_record_one_outcome(db: &TestDb) {
    require_approvals(db, 1).await;
    for round in 0..5 {
        let app = submit(&db.service, ALICE, &format!("Race {round}"))
            .await
            .app;
        let (a, b) = (db.service.clone(), db.service.clone());
        let (id_a, id_b) = (app.id.clone(), app.id.clone());
        // Two approvers at once, or an approve racing a deny on odd rounds.
        let first = tokio::spawn(async move {
            a.approve(GUILD, &id_a, Actor::approver(BOB))
                .await
                .map(|_| "approved")
        });
        let second = tokio::spawn(async move {
            if round % 2 == 0 {
                b.approve(GUILD, &id_b, Actor::approver(CAROL))
                    .await
                    .map(|_| "approved")
            } else {
                b.deny(GUILD, &id_b, Actor::approver(CAROL), "not needed")
                    .await
                    .map(|_| "denied")
            }
        });
        let results = [first.await.unwrap(), second.await.unwrap()];
        let winners: Vec<_> = results.iter().filter(|r| r.is_ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {results:?}");
        let loser = results.iter().find_map(|r| r.as_ref().err()).unwrap();
        assert!(
            matches!(loser, ServiceError::Approval(ApprovalError::NotPending(_))),
            "round {round}: {loser:?}"
        );
        let request = db.service.approval_request(&app.id).await.unwrap().unwrap();
        let app = db.service.app(GUILD, &app.id).await.unwrap();
        match *winners[0].as_ref().unwrap() {
            "approved" => {
                assert_eq!(request.status, RequestStatus::Approved);
                assert_eq!(request.approvers.len(), 1, "the loser's vote is not kept");
                assert_eq!(app.status, AppStatus::Approved);
            }
            _ => {
                assert_eq!(request.status, RequestStatus::Denied);
                assert!(request.approvers.is_empty());
                assert_eq!(app.status, AppStatus::Denied);
            }
        }
    }
}

async fn approval_rules_hold(db: &TestDb) {
    require_approvals(db, 2).await;
    let svc = &db.service;
    let submitted = submit(svc, ALICE, "Needs Two").await;
    let app = submitted.app;
    assert_eq!(app.status, AppStatus::PendingApproval);
    let request = submitted.request.unwrap();
    assert_eq!(request.approvals_required, 2);
    assert_eq!(
        request.expires_at - request.created_at,
        chrono::TimeDelta::hours(72)
    );

    // No credentials before approval.
    assert!(matches!(
        svc.issue_credentials(GUILD, &app.id).await,
        Err(ServiceError::NotApproved(AppStatus::PendingApproval))
    ));
    assert!(matches!(
        svc.approve(GUILD, &app.id, Actor::member(BOB)).await,
        Err(ServiceError::NotApprover)
    ));
    assert!(matches!(
        svc.approve(GUILD, &app.id, Actor::approver(ALICE)).await,
        Err(ServiceError::Approval(ApprovalError::OwnRequest))
    ));
    assert_eq!(
        svc.approve(GUILD, &app.id, Actor::approver(BOB))
            .await
            .unwrap(),
        ApproveOutcome::Counted {
            given: 1,
            required: 2
        }
    );
    assert!(matches!(
        svc.approve(GUILD, &app.id, Actor::approver(BOB)).await,
        Err(ServiceError::Approval(ApprovalError::AlreadyApproved))
    ));
    let ApproveOutcome::Approved(approved) = svc
        .approve(GUILD, &app.id, Actor::approver(CAROL))
        .await
        .unwrap()
    else {
        panic!("the second distinct approver completes the approval")
    };
    assert_eq!(approved.status, AppStatus::Approved);
    let request = svc.approval_request(&app.id).await.unwrap().unwrap();
    assert_eq!(request.approvers, vec![BOB, CAROL]);
    assert!(svc.issue_credentials(GUILD, &app.id).await.is_ok());

    // Deny needs a reason and reaches a final state.
    let denied = submit(svc, ALICE, "Denied One").await.app;
    assert!(matches!(
        svc.deny(GUILD, &denied.id, Actor::approver(BOB), "  ")
            .await,
        Err(ServiceError::Approval(ApprovalError::ReasonRequired))
    ));
    let (app, reason) = svc
        .deny(
            GUILD,
            &denied.id,
            Actor::approver(BOB),
            " duplicate of Spa Mobile ",
        )
        .await
        .unwrap();
    assert_eq!(app.status, AppStatus::Denied);
    assert_eq!(reason, "duplicate of Spa Mobile");
    let request = svc.approval_request(&denied.id).await.unwrap().unwrap();
    assert_eq!(
        request.deny_reason.as_deref(),
        Some("duplicate of Spa Mobile")
    );
    assert_eq!(request.decided_by, Some(BOB));
    assert!(matches!(
        svc.approve(GUILD, &denied.id, Actor::approver(CAROL)).await,
        Err(ServiceError::Approval(ApprovalError::NotPending(
            RequestStatus::Denied
        )))
    ));

    // The requester may withdraw; nobody else may.
    let withdrawn = submit(svc, ALICE, "Withdrawn One").await.app;
    assert!(matches!(
        svc.withdraw(GUILD, &withdrawn.id, Actor::approver(BOB))
            .await,
        Err(ServiceError::NotOwner)
    ));
    let app = svc
        .withdraw(GUILD, &withdrawn.id, Actor::member(ALICE))
        .await
        .unwrap();
    assert_eq!(app.status, AppStatus::Withdrawn);
    assert!(matches!(
        svc.approve(GUILD, &withdrawn.id, Actor::approver(BOB))
            .await,
        Err(ServiceError::Approval(ApprovalError::NotPending(
            RequestStatus::Withdrawn
        )))
    ));

    // A request past its expiry takes no more votes.
    let late = submit(svc, ALICE, "Late One").await.app;
    db.clock.advance(chrono::TimeDelta::hours(73));
    assert!(matches!(
        svc.approve(GUILD, &late.id, Actor::approver(BOB)).await,
        Err(ServiceError::Approval(ApprovalError::Expired))
    ));
}

async fn bad_input_is_rejected_and_writes_nothing(db: &TestDb) {
    let svc = &db.service;
    submit(svc, BOB, "Spa Mobile").await;
    let DraftStart::New(offered) = svc.open_draft(GUILD, ALICE).await.unwrap() else {
        panic!("new draft")
    };
    let bad_forms: Vec<(&str, AppForm, Field)> = vec![
        (
            "empty name",
            AppForm {
                name: "".into(),
                ..form("x")
            },
            Field::Name,
        ),
        (
            "101-char name",
            AppForm {
                name: "n".repeat(101),
                ..form("x")
            },
            Field::Name,
        ),
        (
            "newline in name",
            AppForm {
                name: "a\nb".into(),
                ..form("x")
            },
            Field::Name,
        ),
        (
            "escape in name",
            AppForm {
                name: "a\u{1b}[31m".into(),
                ..form("x")
            },
            Field::Name,
        ),
        (
            "duplicate name in another case",
            form("SPA MOBILE"),
            Field::Name,
        ),
        (
            "duplicate name with spaces",
            form("  spa mobile "),
            Field::Name,
        ),
        (
            "empty uri",
            AppForm {
                uri: "".into(),
                ..form("x")
            },
            Field::Uri,
        ),
        (
            "relative uri",
            AppForm {
                uri: "spa.example.com".into(),
                ..form("x")
            },
            Field::Uri,
        ),
        (
            "javascript uri",
            AppForm {
                uri: "javascript:alert(1)".into(),
                ..form("x")
            },
            Field::Uri,
        ),
        (
            "data uri",
            AppForm {
                uri: "data:text/html,hi".into(),
                ..form("x")
            },
            Field::Uri,
        ),
        (
            "mailto uri",
            AppForm {
                uri: "mailto:a@example.com".into(),
                ..form("x")
            },
            Field::Uri,
        ),
        (
            "uri with password",
            AppForm {
                uri: "https://a:b@example.com".into(),
                ..form("x")
            },
            Field::Uri,
        ),
        (
            "long description",
            AppForm {
                description: "d".repeat(1001),
                ..form("x")
            },
            Field::Description,
        ),
        (
            "NUL in description",
            AppForm {
                description: "a\0".into(),
                ..form("x")
            },
            Field::Description,
        ),
        (
            "http login url",
            AppForm {
                post_login_urls: "http://spa.example.com/cb".into(),
                ..form("x")
            },
            Field::PostLoginUrls,
        ),
        (
            "javascript login url",
            AppForm {
                post_login_urls: "javascript:alert(1)".into(),
                ..form("x")
            },
            Field::PostLoginUrls,
        ),
        (
            "data login url",
            AppForm {
                post_login_urls: "data:,x".into(),
                ..form("x")
            },
            Field::PostLoginUrls,
        ),
        (
            "fragment login url",
            AppForm {
                post_login_urls: "https://a.example.com/#t".into(),
                ..form("x")
            },
            Field::PostLoginUrls,
        ),
        (
            "relative logout url",
            AppForm {
                post_logout_urls: "/bye".into(),
                ..form("x")
            },
            Field::PostLogoutUrls,
        ),
        (
            "11 logout urls",
            AppForm {
                post_logout_urls: (0..11)
                    .map(|i| format!("https://a.example.com/{i}\n"))
                    .collect(),
                ..form("x")
            },
            Field::PostLogoutUrls,
        ),
        (
            "11 login urls",
            AppForm {
                post_login_urls: (0..11)
                    .map(|i| format!("https://b.example.com/{i}\n"))
                    .collect(),
                ..form("x")
            },
            Field::PostLoginUrls,
        ),
        (
            "ftp logout url",
            AppForm {
                post_logout_urls: "ftp://a.example.com".into(),
                ..form("x")
            },
            Field::PostLogoutUrls,
        ),
        (
            "http to a public ip",
            AppForm {
                post_logout_urls: "http://8.8.8.8/cb".into(),
                ..form("x")
            },
            Field::PostLogoutUrls,
        ),
    ];
    // A refused first form: the draft is not stored at all.
    let before = db.row_counts().await;
    let mut cases = 0;
    for (what, bad, field) in bad_forms.clone() {
        match svc.create_draft(GUILD, &offered, ALICE, bad, None).await {
            Err(ServiceError::Validation(errors)) => {
                assert!(errors.on(field).next().is_some(), "{what}: {errors}");
            }
            other => panic!("{what}: expected a validation error, got {other:?}"),
        }
        cases += 1;
    }
    assert_eq!(
        db.row_counts().await,
        before,
        "a refused first form wrote something"
    );
    // An id the service did not make is never stored.
    assert!(matches!(
        svc.create_draft(GUILD, "x", ALICE, form("ok"), None).await,
        Err(ServiceError::DraftNotFound)
    ));
    cases += 1;

    // A stored draft: refused input leaves it as it was.
    let draft = svc
        .create_draft(GUILD, &offered, ALICE, form("ok"), None)
        .await
        .unwrap();
    assert_eq!(draft.draft.step, WizardStep::Options);
    let before = db.row_counts().await;
    let saved_before = svc.draft(&draft.id, ALICE).await.unwrap();
    for (what, bad, field) in bad_forms {
        match svc
            .advance_draft(&draft.id, ALICE, DraftInput::Details(bad))
            .await
        {
            Err(ServiceError::Validation(errors)) => {
                assert!(errors.on(field).next().is_some(), "{what}: {errors}");
            }
            other => panic!("{what}: expected a validation error, got {other:?}"),
        }
        cases += 1;
    }
    // Input on the wrong step, Next with nothing chosen.
    let step_errors = [DraftInput::Scopes(vec!["guests".into()]), DraftInput::Next];
    for input in step_errors {
        assert!(
            matches!(
                svc.advance_draft(&draft.id, ALICE, input.clone()).await,
                Err(ServiceError::Wizard(_))
            ),
            "{input:?}"
        );
        cases += 1;
    }
    for scopes in [
        vec![],
        vec!["teleportation".to_owned()],
        vec!["guests".to_owned(), "nope".to_owned()],
    ] {
        assert!(matches!(
            svc.advance_draft(&draft.id, ALICE, DraftInput::Scopes(scopes))
                .await,
            Err(ServiceError::Validation(_))
        ));
        cases += 1;
    }
    assert!(matches!(
        svc.submit_draft(&draft.id, ALICE, None).await,
        Err(ServiceError::Wizard(_))
    ));
    assert!(matches!(
        svc.advance_draft(&draft.id, BOB, DraftInput::Details(form("ok")))
            .await,
        Err(ServiceError::NotYourDraft)
    ));
    // Nor does another member's form, submitted with the stored id, touch it.
    assert!(matches!(
        svc.create_draft(GUILD, &draft.id, BOB, form("ok"), None)
            .await,
        Err(ServiceError::NotYourDraft)
    ));
    cases += 3;
    assert!(cases >= 50, "{cases} cases");
    assert_eq!(
        db.row_counts().await,
        before,
        "rejected input wrote something"
    );
    assert_eq!(svc.draft(&draft.id, ALICE).await.unwrap(), saved_before);
}

async fn no_clear_secret_is_ever_stored(db: &TestDb) {
    let svc = &db.service;
    let settings = GuildSettings {
        audit_channel: Some(ChannelId(42)),
        approvals_required: 1,
        ..GuildSettings::defaults(GUILD)
    };
    svc.save_settings(Actor::member(ALICE), &settings)
        .await
        .unwrap();
    let app = submit(svc, ALICE, "Secretive").await.app;
    svc.approve(GUILD, &app.id, Actor::approver(BOB))
        .await
        .unwrap();
    let creds = svc.issue_credentials(GUILD, &app.id).await.unwrap();
    let key = svc
        .generate_api_key(GUILD, &app.id, Actor::member(ALICE))
        .await
        .unwrap()
        .key;
    let mut tx = db.store.begin().await.unwrap();
    tx.schedule_redaction(&DmRedaction {
        channel_id: ChannelId(7),
        message_id: MessageId(8),
        app_id: app.id.clone(),
        user_id: ALICE,
        due_at: db.clock.now(),
        answer_of: None,
        carries: None,
    })
    .await
    .unwrap();
    tx.commit().await.unwrap();
    support::revoke(svc, GUILD, &app.id, Actor::member(ALICE))
        .await
        .unwrap();

    let secret = creds.secret.expose();
    let key_clear = key.expose();
    let secret_hash = creds.secret.hash();
    let key_hash = key.hash();
    let text = db.all_text().await;
    assert!(
        text.len() > 20,
        "the scan must see the data: {}",
        text.len()
    );
    assert!(
        text.iter().any(|(_, _, v)| v == secret_hash.as_str()),
        "the secret's hash is kept"
    );
    for (table, column, value) in &text {
        assert!(!value.contains(secret), "clear secret in {table}.{column}");
        assert!(!value.contains(key_clear), "clear key in {table}.{column}");
        // The random part alone must not appear either (say, without its prefix).
        assert!(
            !value.contains(&secret[4..]),
            "secret body in {table}.{column}"
        );
        assert!(
            !value.contains(&key_clear[3..33]),
            "key body in {table}.{column}"
        );
        if table == "audit_events" {
            assert!(
                !value.contains(secret_hash.as_str()) && !value.contains(key_hash.as_str()),
                "a hash in the audit log: {table}.{column}"
            );
        }
    }
}

/// The key with its 11th character changed, as a person might mistype it.
fn one_typo(key: &str) -> String {
    let mut chars: Vec<char> = key.chars().collect();
    chars[10] = if chars[10] == 'x' { 'y' } else { 'x' };
    chars.into_iter().collect()
}

fn expect(app: Option<&ApplicationId>, guild: Option<GuildId>, scopes: &[&str]) -> Expectations {
    Expectations {
        app_id: app.cloned(),
        guild_id: guild,
        scopes: scopes.iter().map(|s| s.to_string()).collect(),
    }
}

async fn verify_tells_each_code_in_order(db: &TestDb) {
    let svc = &db.service;
    let (good_app, good) = active_app(db, "Good").await;
    let (revoked_app, revoked) = active_app(db, "Revoked").await;
    support::revoke(svc, GUILD, &revoked_app, Actor::approver(BOB))
        .await
        .unwrap();
    let other_guild = GuildId(GUILD.0 + 1);

    let valid = svc
        .verify_key(
            good.expose(),
            &expect(Some(&good_app), Some(GUILD), &["guests"]),
        )
        .await
        .unwrap();
    assert_eq!(valid.code, VerifyCode::Valid);
    let standing = valid.credential.expect("a valid key names its app");
    assert_eq!(standing.app.id, good_app);
    assert_eq!(standing.app.scopes, vec!["appointments", "guests"]);
    assert_eq!(
        standing.expires_at,
        db.clock.now() + chrono::TimeDelta::days(365)
    );
    assert!(standing.key_id.starts_with("key_"));
    assert_eq!(standing.start, &good.expose()[..7]);

    let long = format!("kg_{}", "a".repeat(600));
    let cases: Vec<(&str, String, Expectations, VerifyCode)> = vec![
        (
            "empty",
            String::new(),
            expect(None, None, &[]),
            VerifyCode::Malformed,
        ),
        (
            "not a key",
            "hello".into(),
            expect(None, None, &[]),
            VerifyCode::Malformed,
        ),
        (
            "one typo",
            one_typo(good.expose()),
            expect(None, None, &[]),
            VerifyCode::Malformed,
        ),
        (
            "over-long",
            long,
            expect(None, None, &[]),
            VerifyCode::Malformed,
        ),
        (
            "never issued",
            ApiKey::generate().expose().to_owned(),
            expect(None, None, &[]),
            VerifyCode::NotFound,
        ),
        (
            "another server pinned beats everything else",
            revoked.expose().to_owned(),
            expect(Some(&good_app), Some(other_guild), &["nope"]),
            VerifyCode::NotFound,
        ),
        (
            "another app pinned beats revoked",
            revoked.expose().to_owned(),
            expect(Some(&good_app), None, &["nope"]),
            VerifyCode::WrongApp,
        ),
        (
            "this key works only for its app",
            good.expose().to_owned(),
            expect(Some(&revoked_app), Some(GUILD), &[]),
            VerifyCode::WrongApp,
        ),
        (
            "revoked beats a missing scope",
            revoked.expose().to_owned(),
            expect(Some(&revoked_app), Some(GUILD), &["nope"]),
            VerifyCode::Revoked,
        ),
        (
            "an ungranted scope",
            good.expose().to_owned(),
            expect(None, None, &["appointments", "payroll"]),
            VerifyCode::InsufficientScope,
        ),
    ];
    for (case, presented, expectations, code) in cases {
        let verdict = svc.verify_key(&presented, &expectations).await.unwrap();
        assert_eq!(verdict.code, code, "{case}");
        assert!(
            verdict.credential.is_none(),
            "{case}: an invalid key names no app"
        );
    }
    let short = svc
        .verify_key(good.expose(), &expect(None, None, &["payroll"]))
        .await
        .unwrap();
    assert_eq!(short.missing_scopes, vec!["payroll"]);

    // Expiry is computed from the clock on every request, cache or not.
    db.clock
        .advance(chrono::TimeDelta::days(365) - chrono::TimeDelta::seconds(1));
    assert_eq!(verify(svc, good.expose()).await, VerifyCode::Valid);
    db.clock.advance(chrono::TimeDelta::seconds(1));
    assert_eq!(verify(svc, good.expose()).await, VerifyCode::Expired);
    let expired_and_scoped = svc
        .verify_key(good.expose(), &expect(None, None, &["payroll"]))
        .await
        .unwrap();
    assert_eq!(
        expired_and_scoped.code,
        VerifyCode::Expired,
        "expired beats scopes"
    );
    // Revoked outranks expired: the stronger statement.
    assert_eq!(verify(svc, revoked.expose()).await, VerifyCode::Revoked);
}

async fn authenticate_checks_the_secret(db: &TestDb) {
    let svc = &db.service;
    let submitted = submit(svc, ALICE, "Booking site").await;
    let app = submitted.app.id.clone();
    let secret = submitted.credentials.expect("issued at once").secret;
    let secret = secret.expose().to_owned();
    let other = submit(svc, ALICE, "Other").await;
    let other_secret = other.credentials.unwrap().secret.expose().to_owned();
    let none = Expectations::default();

    let ok = svc
        .authenticate_app(app.as_str(), &secret, &none)
        .await
        .unwrap();
    assert_eq!(ok.code, VerifyCode::Valid);
    let standing = ok.credential.unwrap();
    assert_eq!(standing.app.id, app);
    assert!(standing.secret_id.starts_with("sec_"));
    assert_eq!(standing.start, &secret[..8]);

    let cases = [
        (
            "bad app id",
            "app_nope".to_owned(),
            secret.clone(),
            none.clone(),
            VerifyCode::Malformed,
        ),
        (
            "bad secret",
            app.to_string(),
            "kgs_short".into(),
            none.clone(),
            VerifyCode::Malformed,
        ),
        (
            "a key is not a secret",
            app.to_string(),
            ApiKey::generate().expose().into(),
            none.clone(),
            VerifyCode::Malformed,
        ),
        (
            "wrong secret",
            app.to_string(),
            other_secret.clone(),
            none.clone(),
            VerifyCode::NotFound,
        ),
        (
            "unknown app",
            ApplicationId::generate().to_string(),
            secret.clone(),
            none.clone(),
            VerifyCode::NotFound,
        ),
        (
            "another server pinned",
            app.to_string(),
            secret.clone(),
            expect(None, Some(GuildId(GUILD.0 + 1)), &[]),
            VerifyCode::NotFound,
        ),
        (
            "an ungranted scope",
            app.to_string(),
            secret.clone(),
            expect(None, Some(GUILD), &["payroll"]),
            VerifyCode::InsufficientScope,
        ),
    ];
    for (case, id, presented, expectations, code) in cases {
        let verdict = svc
            .authenticate_app(&id, &presented, &expectations)
            .await
            .unwrap();
        assert_eq!(verdict.code, code, "{case}");
        assert!(verdict.credential.is_none(), "{case}");
    }
    support::revoke(svc, GUILD, &app, Actor::approver(BOB))
        .await
        .unwrap();
    let after = svc
        .authenticate_app(app.as_str(), &secret, &none)
        .await
        .unwrap();
    assert_eq!(after.code, VerifyCode::Revoked);
}

/// A service whose cache would keep a stale answer for a minute.
fn long_cache(service: Service) -> Service {
    service.with_policy(Policy {
        verify_cache_ttl: std::time::Duration::from_secs(60),
        ..Policy::default()
    })
}

async fn changes_reach_the_cache_at_once_in_process(db: &TestDb) {
    let svc = long_cache(db.service.clone());
    require_approvals(db, 1).await;
    let id = draft_to_review(&svc, ALICE, "Cached").await;
    let app = svc.submit_draft(&id, ALICE, None).await.unwrap().app.id;
    let made_up = ClientSecret::generate();
    let none = Expectations::default();
    // "No Secret yet" is cached...
    let before = svc
        .authenticate_app(app.as_str(), made_up.expose(), &none)
        .await
        .unwrap();
    assert_eq!(before.code, VerifyCode::NotFound);
    // ...and forgotten the moment one is issued.
    assert!(matches!(
        svc.approve(GUILD, &app, Actor::approver(BOB))
            .await
            .unwrap(),
        ApproveOutcome::Approved(_)
    ));
    let issued = svc.issue_credentials(GUILD, &app).await.unwrap();
    let after = svc
        .authenticate_app(app.as_str(), issued.secret.expose(), &none)
        .await
        .unwrap();
    assert_eq!(after.code, VerifyCode::Valid);

    let key = svc
        .generate_api_key(GUILD, &app, Actor::member(ALICE))
        .await
        .unwrap()
        .key;
    assert_eq!(verify(&svc, key.expose()).await, VerifyCode::Valid);
    support::revoke(&svc, GUILD, &app, Actor::approver(BOB))
        .await
        .unwrap();
    assert_eq!(verify(&svc, key.expose()).await, VerifyCode::Revoked);
    let secret_after = svc
        .authenticate_app(app.as_str(), issued.secret.expose(), &none)
        .await
        .unwrap();
    assert_eq!(secret_after.code, VerifyCode::Revoked);
}

/// Another process learns of a revocation: on PostgreSQL through a
/// notification (its cache would otherwise hold the answer for a minute), on
/// SQLite, which has none, once its cache's lifetime runs out.
async fn another_process_sees_a_revocation(db: &TestDb) {
    let (app, key) = active_app(db, "Shared").await;
    let postgres = db.store.backend() == Backend::Postgres;
    let ttl = if postgres { 60 } else { 1 };
    let peer = Service::new(
        db.peer_store().await,
        std::sync::Arc::new(ScopeCatalog::builtin()),
    )
    .with_policy(Policy {
        verify_cache_ttl: std::time::Duration::from_secs(ttl),
        ..Policy::default()
    });
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn({
        let peer = peer.clone();
        async move { peer.follow_credential_changes(stopped).await }
    });
    if postgres {
        // A notification sent before LISTEN took effect would be lost (the
        // connect-time flush covers that in real use, not in this test).
        until_following("the peer listens", &peer).await;
    }
    assert_eq!(
        verify(&peer, key.expose()).await,
        VerifyCode::Valid,
        "now cached"
    );

    support::revoke(&db.service, GUILD, &app, Actor::approver(BOB))
        .await
        .unwrap();
    let started = std::time::Instant::now();
    // On PostgreSQL well under the 60 s lifetime: only the notification can
    // explain the change. On SQLite the lifetime plus slack.
    let limit = std::time::Duration::from_secs(if postgres { 3 } else { ttl + 10 });
    while verify(&peer, key.expose()).await != VerifyCode::Revoked {
        assert!(
            started.elapsed() < limit,
            "the peer still says VALID after {limit:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let _ = stop.send(true);
    follower.await.unwrap();
    peer.store().close().await;
}

async fn last_used_is_written_at_most_once_a_minute(db: &TestDb) {
    let svc = &db.service;
    let (app, key) = active_app(db, "Busy").await;
    let stamp = |db: &TestDb| {
        let store = db.store.clone();
        let app = app.clone();
        async move {
            let mut tx = store.read().await.unwrap();
            let keys = tx
                .credentials_of(&app, keygate::domain::lifecycle::CredentialKind::Key)
                .await
                .unwrap();
            tx.rollback().await.unwrap();
            keys[0].last_used_at
        }
    };
    assert_eq!(stamp(db).await, None);
    assert_eq!(svc.flush_last_used().await.unwrap(), 0, "nothing to write");
    for _ in 0..5 {
        assert_eq!(verify(svc, key.expose()).await, VerifyCode::Valid);
    }
    assert_eq!(svc.flush_last_used().await.unwrap(), 1);
    let first = db.clock.now();
    assert_eq!(stamp(db).await, Some(first));

    db.clock.advance(chrono::TimeDelta::seconds(30));
    verify(svc, key.expose()).await;
    assert_eq!(svc.flush_last_used().await.unwrap(), 0, "the same minute");
    assert_eq!(stamp(db).await, Some(first));

    db.clock.advance(chrono::TimeDelta::seconds(31));
    // A key refused for a wrong scope was still used.
    svc.verify_key(key.expose(), &expect(None, None, &["payroll"]))
        .await
        .unwrap();
    assert_eq!(svc.flush_last_used().await.unwrap(), 1);
    assert_eq!(stamp(db).await, Some(db.clock.now()));
    // A key presented for another app is not its owner's use.
    db.clock.advance(chrono::TimeDelta::minutes(2));
    svc.verify_key(
        key.expose(),
        &expect(Some(&ApplicationId::generate()), None, &[]),
    )
    .await
    .unwrap();
    assert_eq!(svc.flush_last_used().await.unwrap(), 0);
}

async fn readiness_follows_the_database(db: &TestDb) {
    assert!(db.store.is_ready().await.unwrap());
    let peer = db.peer_store().await;
    peer.close().await;
    assert!(peer.is_ready().await.is_err(), "a closed pool is not ready");
}

async fn drafts_belong_to_one_user_and_survive_a_restart(db: &TestDb) {
    let svc = &db.service;
    // Offered, not stored: /app create reads only, so it offers a new id again.
    let DraftStart::New(offered) = svc.open_draft(GUILD, ALICE).await.unwrap() else {
        panic!("new")
    };
    assert!(matches!(
        svc.open_draft(GUILD, ALICE).await.unwrap(),
        DraftStart::New(again) if again != offered
    ));
    assert!(db.row_counts().await.contains(&("wizard_drafts", 0)));
    let draft = svc
        .create_draft(GUILD, &offered, ALICE, form("Resumable"), None)
        .await
        .unwrap();
    svc.advance_draft(
        &draft.id,
        ALICE,
        DraftInput::UserType(LoginUserType::Employee),
    )
    .await
    .unwrap();
    // One open draft per user per guild: /app create again offers it back.
    let DraftStart::Existing(again) = svc.open_draft(GUILD, ALICE).await.unwrap() else {
        panic!("existing")
    };
    assert_eq!(again.id, draft.id);
    assert!(matches!(
        svc.advance_draft(&draft.id, BOB, DraftInput::Next).await,
        Err(ServiceError::NotYourDraft)
    ));

    // A new process on the same database continues the draft.
    let restarted = db.restarted_service();
    let saved = restarted
        .advance_draft(&draft.id, ALICE, DraftInput::SourceApp(SourceApp::Bot))
        .await
        .unwrap();
    assert_eq!(saved.draft.user_type, Some(LoginUserType::Employee));
    assert_eq!(saved.draft.form.name, "Resumable");
    let saved = restarted
        .advance_draft(&draft.id, ALICE, DraftInput::Next)
        .await
        .unwrap();
    assert_eq!(saved.draft.step, WizardStep::Scopes);
    let saved = restarted
        .advance_draft(&draft.id, ALICE, DraftInput::Back)
        .await
        .unwrap();
    assert_eq!(saved.draft.step, WizardStep::Options);
    assert_eq!(
        saved.draft.source_app,
        Some(SourceApp::Bot),
        "Back keeps selections"
    );

    // A second fresh form of Alice's (an earlier /app create's) cannot
    // replace it, nor can a Start over that names another member's draft.
    assert!(matches!(
        svc.create_draft(GUILD, &new_draft_id(), ALICE, form("Second"), None)
            .await,
        Err(ServiceError::DraftExists)
    ));
    let carols = new_draft(svc, GUILD, CAROL, form("Carol's")).await.unwrap();
    assert!(matches!(
        svc.create_draft(
            GUILD,
            &new_draft_id(),
            ALICE,
            form("Second"),
            Some(&carols.id)
        )
        .await,
        Err(ServiceError::DraftExists)
    ));
    assert_eq!(svc.draft(&carols.id, CAROL).await.unwrap(), carols);
    // Start over replaces it when the new form is stored, in one step;
    // Cancel deletes it.
    let fresh = svc
        .create_draft(
            GUILD,
            &new_draft_id(),
            ALICE,
            form("Fresh"),
            Some(&draft.id),
        )
        .await
        .unwrap();
    assert_ne!(fresh.id, draft.id);
    assert!(matches!(
        svc.draft(&draft.id, ALICE).await,
        Err(ServiceError::DraftNotFound)
    ));
    svc.cancel_draft(&fresh.id, ALICE).await.unwrap();
    assert!(matches!(
        svc.draft(&fresh.id, ALICE).await,
        Err(ServiceError::DraftNotFound)
    ));
    svc.cancel_draft(&carols.id, CAROL).await.unwrap();

    // Drafts expire after an hour untouched; a new one takes an expired
    // one's place.
    let old = new_draft(svc, GUILD, BOB, form("Late")).await.unwrap();
    db.clock.advance(chrono::TimeDelta::minutes(61));
    assert!(matches!(
        svc.advance_draft(&old.id, BOB, DraftInput::Details(form("Late")))
            .await,
        Err(ServiceError::DraftNotFound)
    ));
    let later = new_draft(svc, GUILD, BOB, form("Later")).await.unwrap();
    assert_eq!(svc.draft(&later.id, BOB).await.unwrap(), later);
    assert!(db.row_counts().await.contains(&("wizard_drafts", 1)));
    db.clock.advance(chrono::TimeDelta::minutes(61));
    assert_eq!(svc.purge_expired_drafts().await.unwrap(), 1);
}

/// Forms of one member's submitted at once: fresh ones, then Start overs of
/// the draft that won. The store's one-draft-per-user rule lets one in.
async fn concurrent_forms_leave_one_draft(db: &TestDb) {
    let svc = &db.service;
    let count = |results: &[Result<SavedDraft, ServiceError>]| {
        let won: Vec<&SavedDraft> = results.iter().filter_map(|r| r.as_ref().ok()).collect();
        for r in results {
            assert!(matches!(r, Ok(_) | Err(ServiceError::DraftExists)), "{r:?}");
        }
        assert_eq!(won.len(), 1, "{results:?}");
        won[0].clone()
    };
    let fresh = futures_util::future::join_all((0..6).map(|n| {
        let name = format!("Fresh {n}");
        async move {
            svc.create_draft(GUILD, &new_draft_id(), ALICE, form(&name), None)
                .await
        }
    }))
    .await;
    let first = count(&fresh);
    assert!(db.row_counts().await.contains(&("wizard_drafts", 1)));
    let over = futures_util::future::join_all((0..6).map(|n| {
        let (name, old) = (format!("Over {n}"), first.id.clone());
        async move {
            svc.create_draft(GUILD, &new_draft_id(), ALICE, form(&name), Some(&old))
                .await
        }
    }))
    .await;
    let second = count(&over);
    assert!(db.row_counts().await.contains(&("wizard_drafts", 1)));
    assert_eq!(svc.draft(&second.id, ALICE).await.unwrap(), second);
    assert!(matches!(
        svc.draft(&first.id, ALICE).await,
        Err(ServiceError::DraftNotFound)
    ));
}

/// A double click on Submit: both presses queue to write at once; the
/// second is told the draft is gone, not that its own name is taken, and
/// one application is made.
async fn a_draft_submitted_twice_at_once_makes_one_app(db: &TestDb) {
    let svc = &db.service;
    let id = draft_to_review(svc, ALICE, "Twice").await;
    let saved = svc.draft(&id, ALICE).await.unwrap();
    // A write held open keeps both presses queued together: SQLite's
    // writer, and on PostgreSQL the draft's row, rewritten as is.
    let mut held = db.store.begin().await.unwrap();
    held.update_draft(&id, &saved.draft, chrono::Utc::now(), saved.expires_at)
        .await
        .unwrap();
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        held.commit().await.unwrap();
    };
    let ((a, b), ()) = tokio::join!(
        async {
            tokio::join!(
                svc.submit_draft(&id, ALICE, None),
                svc.submit_draft(&id, ALICE, None)
            )
        },
        release
    );
    let refused = match (a, b) {
        (Ok(_), Err(e)) | (Err(e), Ok(_)) => e,
        (a, b) => panic!("one Ok, one refusal; got {:?} and {:?}", a.err(), b.err()),
    };
    assert!(
        matches!(refused, ServiceError::DraftNotFound),
        "{refused:?}"
    );
    assert_eq!(svc.list_apps(GUILD).await.unwrap().len(), 1);
    assert!(matches!(
        svc.draft(&id, ALICE).await,
        Err(ServiceError::DraftNotFound)
    ));
}

/// An edit that commits while a Submit of the draft waits to write is what
/// gets submitted: nothing the member saved is lost.
async fn a_draft_edited_while_submit_queues_is_submitted_as_edited(db: &TestDb) {
    let svc = &db.service;
    let id = draft_to_review(svc, ALICE, "Edited").await;
    let saved = svc.draft(&id, ALICE).await.unwrap();
    let mut edited = saved.draft.clone();
    for action in [
        WizardAction::Back,
        WizardAction::SetScopes(vec!["guests".into()]),
        WizardAction::Next,
    ] {
        edited.apply(action).unwrap();
    }
    // Held open while the Submit queues, then committed first: SQLite's
    // writer, and on PostgreSQL the draft's row.
    let mut held = db.store.begin().await.unwrap();
    held.update_draft(&id, &edited, chrono::Utc::now(), saved.expires_at)
        .await
        .unwrap();
    let release = async {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        held.commit().await.unwrap();
    };
    let (submitted, ()) = tokio::join!(svc.submit_draft(&id, ALICE, None), release);
    let app = match submitted {
        Ok(s) => s.app,
        Err(e) => panic!("the edited draft is submitted: {e:?}"),
    };
    assert_eq!(app.scopes, vec!["guests".to_owned()]);
    assert!(matches!(
        svc.draft(&id, ALICE).await,
        Err(ServiceError::DraftNotFound)
    ));
}

async fn names_are_unique_per_guild_ignoring_case(db: &TestDb) {
    require_approvals(db, 1).await;
    let svc = &db.service;
    let first = submit(svc, ALICE, "Éclat Spa").await.app;
    // Two drafts with the same name can both reach review; the second Submit loses.
    let a = draft_to_review(svc, BOB, "Twin").await;
    let b = draft_to_review(svc, CAROL, "TWIN").await;
    svc.submit_draft(&a, BOB, None).await.unwrap();
    match svc.submit_draft(&b, CAROL, None).await {
        Err(ServiceError::Validation(e)) => {
            assert!(e.to_string().contains("already exists"), "{e}")
        }
        other => panic!("expected a name clash, got {other:?}"),
    }
    let DraftStart::New(d) = svc.open_draft(GUILD, DAVE).await.unwrap() else {
        panic!()
    };
    assert!(matches!(
        svc.create_draft(GUILD, &d, DAVE, form("éclat spa"), None)
            .await,
        Err(ServiceError::Validation(_))
    ));
    // A denied request gives its name back.
    svc.deny(GUILD, &first.id, Actor::approver(BOB), "try again")
        .await
        .unwrap();
    svc.create_draft(GUILD, &d, DAVE, form("éclat spa"), None)
        .await
        .unwrap();
    // Another guild is another organization.
    let other = keygate::domain::ids::GuildId(GUILD.0 + 1);
    new_draft(svc, other, ALICE, form("Twin")).await.unwrap();
}

/// Gives GUILD an audit channel, so its events queue for posting.
async fn set_audit_channel(svc: &Service) {
    let settings = GuildSettings {
        audit_channel: Some(ChannelId(99)),
        ..GuildSettings::defaults(GUILD)
    };
    svc.save_settings(Actor::member(ALICE), &settings)
        .await
        .unwrap();
}

/// A poster that outlived its lease gives its event back only if the event
/// still holds that lease: a newer one, another poster's, is left alone.
async fn a_late_audit_release_leaves_a_newer_lease_alone(db: &TestDb) {
    let svc = &db.service;
    set_audit_channel(svc).await;
    let now = db.clock.now();
    let mut tx = db.store.begin().await.unwrap();
    let event = tx.unposted_outbox(100).await.unwrap()[0].event.id;
    let first_lease = now + chrono::TimeDelta::seconds(30);
    assert!(tx.claim_audit_post(event, now, first_lease).await.unwrap());
    // The first lease lapsed; another poster takes the event over.
    let later = first_lease + chrono::TimeDelta::seconds(1);
    let second_lease = later + chrono::TimeDelta::seconds(30);
    assert!(
        tx.claim_audit_post(event, later, second_lease)
            .await
            .unwrap()
    );
    // The first poster wakes up and gives back what it thinks it holds.
    tx.release_audit_post(event, first_lease, later)
        .await
        .unwrap();
    let left = tx.unposted_outbox(100).await.unwrap();
    assert_eq!(
        left[0].next_attempt_at, second_lease,
        "the newer lease stands"
    );
    assert!(
        !tx.claim_audit_post(event, later, later + chrono::TimeDelta::seconds(30))
            .await
            .unwrap(),
        "nobody else takes the event while the second poster holds it"
    );
    // The holder's own release gives it back.
    tx.release_audit_post(event, second_lease, later)
        .await
        .unwrap();
    let left = tx.unposted_outbox(100).await.unwrap();
    assert_eq!(left[0].next_attempt_at, later, "due again at once");
    tx.commit().await.unwrap();
}

async fn audit_log_is_append_only_and_outbox_posts_once(db: &TestDb) {
    let svc = &db.service;
    // No audit channel: events are kept, not queued.
    submit(svc, ALICE, "Quiet").await;
    set_audit_channel(svc).await;
    submit(svc, ALICE, "Loud").await;

    let mut tx = db.store.begin().await.unwrap();
    let now = db.clock.now();
    let due = tx.unposted_outbox(100).await.unwrap();
    let kinds: Vec<_> = due.iter().map(|e| e.event.kind).collect();
    assert_eq!(
        kinds,
        vec![
            AuditKind::SettingsChanged,
            AuditKind::DraftSubmitted,
            AuditKind::CredentialsIssued
        ]
    );
    assert!(
        due.iter()
            .all(|e| e.next_attempt_at <= now && e.attempts == 0)
    );
    let first = due[0].event.id;
    let lease = now + chrono::TimeDelta::seconds(30);
    assert!(tx.claim_audit_post(first, now, lease).await.unwrap());
    assert!(
        !tx.claim_audit_post(first, now, lease).await.unwrap(),
        "one poster at a time"
    );
    assert!(tx.mark_audit_posted(first, now).await.unwrap());
    assert!(
        !tx.mark_audit_posted(first, now).await.unwrap(),
        "posted once"
    );
    let second = due[1].event.id;
    assert!(tx.claim_audit_post(second, now, lease).await.unwrap());
    // A poster whose lease lapsed (its token is not the row's) moves nothing.
    assert!(
        !tx.defer_audit_post(second, now, now + chrono::TimeDelta::hours(1))
            .await
            .unwrap()
    );
    assert!(tx.defer_audit_post(second, lease, lease).await.unwrap());
    let left = tx.unposted_outbox(100).await.unwrap();
    assert_eq!(left.len(), 2);
    assert_eq!(
        (left[0].event.id, left[0].attempts, left[0].next_attempt_at),
        (second, 1, lease)
    );
    assert!(
        !tx.claim_audit_post(second, now, lease).await.unwrap(),
        "not due yet"
    );
    let all = tx.audit_events(GUILD, None, 100).await.unwrap();
    assert_eq!(
        all.len(),
        5,
        "two submits with their credentials, one settings change"
    );
    assert!(all.windows(2).all(|w| w[0].id > w[1].id), "newest first");
    tx.commit().await.unwrap();

    let id = all[0].id;
    let update = db
        .execute_raw("UPDATE audit_events SET summary = 'x' WHERE id = $1", id)
        .await;
    let delete = db
        .execute_raw("DELETE FROM audit_events WHERE id = $1", id)
        .await;
    for err in [update, delete] {
        let err = err.expect_err("audit_events refuses changes");
        assert!(err.to_string().contains("append-only"), "{err}");
    }

    // An event written directly keeps every field.
    let mut tx = db.store.begin().await.unwrap();
    let event = NewAuditEvent {
        guild_id: GUILD,
        app_id: None,
        actor_id: None,
        kind: AuditKind::DmRedacted,
        summary: "redacted a DM".into(),
    };
    tx.append_audit(&event, db.clock.now()).await.unwrap();
    let back = tx.audit_events(GUILD, None, 1).await.unwrap().remove(0);
    tx.commit().await.unwrap();
    assert_eq!(
        (back.kind, back.actor_id, back.summary.as_str()),
        (AuditKind::DmRedacted, None, "redacted a DM")
    );
    assert_eq!(back.created_at, db.clock.now());
}

/// A key that went out as an interaction's answer, whose message is not
/// found yet, may be in the member's DM: it is not lost, however long it
/// goes unshown, until its answer is found or known never to have got it.
async fn a_key_in_an_answer_not_yet_found_is_not_issued_again(db: &TestDb) {
    let svc = &db.service;
    let app = submit(svc, ALICE, "Pending Answer").await.app;
    let answer = (ChannelId(10), InteractionId(800));
    let issued = svc
        .generate_api_key_answering(&app.id, Actor::member(ALICE), answer)
        .await
        .unwrap();
    db.clock.advance(svc.policy().stall_grace);
    assert!(matches!(
        svc.generate_api_key(GUILD, &app.id, Actor::member(ALICE))
            .await,
        Err(ServiceError::KeyAlreadyGenerated)
    ));
    assert!(matches!(
        svc.issue_again(Some(GUILD), &issued.key_id, Actor::member(ALICE))
            .await,
        Err(ServiceError::CredentialsBeingDelivered)
    ));
    // The answer never got its key (its deferral's edit was never sent).
    svc.answer_never_made(answer).await.unwrap();
    let again = svc
        .generate_api_key(GUILD, &app.id, Actor::member(ALICE))
        .await
        .unwrap();
    assert_ne!(again.key_id, issued.key_id, "issued again, in its place");
}

/// A key that answered an interaction is scheduled under the interaction's
/// id, then keyed by its message once that is known, lease cleared, once.
async fn an_answer_redaction_is_keyed_by_its_message_once_found(db: &TestDb) {
    let (app, _) = active_app(db, "Answered").await;
    let now = db.clock.now();
    let interaction = InteractionId(700);
    let mut tx = db.store.begin().await.unwrap();
    tx.schedule_redaction(&DmRedaction {
        channel_id: ChannelId(10),
        message_id: MessageId(interaction.0),
        app_id: app.clone(),
        user_id: ALICE,
        due_at: now,
        answer_of: Some(interaction),
        carries: Some("k_carried".to_owned()),
    })
    .await
    .unwrap();
    let lease = now + chrono::TimeDelta::seconds(60);
    assert!(
        tx.claim_redaction(ChannelId(10), MessageId(700), now, lease)
            .await
            .unwrap()
    );
    let due = tx.due_redactions(now).await.unwrap();
    assert_eq!(
        (due.len(), due[0].answer_of, due[0].message_id),
        (1, Some(interaction), MessageId(700))
    );
    assert_eq!(due[0].carries.as_deref(), Some("k_carried"));
    // An id that is not the answer's interaction re-keys nothing.
    assert!(
        !tx.answer_found(ChannelId(10), InteractionId(701), MessageId(900))
            .await
            .unwrap()
    );
    assert!(
        tx.answer_found(ChannelId(10), interaction, MessageId(900))
            .await
            .unwrap()
    );
    assert!(
        !tx.answer_found(ChannelId(10), interaction, MessageId(901))
            .await
            .unwrap(),
        "found once"
    );
    let due = tx.due_redactions(now).await.unwrap();
    assert_eq!(
        (due.len(), due[0].answer_of, due[0].message_id),
        (1, None, MessageId(900))
    );
    // The old key's lease went with it: the row can be claimed at once.
    assert!(
        tx.claim_redaction(ChannelId(10), MessageId(900), now, lease)
            .await
            .unwrap()
    );
    assert!(
        tx.mark_redacted(ChannelId(10), MessageId(900), Some(now), now)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
}

async fn redactions_are_scheduled_and_done_once(db: &TestDb) {
    let (app, _) = active_app(db, "Redact").await;
    let now = db.clock.now();
    let mut tx = db.store.begin().await.unwrap();
    for (message, minutes) in [(1, 15), (2, 30)] {
        tx.schedule_redaction(&DmRedaction {
            channel_id: ChannelId(10),
            message_id: MessageId(message),
            app_id: app.clone(),
            user_id: ALICE,
            due_at: now + chrono::TimeDelta::minutes(minutes),
            answer_of: None,
            carries: None,
        })
        .await
        .unwrap();
    }
    assert!(tx.due_redactions(now).await.unwrap().is_empty());
    let due = tx
        .due_redactions(now + chrono::TimeDelta::minutes(15))
        .await
        .unwrap();
    assert_eq!(
        due.iter().map(|r| r.message_id).collect::<Vec<_>>(),
        vec![MessageId(1)]
    );
    tx.commit().await.unwrap();

    // Finish brings every pending redaction of the app forward to now.
    let finished = db
        .service
        .finishing(&app, Actor::member(ALICE))
        .await
        .unwrap();
    db.service
        .finish(&finished, Actor::member(ALICE), None)
        .await
        .unwrap();
    let mut tx = db.store.begin().await.unwrap();
    let due = tx.due_redactions(now).await.unwrap();
    assert_eq!(due.len(), 2);
    // The worker read a schedule; a reschedule came before its write: the
    // write must not mark the newer schedule done.
    let read = due.iter().find(|r| r.message_id == MessageId(1)).unwrap();
    tx.schedule_redaction(&DmRedaction {
        due_at: now + chrono::TimeDelta::minutes(15),
        answer_of: None,
        carries: None,
        ..read.clone()
    })
    .await
    .unwrap();
    assert!(
        !tx.mark_redacted(ChannelId(10), MessageId(1), Some(read.due_at), now)
            .await
            .unwrap(),
        "a rescheduled DM stays scheduled"
    );
    assert!(
        tx.mark_redacted(
            ChannelId(10),
            MessageId(1),
            Some(now + chrono::TimeDelta::minutes(15)),
            now
        )
        .await
        .unwrap()
    );
    assert!(
        !tx.mark_redacted(ChannelId(10), MessageId(1), None, now)
            .await
            .unwrap()
    );
    assert_eq!(tx.due_redactions(now).await.unwrap().len(), 1);
    tx.commit().await.unwrap();
}

/// A write whose future is dropped before COMMIT (a handler's `?`, a
/// timeout) leaves nothing behind: not its rows, and not the write lock,
/// which this process's next writer and another process's both get.
async fn a_write_ended_without_commit_rolls_back_and_frees_the_writer(db: &TestDb) {
    let now = chrono::Utc::now();
    let settings = |n: u8| GuildSettings {
        approvals_required: n,
        ..GuildSettings::defaults(GUILD)
    };
    let mut tx = db.store.begin().await.unwrap();
    tx.save_guild_settings(&settings(3), now).await.unwrap();
    drop(tx);
    // Another process first: nothing of this one's would let go of SQLite's
    // lock for it (its busy timeout, 10 s, is longer than this wait).
    let peer = db.peer_store().await;
    let within = std::time::Duration::from_secs(5);
    let mut tx = tokio::time::timeout(within, peer.begin())
        .await
        .expect("the lock was let go")
        .unwrap();
    assert_eq!(
        tx.guild_settings(GUILD).await.unwrap(),
        settings(0),
        "rolled back"
    );
    tx.save_guild_settings(&settings(4), now).await.unwrap();
    tokio::time::timeout(within, tx.commit())
        .await
        .expect("committed in time")
        .unwrap();
    // This process's writer goes on: in no transaction left over, in a
    // transaction or statement by statement.
    let mut tx = db.store.begin().await.unwrap();
    tx.save_guild_settings(&settings(1), now).await.unwrap();
    drop(tx);
    let mut write = db.store.single(true).await.unwrap();
    write.save_guild_settings(&settings(2), now).await.unwrap();
    drop(write);
    let mut tx = db.store.begin().await.unwrap();
    assert_eq!(tx.guild_settings(GUILD).await.unwrap(), settings(2));
    tx.commit().await.unwrap();
    peer.close().await;
}

async fn settings_round_trip(db: &TestDb) {
    let svc = &db.service;
    assert_eq!(
        svc.settings(GUILD).await.unwrap(),
        GuildSettings::defaults(GUILD)
    );
    let settings = GuildSettings {
        audit_channel: Some(ChannelId(1)),
        approvals_channel: Some(ChannelId(2)),
        approver_role: Some(keygate::domain::ids::RoleId(3)),
        creator_role: Some(keygate::domain::ids::RoleId(u64::MAX >> 1)),
        approvals_required: 5,
        dm_lifetime: chrono::TimeDelta::seconds(1),
        request_expiry: chrono::TimeDelta::hours(720),
        ..GuildSettings::defaults(GUILD)
    };
    svc.save_settings(Actor::member(ALICE), &settings)
        .await
        .unwrap();
    assert_eq!(svc.settings(GUILD).await.unwrap(), settings);
    let changed = GuildSettings {
        approvals_required: 0,
        audit_channel: None,
        ..settings
    };
    svc.save_settings(Actor::member(ALICE), &changed)
        .await
        .unwrap();
    assert_eq!(svc.settings(GUILD).await.unwrap(), changed);
}

async fn list_and_show_apps(db: &TestDb) {
    let svc = &db.service;
    assert!(svc.list_apps(GUILD).await.unwrap().is_empty());
    let a = submit(svc, ALICE, "Alpha").await.app;
    db.clock.advance(chrono::TimeDelta::seconds(1));
    let b = submit(svc, BOB, "Beta").await.app;
    let apps = svc.list_apps(GUILD).await.unwrap();
    assert_eq!(apps, vec![a.clone(), b.clone()]);
    assert_eq!(
        apps[0].details.post_login_urls,
        vec!["https://spa.example.com/callback"]
    );
    assert_eq!(
        apps[0].details.post_logout_urls,
        vec!["https://spa.example.com/signed-out"]
    );
    assert_eq!(svc.app_by_name(GUILD, "bEtA").await.unwrap(), b);
    assert!(matches!(
        svc.app_by_name(GUILD, "Gamma").await,
        Err(ServiceError::AppNotFound)
    ));
    let other = keygate::domain::ids::GuildId(GUILD.0 + 1);
    assert!(matches!(
        svc.app(other, &a.id).await,
        Err(ServiceError::AppNotFound)
    ));
    assert!(svc.list_apps(other).await.unwrap().is_empty());
}

/// Runs one statement with one text parameter on `store`, behind every
/// cache's back: no notification goes out.
async fn behind_the_cache(store: &Store, sql: &'static str, param: &str) -> u64 {
    let done = match store {
        Store::Sqlite(pool, _) => sqlx::query(sql)
            .bind(param)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
        Store::Postgres(pool) => sqlx::query(sql)
            .bind(param)
            .execute(pool)
            .await
            .map(|r| r.rows_affected()),
    };
    done.expect("raw statement")
}

/// A service on its own store of `db` with a minute-long cache, listening
/// for changes (on PostgreSQL) until the returned sender says stop.
async fn long_cached_peer(
    db: &TestDb,
    store: Store,
) -> (
    Service,
    tokio::sync::watch::Sender<bool>,
    tokio::task::JoinHandle<()>,
) {
    let peer = long_cache(Service::new(
        store,
        std::sync::Arc::new(ScopeCatalog::builtin()),
    ));
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let follower = tokio::spawn({
        let peer = peer.clone();
        async move { peer.follow_credential_changes(stopped).await }
    });
    if db.store.backend() == Backend::Postgres {
        until_following("the peer listens", &peer).await;
    }
    (peer, stop, follower)
}

/// Polls until `peer` listens for credential changes, for at most 10 s.
async fn until_following(what: &str, peer: &Service) {
    until(what, std::time::Duration::from_secs(10), || {
        let peer = peer.clone();
        async move { peer.is_following_credential_changes() }
    })
    .await;
}

/// Polls `done` every 20 ms until it holds; panics after `limit`.
async fn until<F, Fut>(what: &str, limit: std::time::Duration, done: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = std::time::Instant::now();
    while !done().await {
        assert!(started.elapsed() < limit, "{what}: not after {limit:?}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// Polls until `service` answers REVOKED for `key`, for at most `secs` seconds.
async fn until_revoked(what: &str, service: &Service, key: &ApiKey, secs: u64) {
    until(what, std::time::Duration::from_secs(secs), || {
        let (service, key) = (service.clone(), key.expose().to_owned());
        async move { verify(&service, &key).await == VerifyCode::Revoked }
    })
    .await;
}

/// A revocation forgets the revoked app's entries only, in this process and
/// (on PostgreSQL, by notification) in others. The other app is revoked
/// behind the caches' back, so its cached VALID shows its entries were kept.
async fn revoking_one_app_leaves_the_others_cached(db: &TestDb) {
    let svc = long_cache(db.service.clone());
    let (a, a_key) = active_app(db, "First").await;
    let b = submit(&db.service, ALICE, "Second").await;
    let b_secret = b.credentials.expect("credentials").secret;
    let b_key = db
        .service
        .generate_api_key(GUILD, &b.app.id, Actor::member(ALICE))
        .await
        .unwrap()
        .key;
    let (peer, stop, follower) = long_cached_peer(db, db.peer_store().await).await;
    let none = Expectations::default();
    let authenticate_b = |s: &Service| {
        let (s, id, secret) = (s.clone(), b.app.id.clone(), b_secret.expose().to_owned());
        let none = none.clone();
        async move {
            s.authenticate_app(id.as_str(), &secret, &none)
                .await
                .unwrap()
                .code
        }
    };
    for s in [&svc, &peer] {
        assert_eq!(verify(s, a_key.expose()).await, VerifyCode::Valid);
        assert_eq!(verify(s, b_key.expose()).await, VerifyCode::Valid);
        assert_eq!(authenticate_b(s).await, VerifyCode::Valid);
    }
    let changed = behind_the_cache(
        &db.store,
        "UPDATE applications SET status = 'revoked' WHERE id = $1",
        b.app.id.as_str(),
    )
    .await;
    assert_eq!(changed, 1);
    let fresh = db.restarted_service();
    assert_eq!(verify(&fresh, b_key.expose()).await, VerifyCode::Revoked);

    support::revoke(&svc, GUILD, &a, Actor::approver(BOB))
        .await
        .unwrap();
    assert_eq!(
        verify(&svc, a_key.expose()).await,
        VerifyCode::Revoked,
        "at once"
    );
    assert_eq!(
        verify(&svc, b_key.expose()).await,
        VerifyCode::Valid,
        "B's key kept"
    );
    assert_eq!(
        authenticate_b(&svc).await,
        VerifyCode::Valid,
        "B's Secret kept"
    );
    if db.store.backend() == Backend::Postgres {
        until_revoked("the peer hears of A", &peer, &a_key, 10).await;
        assert_eq!(verify(&peer, b_key.expose()).await, VerifyCode::Valid);
        assert_eq!(authenticate_b(&peer).await, VerifyCode::Valid);
    }
    let _ = stop.send(true);
    follower.await.unwrap();
    peer.store().close().await;
}

/// A listener whose connection dropped may have missed notifications, so the
/// cache is flushed, and a new listener takes its place. The first key is
/// revoked with raw SQL, which notifies nobody: only the flush can reveal it
/// within the 60 s lifetime. The second is revoked after the listener is
/// back, and only its notification can reveal it. PostgreSQL only: SQLite
/// has no listener.
async fn a_dropped_listener_flushes_the_cache_and_is_reopened(db: &TestDb) {
    if db.store.backend() != Backend::Postgres {
        return;
    }
    let (app, key) = active_app(db, "Reconnected").await;
    // Tests share the server: the name picks this test's listener alone.
    let name = format!("kg_listener_{}", ApplicationId::generate().as_str());
    let options = sqlx::postgres::PgConnectOptions::from_str(&db.database_url())
        .expect("the test database URL")
        .application_name(&name);
    let store = Store::connect_postgres(options)
        .await
        .expect("open the peer");
    let (peer, stop, follower) = long_cached_peer(db, store).await;
    assert_eq!(verify(&peer, key.expose()).await, VerifyCode::Valid);
    let changed = behind_the_cache(
        &db.store,
        "UPDATE api_keys SET revoked_at = created_at WHERE app_id = $1",
        app.as_str(),
    )
    .await;
    assert_eq!(changed, 1);
    assert_eq!(
        verify(&peer, key.expose()).await,
        VerifyCode::Valid,
        "cached"
    );

    let Store::Postgres(admin) = &db.store else {
        unreachable!("checked above")
    };
    until(
        "the listener is killed",
        std::time::Duration::from_secs(10),
        || async {
            let killed: Vec<bool> = sqlx::query_scalar(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = $1 AND query LIKE 'LISTEN%'",
            )
            .bind(&name)
            .fetch_all(admin)
            .await
            .expect("pg_stat_activity");
            killed.contains(&true)
        },
    )
    .await;
    until_revoked("the peer sees the revocation", &peer, &key, 20).await;

    let (second, second_key) = active_app(db, "Reconnected too").await;
    until_following("the peer listens again", &peer).await;
    // The reopen flushed the cache: fill it again.
    assert_eq!(verify(&peer, second_key.expose()).await, VerifyCode::Valid);
    support::revoke(&db.service, GUILD, &second, Actor::approver(BOB))
        .await
        .unwrap();
    until_revoked("the peer hears of the second", &peer, &second_key, 3).await;
    let _ = stop.send(true);
    follower.await.unwrap();
    peer.store().close().await;
}

/// Fullwidth and other compatibility forms of a live name are refused.
async fn names_compare_after_nfkc(db: &TestDb) {
    let svc = &db.service;
    submit(svc, ALICE, "Front Desk").await;
    let DraftStart::New(d) = svc.open_draft(GUILD, BOB).await.unwrap() else {
        panic!()
    };
    for look_alike in [
        "ＦＲＯＮＴ desk",
        "ＦＲＯＮＴ\u{3000}ＤＥＳＫ",
        "front desk",
    ] {
        match svc
            .create_draft(GUILD, &d, BOB, form(look_alike), None)
            .await
        {
            Err(ServiceError::Validation(e)) => {
                assert!(e.to_string().contains("already exists"), "{e}")
            }
            other => panic!("{look_alike:?} should clash with Front Desk, got {other:?}"),
        }
    }
    let found = svc.app_by_name(GUILD, "ＦＲＯＮＴ ＤＥＳＫ").await.unwrap();
    assert_eq!(found.details.name, "Front Desk");
}

/// Migration 0005's Rust step recomputes every stored name key, keeps two
/// live apps whose names now collide (the older keeps the name; both are
/// logged), and runs once.
async fn stored_name_keys_are_recomputed_once(db: &TestDb) {
    let logs = captured_logs("info");
    let old = TestDb::at_version(db.store.backend(), 4).await;
    let id = || ApplicationId::generate().as_str().to_owned();
    let (fullwidth, ascii, denied, spa, plain) = (id(), id(), id(), id(), id());
    let rows = [
        old_app_row(&fullwidth, "ＦＲＯＮＴ desk", "key_issued", 1_000),
        // Distinct before 0005 ("front desk" vs "ｆｒｏｎｔ desk"), equal now.
        old_app_row(&ascii, "Front Desk", "approved", 2_000),
        // A dead row holds no name: it gets its key, and no collision.
        old_app_row(&denied, "ＳＰＡ", "denied", 3_000),
        old_app_row(&spa, "Spa", "pending_approval", 4_000),
        old_app_row(&plain, "Lobby", "approved", 5_000),
    ];
    old.execute_sql(&rows.concat()).await;
    old.store.migrate().await.unwrap();

    let keys_sql = "SELECT id, name_key FROM applications ORDER BY created_at";
    let expected: Vec<(String, Option<String>)> = [
        (&fullwidth, "front desk".to_owned()),
        (&ascii, format!("front desk\u{1f}{ascii}")),
        (&denied, "spa".to_owned()),
        (&spa, "spa".to_owned()),
        (&plain, "lobby".to_owned()),
    ]
    .into_iter()
    .map(|(id, key)| (id.clone(), Some(key)))
    .collect();
    assert_eq!(old.text_pairs(keys_sql).await, expected);
    // Both live apps are kept; the name belongs to the older one.
    let svc = &old.service;
    assert_eq!(svc.list_apps(GUILD).await.unwrap().len(), 5);
    let found = svc.app_by_name(GUILD, "Front Desk").await.unwrap();
    assert_eq!(found.id.as_str(), fullwidth);
    let logged = logs.text();
    assert!(
        logged.lines().any(|l| l.contains("WARN")
            && l.contains("compare equal")
            && l.contains(&fullwidth)
            && l.contains(&ascii)),
        "the collision is logged at warn with both apps"
    );

    // Once: a later start finds it done and rewrites nothing, even a key
    // that a recomputation would change.
    old.execute_sql(&format!(
        "UPDATE applications SET name_key = 'untouched' WHERE id = '{plain}'"
    ))
    .await;
    old.store.migrate().await.unwrap();
    let again = old.text_pairs(keys_sql).await;
    assert_eq!(again[4].1.as_deref(), Some("untouched"));
    assert_eq!(again[..4], expected[..4]);
    let marks = old
        .text_pairs("SELECT id, CAST(done_at AS TEXT) FROM data_migrations")
        .await;
    assert_eq!(marks.len(), 1, "{marks:?}");
    old.close().await;
}

/// Migration 0006: requests approved before 0002 (which added `delivered_at`)
/// were delivered at approval; they count as delivered, and only they. One
/// approved after 0002 and not delivered yet stays for the worker.
async fn approvals_decided_before_0002_count_as_delivered(db: &TestDb) {
    let old = TestDb::at_version(db.store.backend(), 1).await;
    let id = || ApplicationId::generate().as_str().to_owned();
    let (before, denied, after) = (id(), id(), id());
    let day = 86_400_000;
    let now = chrono::Utc::now().timestamp_millis();
    // Decided under 0001, a day before the upgrade.
    old.execute_sql(&old_request_rows(&before, "approved", now - day))
        .await;
    old.execute_sql(&old_request_rows(&denied, "denied", now - day))
        .await;
    old.store.migrate_to(5).await.unwrap();
    // Approved by a keygate with 0002 (past 0002's second), its DM not sent
    // yet: the worker must still deliver it.
    let later = chrono::Utc::now().timestamp_millis() + 2_000;
    old.execute_sql(&old_request_rows(&after, "approved", later))
        .await;
    old.store.migrate().await.unwrap();

    let mut delivered = old
        .text_pairs("SELECT app_id, CAST(delivered_at AS TEXT) FROM approval_requests")
        .await;
    delivered.sort();
    let mut expected = vec![
        (before.clone(), Some((now - day).to_string())),
        (denied, None),
        (after.clone(), None),
    ];
    expected.sort();
    assert_eq!(delivered, expected);
    // What the approval worker would retry: the later one alone.
    old.clock
        .set(chrono::Utc::now() + chrono::TimeDelta::days(1));
    let stalled = old.service.stalled_requests().await.unwrap();
    let undelivered: Vec<&str> = stalled.undelivered.iter().map(|a| a.id.as_str()).collect();
    assert_eq!(undelivered, vec![after.as_str()]);
    old.close().await;
}

async fn retry_schedules_and_channel_pauses_round_trip(db: &TestDb) {
    use keygate::domain::retry::{ChannelLoss, Job};
    let (app, _) = active_app(db, "Retried").await;
    let now = db.clock.now();
    let later = now + chrono::TimeDelta::seconds(2);
    let mut tx = db.store.begin().await.unwrap();
    tx.schedule_redaction(&due_now(&app, now)).await.unwrap();
    tx.record_failure(Job::Redact, "10:7", 1, now)
        .await
        .unwrap();
    tx.record_failure(Job::Redact, "10:7", 2, later)
        .await
        .unwrap();
    assert!(tx.mark_alerted(Job::Redact, "10:7", now).await.unwrap());
    assert!(
        !tx.mark_alerted(Job::Redact, "10:7", later).await.unwrap(),
        "told once"
    );
    // A request that is not pending has nothing left to retry.
    tx.record_failure(Job::PostRequest, app.as_str(), 1, later)
        .await
        .unwrap();
    let retries = tx.retries(Job::Redact).await.unwrap();
    let r = retries["10:7"];
    assert_eq!((r.failures, r.next_attempt_at, r.alerted), (2, later, true));
    assert!(tx.retries(Job::Deliver).await.unwrap().is_empty());

    assert_eq!(tx.purge_settled_retries().await.unwrap(), 1);
    assert!(tx.retries(Job::PostRequest).await.unwrap().is_empty());
    assert_eq!(tx.retries(Job::Redact).await.unwrap().len(), 1, "still due");
    tx.mark_redacted(ChannelId(10), MessageId(7), None, now)
        .await
        .unwrap();
    assert_eq!(tx.purge_settled_retries().await.unwrap(), 1);

    let (c, g) = (ChannelId(20), GuildId(1));
    assert!(
        tx.pause_channel(g, c, ChannelLoss::MissingPermissions, now, later)
            .await
            .unwrap()
    );
    assert!(
        !tx.pause_channel(
            g,
            c,
            ChannelLoss::UnknownChannel,
            later,
            later + chrono::TimeDelta::minutes(10)
        )
        .await
        .unwrap(),
        "paused once; the probe moves"
    );
    let pause = tx.channel_pauses().await.unwrap()[&c];
    assert_eq!(
        (pause.loss, pause.paused_at, pause.next_probe_at),
        (
            ChannelLoss::UnknownChannel,
            now,
            later + chrono::TimeDelta::minutes(10)
        )
    );
    assert!(!tx.unpause_channels(&[ChannelId(21)]).await.unwrap());
    assert!(tx.unpause_channels(&[ChannelId(21), c]).await.unwrap());
    assert!(tx.channel_pauses().await.unwrap().is_empty());
    tx.commit().await.unwrap();
}

/// Two processes (two pools on one database) claim the items of the
/// background jobs: one holds each until it gives it back or its lease
/// lapses, and an item done needs no claim.
async fn background_jobs_claim_each_item_for_one_process(db: &TestDb) {
    use keygate::domain::retry::Job;
    require_approvals(db, 1).await;
    let app = submit(&db.service, ALICE, "Claimed").await.app.id;
    let peer = db.peer_store().await;
    let now = db.clock.now();
    let lease = now + chrono::TimeDelta::seconds(60);
    let claim = |store: &Store, job: Job, at: chrono::DateTime<chrono::Utc>| {
        let (store, app) = (store.clone(), app.clone());
        async move {
            let mut tx = store.begin().await.unwrap();
            let claimed = tx
                .claim_request(job, &app, at, at + chrono::TimeDelta::seconds(60))
                .await
                .unwrap();
            tx.commit().await.unwrap();
            claimed
        }
    };
    let release = |store: &Store, until: chrono::DateTime<chrono::Utc>| {
        let (store, app) = (store.clone(), app.clone());
        async move {
            let mut tx = store.begin().await.unwrap();
            tx.release_request(&app, until, None).await.unwrap();
            tx.commit().await.unwrap();
        }
    };
    assert!(claim(&db.store, Job::PostRequest, now).await);
    assert!(
        !claim(&peer, Job::PostRequest, now).await,
        "held by the first"
    );
    assert!(
        !claim(&db.store, Job::Remind, now).await,
        "one job at a time"
    );
    // Expiry locks only a request nobody holds, in the locking statement
    // itself: a lease taken after expiry's read still keeps it off.
    let mut expirer = peer.begin().await.unwrap();
    assert!(
        expirer
            .try_lock_approval_request(&app, now)
            .await
            .unwrap()
            .is_none(),
        "a leased request is not locked for expiry"
    );
    assert!(
        expirer
            .try_lock_approval_request(&app, lease)
            .await
            .unwrap()
            .is_some(),
        "a lapsed lease does not keep expiry off"
    );
    expirer.rollback().await.unwrap();
    assert!(
        claim(&peer, Job::PostRequest, lease).await,
        "a lapsed lease is taken over"
    );
    release(&db.store, lease).await;
    assert!(
        !claim(&db.store, Job::PostRequest, lease).await,
        "the first holder's late release leaves the new lease alone"
    );
    release(&peer, lease + chrono::TimeDelta::seconds(60)).await;
    let mut tx = peer.begin().await.unwrap();
    tx.set_request_message(&app, ChannelId(30), MessageId(31))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert!(
        !claim(&db.store, Job::PostRequest, now).await,
        "posted: done"
    );
    assert!(!claim(&db.store, Job::Deliver, now).await, "not approved");
    assert!(
        claim(&db.store, Job::Remind, now).await,
        "released, still to remind"
    );

    // PostgreSQL passes over a row another transaction has locked rather
    // than wait for it (SQLite has a single writer: nobody else holds one).
    if db.store.backend() == Backend::Postgres {
        let mut holder = db.store.begin().await.unwrap();
        holder.lock_approval_request(&app).await.unwrap();
        let skipped = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            claim(&peer, Job::Remind, lease),
        )
        .await;
        assert_eq!(
            skipped,
            Ok(false),
            "SKIP LOCKED: not claimed, not waited for"
        );
        let mut expirer = peer.begin().await.unwrap();
        let expiring = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            expirer.try_lock_approval_request(&app, lease),
        )
        .await;
        assert!(
            matches!(expiring, Ok(Ok(None))),
            "passed over: {expiring:?}"
        );
        expirer.rollback().await.unwrap();
        holder.rollback().await.unwrap();
        assert!(claim(&peer, Job::Remind, lease).await);
    }

    let mut tx = db.store.begin().await.unwrap();
    tx.schedule_redaction(&due_now(&app, now)).await.unwrap();
    assert!(
        tx.claim_redaction(ChannelId(10), MessageId(7), now, lease)
            .await
            .unwrap()
    );
    tx.commit().await.unwrap();
    let mut tx = peer.begin().await.unwrap();
    assert!(
        !tx.claim_redaction(ChannelId(10), MessageId(7), now, lease)
            .await
            .unwrap()
    );
    tx.release_redaction(ChannelId(10), MessageId(7), lease, None)
        .await
        .unwrap();
    assert!(
        tx.claim_redaction(ChannelId(10), MessageId(7), now, lease)
            .await
            .unwrap()
    );
    tx.mark_redacted(ChannelId(10), MessageId(7), None, now)
        .await
        .unwrap();
    tx.release_redaction(ChannelId(10), MessageId(7), lease, None)
        .await
        .unwrap();
    assert!(
        !tx.claim_redaction(ChannelId(10), MessageId(7), now, lease)
            .await
            .unwrap(),
        "done: nothing to claim"
    );
    tx.commit().await.unwrap();
}

/// Alice's DM 10:7 of `app`, to redact at `now`.
fn due_now(app: &ApplicationId, now: chrono::DateTime<chrono::Utc>) -> DmRedaction {
    DmRedaction {
        channel_id: ChannelId(10),
        message_id: MessageId(7),
        app_id: app.clone(),
        user_id: ALICE,
        due_at: now,
        answer_of: None,
        carries: None,
    }
}
