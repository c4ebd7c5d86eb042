//! Applications: the seed form's choices, the application record and its lifecycle.

use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{GuildId, UserId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A name in a code span, for messages and audit summaries: a backtick typed
/// into the name would otherwise end the span and let the rest be markdown.
pub fn quoted(text: &str) -> String {
    format!("`{}`", text.replace('`', "ˋ"))
}

/// Who signs in to the application.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LoginUserType {
    Guest,
    Employee,
}

impl LoginUserType {
    pub const ALL: [LoginUserType; 2] = [LoginUserType::Guest, LoginUserType::Employee];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Guest => "guest",
            Self::Employee => "employee",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|t| t.as_str() == value)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Guest => "Guest",
            Self::Employee => "Employee",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::Guest => "Guest-facing app: your guests sign in to it",
            Self::Employee => "Internal app: your employees sign in to it",
        }
    }
}

/// Where the application's traffic comes from; appointments booked through it
/// carry the source's booking marker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceApp {
    ExternalCma,
    ExternalWebstore,
    ClientApp,
    Bot,
}

impl SourceApp {
    pub const ALL: [SourceApp; 4] = [
        SourceApp::ExternalCma,
        SourceApp::ExternalWebstore,
        SourceApp::ClientApp,
        SourceApp::Bot,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::ExternalCma => "external_cma",
            Self::ExternalWebstore => "external_webstore",
            Self::ClientApp => "client_app",
            Self::Bot => "bot",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::ExternalCma => "External CMA",
            Self::ExternalWebstore => "External Webstore",
            Self::ClientApp => "Client App",
            Self::Bot => "Bot",
        }
    }

    pub fn description(self) -> &'static str {
        match self {
            Self::ExternalCma => "A custom mobile app that guests book from",
            Self::ExternalWebstore => "An online store or booking website",
            Self::ClientApp => "Your own client or back-office application",
            Self::Bot => "A chat or voice bot that books for guests",
        }
    }

    /// The marker that appointments booked through this source carry.
    pub fn booking_marker(self) -> Option<&'static str> {
        match self {
            Self::ExternalCma => Some("Mobile Booking"),
            Self::ExternalWebstore => Some("Web Booking"),
            Self::ClientApp => None,
            Self::Bot => Some("Bot Booking"),
        }
    }
}

/// Where an application stands in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AppStatus {
    Draft,
    PendingApproval,
    /// Approved; its Application ID and Secret are issued.
    Approved,
    KeyIssued,
    Revoked,
    Denied,
    Expired,
    Withdrawn,
}

impl AppStatus {
    pub const ALL: [AppStatus; 8] = [
        AppStatus::Draft,
        AppStatus::PendingApproval,
        AppStatus::Approved,
        AppStatus::KeyIssued,
        AppStatus::Revoked,
        AppStatus::Denied,
        AppStatus::Expired,
        AppStatus::Withdrawn,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Draft => "draft",
            Self::PendingApproval => "pending_approval",
            Self::Approved => "approved",
            Self::KeyIssued => "key_issued",
            Self::Revoked => "revoked",
            Self::Denied => "denied",
            Self::Expired => "expired",
            Self::Withdrawn => "withdrawn",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }

    pub fn label(self) -> &'static str {
        match self {
            Self::Draft => "Draft",
            Self::PendingApproval => "Pending approval",
            Self::Approved => "Approved",
            Self::KeyIssued => "Active",
            Self::Revoked => "Revoked",
            Self::Denied => "Denied",
            Self::Expired => "Expired",
            Self::Withdrawn => "Withdrawn",
        }
    }

    /// A request that ended without ever being approved, or a revoked
    /// application, gives its name back: the guild may reuse it.
    pub fn holds_name(self) -> bool {
        !matches!(
            self,
            Self::Denied | Self::Expired | Self::Withdrawn | Self::Revoked
        )
    }

    /// Applies one lifecycle transition, or says why it is not allowed.
    pub fn apply(self, transition: Transition) -> Result<AppStatus, LifecycleError> {
        use AppStatus::*;
        use Transition as T;
        let next = match (self, transition) {
            (
                Draft,
                T::Submit {
                    approvals_required: 0,
                },
            ) => Approved,
            (Draft, T::Submit { .. }) => PendingApproval,
            (PendingApproval, T::Approve) => Approved,
            (PendingApproval, T::Deny) => Denied,
            (PendingApproval, T::Withdraw) => Withdrawn,
            (PendingApproval, T::Expire) => Expired,
            (Approved, T::GenerateKey) => KeyIssued,
            (KeyIssued, T::Rotate) => KeyIssued,
            (Approved | KeyIssued, T::Revoke) => Revoked,
            (from, transition) => return Err(LifecycleError { from, transition }),
        };
        Ok(next)
    }
}

impl fmt::Display for AppStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.label())
    }
}

/// A step of the lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transition {
    Submit { approvals_required: u8 },
    Approve,
    Deny,
    Withdraw,
    Expire,
    GenerateKey,
    Rotate,
    Revoke,
}

impl Transition {
    fn verb(self) -> &'static str {
        match self {
            Self::Submit { .. } => "submit",
            Self::Approve => "approve",
            Self::Deny => "deny",
            Self::Withdraw => "withdraw",
            Self::Expire => "expire",
            Self::GenerateKey => "generate a key for",
            Self::Rotate => "rotate the key of",
            Self::Revoke => "revoke",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("cannot {} an application that is {}", transition.verb(), from.label().to_lowercase())]
pub struct LifecycleError {
    pub from: AppStatus,
    pub transition: Transition,
}

/// The validated text fields of the Create Application form.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AppDetails {
    pub name: String,
    pub uri: String,
    pub description: String,
    pub post_login_urls: Vec<String>,
    pub post_logout_urls: Vec<String>,
}

/// Everything the wizard collects: what Submit turns into an application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewApplication {
    pub details: AppDetails,
    pub user_type: LoginUserType,
    pub source_app: SourceApp,
    pub scopes: Vec<String>,
}

/// A registered application. It never holds a secret: only where its key starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Application {
    pub id: ApplicationId,
    pub guild_id: GuildId,
    pub owner_id: UserId,
    pub details: AppDetails,
    pub user_type: LoginUserType,
    pub source_app: SourceApp,
    pub scopes: Vec<String>,
    pub status: AppStatus,
    /// The display prefix of the current API key, once one is generated.
    pub key_prefix: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn happy_paths_through_the_lifecycle() {
        let s = AppStatus::Draft;
        let s = s
            .apply(Transition::Submit {
                approvals_required: 2,
            })
            .unwrap();
        assert_eq!(s, AppStatus::PendingApproval);
        let s = s.apply(Transition::Approve).unwrap();
        assert_eq!(s, AppStatus::Approved);
        let s = s.apply(Transition::GenerateKey).unwrap();
        assert_eq!(s, AppStatus::KeyIssued);
        assert_eq!(s.apply(Transition::Rotate).unwrap(), AppStatus::KeyIssued);
        assert_eq!(s.apply(Transition::Revoke).unwrap(), AppStatus::Revoked);

        let no_approval = AppStatus::Draft.apply(Transition::Submit {
            approvals_required: 0,
        });
        assert_eq!(no_approval, Ok(AppStatus::Approved));
        for (t, end) in [
            (Transition::Deny, AppStatus::Denied),
            (Transition::Withdraw, AppStatus::Withdrawn),
            (Transition::Expire, AppStatus::Expired),
        ] {
            assert_eq!(AppStatus::PendingApproval.apply(t), Ok(end));
        }
    }

    #[test]
    fn illegal_transitions_are_typed_errors() {
        let all_transitions = [
            Transition::Submit {
                approvals_required: 1,
            },
            Transition::Approve,
            Transition::Deny,
            Transition::Withdraw,
            Transition::Expire,
            Transition::GenerateKey,
            Transition::Rotate,
            Transition::Revoke,
        ];
        // Ends are ends: nothing leaves them.
        for end in [
            AppStatus::Revoked,
            AppStatus::Denied,
            AppStatus::Expired,
            AppStatus::Withdrawn,
        ] {
            for t in all_transitions {
                assert_eq!(
                    end.apply(t),
                    Err(LifecycleError {
                        from: end,
                        transition: t
                    })
                );
            }
        }
        let err = AppStatus::KeyIssued
            .apply(Transition::GenerateKey)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "cannot generate a key for an application that is active"
        );
        assert!(
            AppStatus::PendingApproval
                .apply(Transition::GenerateKey)
                .is_err()
        );
        assert!(AppStatus::Approved.apply(Transition::Approve).is_err());
        assert!(AppStatus::Draft.apply(Transition::Revoke).is_err());
    }

    #[test]
    fn names_round_trip() {
        for s in AppStatus::ALL {
            assert_eq!(AppStatus::parse(s.as_str()), Some(s));
        }
        for s in SourceApp::ALL {
            assert_eq!(SourceApp::parse(s.as_str()), Some(s));
        }
        for t in LoginUserType::ALL {
            assert_eq!(LoginUserType::parse(t.as_str()), Some(t));
        }
        assert_eq!(SourceApp::ClientApp.booking_marker(), None);
        assert_eq!(SourceApp::Bot.booking_marker(), Some("Bot Booking"));
    }
}
