//! What a presented credential is worth: the verify API's codes and the rule that picks one.

use super::application::{AppStatus, LoginUserType, SourceApp};
use super::credentials::ApplicationId;
use super::ids::GuildId;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::HashSet;

/// The verify API's answer, first match wins in the order listed, so a caller
/// holding someone else's key learns nothing past `NOT_FOUND` or `WRONG_APP`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VerifyCode {
    /// Not a keygate credential, or mistyped (checksum): never looked up.
    Malformed,
    /// Never issued, or of another server than the one pinned.
    NotFound,
    /// A real key, of another application than the one pinned.
    WrongApp,
    Revoked,
    Expired,
    /// A requested scope is not granted.
    InsufficientScope,
    Valid,
}

impl VerifyCode {
    pub const ALL: [VerifyCode; 7] = [
        Self::Malformed,
        Self::NotFound,
        Self::WrongApp,
        Self::Revoked,
        Self::Expired,
        Self::InsufficientScope,
        Self::Valid,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Malformed => "MALFORMED",
            Self::NotFound => "NOT_FOUND",
            Self::WrongApp => "WRONG_APP",
            Self::Revoked => "REVOKED",
            Self::Expired => "EXPIRED",
            Self::InsufficientScope => "INSUFFICIENT_SCOPE",
            Self::Valid => "VALID",
        }
    }
}

/// What a valid credential tells about its application: nothing secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppCard {
    pub id: ApplicationId,
    pub guild_id: GuildId,
    pub name: String,
    pub user_type: LoginUserType,
    pub source_app: SourceApp,
    pub status: AppStatus,
    pub scopes: Vec<String>,
}

/// A stored API key with its application, as the verify API reads (and caches) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyStanding {
    pub key_id: String,
    /// The display prefix (`kg_AbCd`).
    pub start: String,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub last_used_at: Option<DateTime<Utc>>,
    /// Set once the key was rotated: it works until then.
    pub grace: Option<GraceView>,
    pub app: AppCard,
}

/// A replaced credential's grace: what replaced it and when it stops working.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GraceView {
    pub replaced_by: String,
    pub ends_at: DateTime<Utc>,
}

/// An application's Secret, as `/v1/apps/authenticate` reads (and caches) it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretStanding {
    pub secret_id: String,
    pub start: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    pub grace: Option<GraceView>,
    pub app: AppCard,
}

/// What the caller pinned besides the credential.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expectations {
    pub app_id: Option<ApplicationId>,
    pub guild_id: Option<GuildId>,
    pub scopes: Vec<String>,
}

/// The code, and for `INSUFFICIENT_SCOPE` which requested scopes are missing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assessment {
    pub code: VerifyCode,
    pub missing_scopes: Vec<String>,
}

impl Assessment {
    fn code(code: VerifyCode) -> Self {
        Self {
            code,
            missing_scopes: Vec::new(),
        }
    }

    pub fn is_valid(&self) -> bool {
        self.code == VerifyCode::Valid
    }
}

/// Picks the code for a credential found (or not) in the store. `expires_at`
/// is when it stops working (its expiry, or its grace end when rotated
/// sooner), None for a Secret never rotated. Computed on every
/// request from the record and the clock, so a cached record never makes an
/// expiry late.
pub fn assess(
    app: Option<&AppCard>,
    revoked: bool,
    expires_at: Option<DateTime<Utc>>,
    expect: &Expectations,
    now: DateTime<Utc>,
) -> Assessment {
    let Some(app) = app else {
        return Assessment::code(VerifyCode::NotFound);
    };
    if expect.guild_id.is_some_and(|g| g != app.guild_id) {
        return Assessment::code(VerifyCode::NotFound);
    }
    if expect.app_id.as_ref().is_some_and(|a| *a != app.id) {
        return Assessment::code(VerifyCode::WrongApp);
    }
    if revoked || app.status == AppStatus::Revoked {
        return Assessment::code(VerifyCode::Revoked);
    }
    if expires_at.is_some_and(|t| t <= now) {
        return Assessment::code(VerifyCode::Expired);
    }
    let granted: HashSet<&str> = app.scopes.iter().map(String::as_str).collect();
    let mut seen = HashSet::new();
    let missing: Vec<String> = expect
        .scopes
        .iter()
        .filter(|s| !granted.contains(s.as_str()) && seen.insert(s.as_str()))
        .cloned()
        .collect();
    if missing.is_empty() {
        Assessment::code(VerifyCode::Valid)
    } else {
        Assessment {
            code: VerifyCode::InsufficientScope,
            missing_scopes: missing,
        }
    }
}

impl KeyStanding {
    pub fn assess(&self, expect: &Expectations, now: DateTime<Utc>) -> Assessment {
        let ends = match &self.grace {
            Some(g) => g.ends_at.min(self.expires_at),
            None => self.expires_at,
        };
        assess(
            Some(&self.app),
            self.revoked_at.is_some(),
            Some(ends),
            expect,
            now,
        )
    }
}

impl SecretStanding {
    pub fn assess(&self, expect: &Expectations, now: DateTime<Utc>) -> Assessment {
        assess(
            Some(&self.app),
            self.revoked_at.is_some(),
            self.grace.as_ref().map(|g| g.ends_at),
            expect,
            now,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{TimeDelta, TimeZone};

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 30, 12, 0, 0).unwrap()
    }

    fn standing() -> KeyStanding {
        KeyStanding {
            key_id: "key_1".into(),
            start: "kg_AbCd".into(),
            created_at: now() - TimeDelta::days(1),
            expires_at: now() + TimeDelta::days(1),
            revoked_at: None,
            last_used_at: None,
            grace: None,
            app: AppCard {
                id: ApplicationId::generate(),
                guild_id: GuildId(7),
                name: "Front desk".into(),
                user_type: LoginUserType::Guest,
                source_app: SourceApp::Bot,
                status: AppStatus::KeyIssued,
                scopes: vec!["appointments".into(), "guests".into()],
            },
        }
    }

    #[test]
    fn first_match_wins_in_the_documented_order() {
        let other_app = ApplicationId::generate();
        let base = standing();
        let revoked_expired = KeyStanding {
            revoked_at: Some(now()),
            expires_at: now() - TimeDelta::seconds(1),
            ..base.clone()
        };
        let expired = KeyStanding {
            expires_at: now(),
            ..base.clone()
        };
        let app_revoked = KeyStanding {
            app: AppCard {
                status: AppStatus::Revoked,
                ..base.app.clone()
            },
            ..base.clone()
        };
        let grace = |ends_at| KeyStanding {
            grace: Some(GraceView {
                replaced_by: "key_2".into(),
                ends_at,
            }),
            ..base.clone()
        };
        let in_grace = grace(now() + TimeDelta::hours(1));
        let grace_over = grace(now());
        let wants = |scopes: &[&str]| Expectations {
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
            ..Expectations::default()
        };
        let cases: Vec<(&str, Option<&KeyStanding>, Expectations, VerifyCode)> = vec![
            (
                "unknown",
                None,
                Expectations::default(),
                VerifyCode::NotFound,
            ),
            (
                "another server pinned, even with the wrong app too",
                Some(&revoked_expired),
                Expectations {
                    guild_id: Some(GuildId(8)),
                    app_id: Some(other_app.clone()),
                    ..wants(&["nope"])
                },
                VerifyCode::NotFound,
            ),
            (
                "another app pinned beats revoked and expired",
                Some(&revoked_expired),
                Expectations {
                    app_id: Some(other_app),
                    ..Expectations::default()
                },
                VerifyCode::WrongApp,
            ),
            (
                "revoked beats expired and scopes",
                Some(&revoked_expired),
                wants(&["nope"]),
                VerifyCode::Revoked,
            ),
            (
                "a revoked app revokes its key",
                Some(&app_revoked),
                Expectations::default(),
                VerifyCode::Revoked,
            ),
            (
                "expired at the exact instant",
                Some(&expired),
                wants(&["nope"]),
                VerifyCode::Expired,
            ),
            (
                "a replaced key works during its grace",
                Some(&in_grace),
                Expectations::default(),
                VerifyCode::Valid,
            ),
            (
                "a replaced key expires when its grace ends",
                Some(&grace_over),
                wants(&["nope"]),
                VerifyCode::Expired,
            ),
            (
                "missing scope",
                Some(&base),
                wants(&["guests", "payroll"]),
                VerifyCode::InsufficientScope,
            ),
            (
                "own server and app pinned, granted scopes",
                Some(&base),
                Expectations {
                    guild_id: Some(GuildId(7)),
                    app_id: Some(base.app.id.clone()),
                    ..wants(&["guests"])
                },
                VerifyCode::Valid,
            ),
        ];
        for (case, standing, expect, code) in cases {
            let got = match standing {
                Some(s) => s.assess(&expect, now()),
                None => assess(None, false, None, &expect, now()),
            };
            assert_eq!(got.code, code, "{case}");
        }
    }

    #[test]
    fn missing_scopes_are_listed_once_each() {
        let s = standing();
        let expect = Expectations {
            scopes: vec!["payroll".into(), "guests".into(), "payroll".into()],
            ..Expectations::default()
        };
        let a = s.assess(&expect, now());
        assert_eq!(a.code, VerifyCode::InsufficientScope);
        assert_eq!(a.missing_scopes, vec!["payroll".to_owned()]);
    }

    #[test]
    fn codes_serialize_as_documented() {
        for code in VerifyCode::ALL {
            assert_eq!(
                serde_json::to_value(code).unwrap(),
                serde_json::json!(code.as_str())
            );
        }
    }
}
