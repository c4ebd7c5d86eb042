//! Stored keys and Secrets over their life: rotation with a grace period, revocation, expiry warnings.

use super::credentials::{ApplicationId, CredentialHash, KEY_ID_PREFIX, SECRET_ID_PREFIX};
use super::ids::UserId;
use chrono::{DateTime, TimeDelta, Utc};

/// Which credential of an application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum CredentialKind {
    Key,
    Secret,
}

impl CredentialKind {
    pub const ALL: [CredentialKind; 2] = [Self::Key, Self::Secret];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Key => "key",
            Self::Secret => "secret",
        }
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Key => "API key",
            Self::Secret => "Secret",
        }
    }

    /// The kind a public credential id (`key_…`, `sec_…`) names.
    pub fn of_id(id: &str) -> Option<Self> {
        if id.starts_with(KEY_ID_PREFIX) {
            Some(Self::Key)
        } else if id.starts_with(SECRET_ID_PREFIX) {
            Some(Self::Secret)
        } else {
            None
        }
    }
}

/// How long a replaced credential keeps working.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Grace {
    Now,
    Hour,
    Day,
    Week,
    Month,
}

impl Grace {
    pub const ALL: [Grace; 5] = [Self::Now, Self::Hour, Self::Day, Self::Week, Self::Month];
    /// Zenoti's own rotation lets the old key work for a week.
    pub const DEFAULT: Grace = Grace::Week;

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Now => "now",
            Self::Hour => "1h",
            Self::Day => "24h",
            Self::Week => "7d",
            Self::Month => "30d",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|g| g.as_str() == value)
    }

    pub fn duration(self) -> TimeDelta {
        match self {
            Self::Now => TimeDelta::zero(),
            Self::Hour => TimeDelta::hours(1),
            Self::Day => TimeDelta::hours(24),
            Self::Week => TimeDelta::days(7),
            Self::Month => TimeDelta::days(30),
        }
    }

    /// When a credential replaced at `now` stops: never past its own expiry.
    pub fn ends_at(self, now: DateTime<Utc>, expires_at: Option<DateTime<Utc>>) -> DateTime<Utc> {
        let end = now + self.duration();
        expires_at.map_or(end, |e| end.min(e)).max(now)
    }
}

/// Where a stored credential stands at a moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialState {
    Active,
    /// Replaced, still working until then.
    InGrace {
        until: DateTime<Utc>,
    },
    Expired,
    Revoked,
}

/// A stored key or Secret: its hash and standing, never the credential itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredCredential {
    pub kind: CredentialKind,
    /// Public handle (`key_…`, `sec_…`).
    pub id: String,
    pub app_id: ApplicationId,
    pub hash: CredentialHash,
    /// The display prefix (`kg_AbCd`, `kgs_AbCd`).
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    /// Keys expire; Secrets do not.
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// The credential that replaced this one.
    pub replaced_by: Option<String>,
    pub rotated_by: Option<UserId>,
    /// A replaced credential works until then.
    pub grace_ends_at: Option<DateTime<Utc>>,
    /// When it reached its owner; None: never shown, so it may be issued again.
    pub shown_at: Option<DateTime<Utc>>,
    /// When the verify API last saw it (keys; written at most once a minute).
    pub last_used_at: Option<DateTime<Utc>>,
}

impl StoredCredential {
    /// Current: not replaced and not revoked (at most one per app and kind).
    pub fn is_current(&self) -> bool {
        self.replaced_by.is_none() && self.revoked_at.is_none()
    }

    pub fn state(&self, now: DateTime<Utc>) -> CredentialState {
        if self.revoked_at.is_some() {
            return CredentialState::Revoked;
        }
        let end = match (self.grace_ends_at, self.expires_at) {
            (Some(g), Some(e)) => Some(g.min(e)),
            (g, e) => g.or(e),
        };
        match end {
            Some(end) if end <= now => CredentialState::Expired,
            _ => match self.grace_ends_at {
                Some(until) => CredentialState::InGrace { until },
                None => CredentialState::Active,
            },
        }
    }
}

/// Expiry warnings go out this many days before a key expires, once each.
pub const WARNING_DAYS: [i64; 3] = [30, 7, 1];

fn window_start(expires_at: DateTime<Utc>, days: i64) -> DateTime<Utc> {
    expires_at - TimeDelta::days(days)
}

/// The next warning of a key after stage `sent` (None: none sent yet): the
/// start of the first later stage whose window had not begun at `from` (the
/// key's issue, for its first one). A stage already running when the key was
/// issued is skipped: a 10-day key gets no "30 days left" warning.
pub fn next_warning(
    expires_at: DateTime<Utc>,
    from: DateTime<Utc>,
    sent: Option<i64>,
) -> Option<DateTime<Utc>> {
    WARNING_DAYS
        .into_iter()
        .filter(|d| sent.is_none_or(|s| *d < s))
        .map(|d| window_start(expires_at, d))
        .find(|start| *start > from)
}

/// The stage a warning sent at `now` announces: the smallest one whose window
/// has begun, so a bot that was down over two stages sends only the later one.
pub fn due_stage(expires_at: DateTime<Utc>, now: DateTime<Utc>) -> Option<i64> {
    WARNING_DAYS
        .into_iter()
        .rev()
        .find(|d| window_start(expires_at, *d) <= now)
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t0() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 12, 1, 12, 0, 0).unwrap()
    }

    #[test]
    fn grace_choices_round_trip_and_never_outlive_the_credential() {
        for g in Grace::ALL {
            assert_eq!(Grace::parse(g.as_str()), Some(g));
        }
        let now = t0();
        assert_eq!(Grace::Week.ends_at(now, None), now + TimeDelta::days(7));
        let soon = now + TimeDelta::hours(2);
        assert_eq!(Grace::Week.ends_at(now, Some(soon)), soon);
        assert_eq!(Grace::Now.ends_at(now, Some(soon)), now);
        // An already expired key's grace ends now, never in the past.
        assert_eq!(
            Grace::Week.ends_at(now, Some(now - TimeDelta::days(1))),
            now
        );
    }

    fn key(grace: Option<DateTime<Utc>>, revoked: bool) -> StoredCredential {
        StoredCredential {
            kind: CredentialKind::Key,
            id: "key_1".into(),
            app_id: ApplicationId::generate(),
            hash: CredentialHash::from_stored("h".into()),
            prefix: "kg_AbCd".into(),
            created_at: t0(),
            expires_at: Some(t0() + TimeDelta::days(365)),
            revoked_at: revoked.then(t0),
            replaced_by: grace.map(|_| "key_2".into()),
            rotated_by: None,
            grace_ends_at: grace,
            shown_at: Some(t0()),
            last_used_at: None,
        }
    }

    #[test]
    fn states_follow_grace_expiry_and_revocation() {
        let end = t0() + TimeDelta::days(7);
        assert_eq!(key(None, false).state(t0()), CredentialState::Active);
        assert_eq!(
            key(Some(end), false).state(t0()),
            CredentialState::InGrace { until: end }
        );
        assert_eq!(key(Some(end), false).state(end), CredentialState::Expired);
        assert_eq!(key(Some(end), true).state(t0()), CredentialState::Revoked);
        let old = key(None, false);
        assert_eq!(
            old.state(t0() + TimeDelta::days(365)),
            CredentialState::Expired
        );
    }

    #[test]
    fn warnings_skip_stages_already_running_at_issue() {
        let issued = t0();
        let year = issued + TimeDelta::days(365);
        assert_eq!(
            next_warning(year, issued, None),
            Some(year - TimeDelta::days(30))
        );
        assert_eq!(
            next_warning(year, issued, Some(30)),
            Some(year - TimeDelta::days(7))
        );
        assert_eq!(
            next_warning(year, issued, Some(7)),
            Some(year - TimeDelta::days(1))
        );
        assert_eq!(next_warning(year, issued, Some(1)), None);
        let ten_days = issued + TimeDelta::days(10);
        assert_eq!(
            next_warning(ten_days, issued, None),
            Some(ten_days - TimeDelta::days(7))
        );
        let one_day = issued + TimeDelta::days(1);
        assert_eq!(next_warning(one_day, issued, None), None);
    }

    #[test]
    fn the_due_stage_is_the_latest_window_begun() {
        let exp = t0() + TimeDelta::days(40);
        assert_eq!(due_stage(exp, t0()), None);
        assert_eq!(due_stage(exp, exp - TimeDelta::days(30)), Some(30));
        assert_eq!(due_stage(exp, exp - TimeDelta::days(5)), Some(7));
        assert_eq!(due_stage(exp, exp - TimeDelta::hours(1)), Some(1));
    }
}
