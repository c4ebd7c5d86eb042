//! Use cases: one function per action, each in one transaction with its audit event.

mod apps;
mod audit;
mod clock;
mod delivery;
mod lifecycle;
mod requests;
mod retries;
mod settings;
mod verify;
mod wizard;

pub use apps::{ApproveOutcome, IssuedCredentials, IssuedKey, Submitted};
pub use audit::{AuditPost, HistoryPage, POST_LEASE};
pub use clock::Clock;
pub use delivery::redaction_item;
pub use lifecycle::{ClaimedWarning, NewCredential, Rotated, RotationPlan, grace_text};
pub use requests::Stalled;
pub use retries::{ChannelUse, Claim, Lease, Retry, RetryGate};
pub use settings::{Clearable, SettingsChange};
pub use verify::{LAST_USED_GRANULARITY, Verdict};
pub use wizard::{DraftInput, DraftStart, new_draft_id};

use crate::domain::application::{AppStatus, LifecycleError};
use crate::domain::approval::ApprovalError;
use crate::domain::audit::{AuditKind, NewAuditEvent};
use crate::domain::catalog::ScopeCatalog;
use crate::domain::ids::{GuildId, UserId};
use crate::domain::settings::GuildSettings;
use crate::domain::validation::ValidationErrors;
use crate::domain::wizard::WizardError;
use crate::store::{Store, StoreError, Tx};
use chrono::TimeDelta;
use std::sync::Arc;

/// Lifetimes that are not per-guild settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// An untouched wizard draft lives this long.
    pub draft_ttl: TimeDelta,
    /// How long a request may go unposted, or an approval undelivered, before
    /// the approvals worker takes over from the interaction that should have.
    pub stall_grace: TimeDelta,
    /// How long the verify API trusts a cached credential record when no
    /// notification says otherwise; zero turns the cache off.
    pub verify_cache_ttl: std::time::Duration,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            draft_ttl: TimeDelta::hours(1),
            stall_grace: TimeDelta::seconds(30),
            verify_cache_ttl: std::time::Duration::from_secs(5),
        }
    }
}

/// Who is acting, with what the Discord layer found out about their rights.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Actor {
    pub user_id: UserId,
    /// Holds the guild's approver role (or Manage Server when none is set).
    pub is_approver: bool,
    /// Has the Manage Server permission.
    pub is_manager: bool,
}

impl Actor {
    pub fn member(user_id: UserId) -> Self {
        Self {
            user_id,
            is_approver: false,
            is_manager: false,
        }
    }

    pub fn approver(user_id: UserId) -> Self {
        Self {
            is_approver: true,
            ..Self::member(user_id)
        }
    }

    pub fn manager(user_id: UserId) -> Self {
        Self {
            is_manager: true,
            ..Self::member(user_id)
        }
    }

    /// The owner, an approver or a manager may rotate and revoke an app's credentials.
    pub fn may_manage(&self, app: &crate::domain::application::Application) -> bool {
        app.owner_id == self.user_id || self.is_approver || self.is_manager
    }
}

/// What can go wrong in a use case. Every variant but `Store` is the user's
/// to fix and safe to show them.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{0}")]
    Validation(#[from] ValidationErrors),
    #[error("{0}")]
    Wizard(#[from] WizardError),
    #[error("{0}")]
    Lifecycle(#[from] LifecycleError),
    #[error("{0}")]
    Approval(#[from] ApprovalError),
    #[error("this wizard has expired or was closed; run /app create to start again")]
    DraftNotFound,
    #[error("this is not your wizard")]
    NotYourDraft,
    #[error(
        "you already have an unfinished application in this server: run /app create to resume it or start over"
    )]
    DraftExists,
    #[error("no such application in this server")]
    AppNotFound,
    #[error("only the application's owner can do that")]
    NotOwner,
    #[error("only approvers can do that")]
    NotApprover,
    #[error("this application's credentials were already issued; they are shown only once")]
    CredentialsAlreadyIssued,
    #[error("this application is {}, not approved", .0.label().to_lowercase())]
    NotApproved(AppStatus),
    #[error("this application's credentials are being delivered; try again in a minute")]
    CredentialsBeingDelivered,
    #[error("this application's credentials have not been issued yet")]
    CredentialsNotIssued,
    #[error(
        "an API key was already generated for this application; each application gets one (use /app rotate for a new one)"
    )]
    KeyAlreadyGenerated,
    #[error("only the application's owner, an approver or a server manager can do that")]
    NotAllowed,
    #[error("this application has no API key yet: press Generate API Key in the credentials DM")]
    NoKeyYet,
    #[error("{}", already_rotated(.by))]
    AlreadyRotated { by: Option<UserId> },
    #[error("it already reached its owner; use /app rotate for a new one")]
    AlreadyShown,
    #[error("the name you typed is not the application's name; nothing was revoked")]
    NameMismatch,
    #[error("{0}")]
    InvalidSetting(String),
    #[error("internal error: {0}")]
    Store(#[from] StoreError),
}

fn already_rotated(by: &Option<UserId>) -> String {
    match by {
        Some(u) => format!("<@{u}> already rotated it; nothing changed"),
        None => "it was already replaced or revoked; nothing changed".to_owned(),
    }
}

impl ServiceError {
    /// True when the user caused it and may see the message as is.
    pub fn is_user_error(&self) -> bool {
        !matches!(self, Self::Store(_))
    }
}

pub type ServiceResult<T> = Result<T, ServiceError>;

/// The use cases over one store and scope catalog.
#[derive(Clone)]
pub struct Service {
    store: Store,
    catalog: Arc<ScopeCatalog>,
    clock: Clock,
    policy: Policy,
    verify: Arc<verify::VerifyCache>,
}

impl Service {
    pub fn new(store: Store, catalog: Arc<ScopeCatalog>) -> Self {
        Self {
            store,
            catalog,
            clock: Clock::System,
            policy: Policy::default(),
            verify: Arc::new(verify::VerifyCache::new(Policy::default().verify_cache_ttl)),
        }
    }

    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_policy(mut self, policy: Policy) -> Self {
        if policy.verify_cache_ttl != self.policy.verify_cache_ttl {
            self.verify = Arc::new(verify::VerifyCache::new(policy.verify_cache_ttl));
        }
        self.policy = policy;
        self
    }

    /// The service's clock's now (a manual one in tests).
    pub fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.clock.now()
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    pub fn catalog(&self) -> &ScopeCatalog {
        &self.catalog
    }

    pub async fn settings(&self, guild: GuildId) -> ServiceResult<GuildSettings> {
        // One statement: no transaction around it.
        let mut tx = self.store.single(false).await?;
        let settings = tx.guild_settings(guild).await?;
        tx.rollback().await?;
        Ok(settings)
    }

    pub async fn save_settings(&self, actor: Actor, settings: &GuildSettings) -> ServiceResult<()> {
        let now = self.clock.now();
        let mut tx = self.store.begin().await?;
        tx.save_guild_settings(settings, now).await?;
        let event = NewAuditEvent {
            guild_id: settings.guild_id,
            app_id: None,
            actor_id: Some(actor.user_id),
            kind: AuditKind::SettingsChanged,
            summary: "changed keygate settings".into(),
        };
        // Written after the settings, so a newly set audit channel gets this event.
        audit(&mut tx, event, now).await?;
        tx.commit().await?;
        Ok(())
    }
}

/// Records an audit event in the caller's transaction (queued for the audit
/// channel if the guild has one).
async fn audit(
    tx: &mut Tx,
    event: NewAuditEvent,
    now: chrono::DateTime<chrono::Utc>,
) -> ServiceResult<()> {
    // Written with the transaction's other events at its commit.
    tx.queue_audit(event, now);
    Ok(())
}
