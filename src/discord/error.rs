//! The Discord layer's one error: what the member must fix (shown as is) or what went wrong on our side.

use crate::domain::application::LifecycleError;
use crate::domain::approval::ApprovalError;
use crate::domain::validation::ValidationErrors;
use crate::domain::wizard::WizardError;
use crate::service::ServiceError;
use poise::serenity_prelude as serenity;

/// Every handler's error. A service error the member caused becomes `User`
/// with its own message; everything else is `Internal`, logged in full and
/// shown only as a reference.
#[derive(Debug, thiserror::Error)]
pub enum BotError {
    /// The member's to fix: shown to them, ephemerally, as it is.
    #[error("{0}")]
    User(String),
    /// Ours: logged with a reference the member can quote.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

pub type BotResult<T = ()> = Result<T, BotError>;

impl BotError {
    pub fn user(message: impl Into<String>) -> Self {
        Self::User(message.into())
    }
}

/// A component or form that no longer means anything (built by an older
/// version, or for something gone).
pub fn stale() -> BotError {
    BotError::user("this button is no longer valid")
}

impl From<ServiceError> for BotError {
    fn from(e: ServiceError) -> Self {
        if e.is_user_error() {
            Self::User(e.to_string())
        } else {
            Self::Internal(e.into())
        }
    }
}

/// Domain refusals are the member's, whichever layer raised them.
macro_rules! via_service {
    ($($t:ty),*) => {$(
        impl From<$t> for BotError {
            fn from(e: $t) -> Self {
                ServiceError::from(e).into()
            }
        }
    )*};
}
via_service!(ApprovalError, LifecycleError, WizardError, ValidationErrors);

impl From<serenity::Error> for BotError {
    fn from(e: serenity::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl From<crate::store::StoreError> for BotError {
    fn from(e: crate::store::StoreError) -> Self {
        ServiceError::from(e).into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_members_mistakes_are_shown_and_ours_are_not() {
        let own: BotError = ApprovalError::OwnRequest.into();
        assert!(matches!(own, BotError::User(_)), "{own:?}");
        let refused: BotError = ServiceError::NotApprover.into();
        assert!(matches!(refused, BotError::User(m) if m.contains("approvers")));
        let ours: BotError = ServiceError::Store(crate::store::StoreError::Conflict("name")).into();
        assert!(matches!(ours, BotError::Internal(_)));
        let network: BotError = anyhow::anyhow!("connection reset").into();
        assert!(matches!(network, BotError::Internal(_)));
    }
}
