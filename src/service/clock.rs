//! The service's notion of now, which tests can stop and move.

use chrono::{DateTime, TimeDelta, Utc};
use std::sync::{Arc, Mutex, PoisonError};

#[derive(Debug, Clone, Default)]
pub enum Clock {
    #[default]
    System,
    /// A clock that moves only when told to.
    Manual(Arc<Mutex<DateTime<Utc>>>),
}

impl Clock {
    pub fn manual(start: DateTime<Utc>) -> Self {
        Self::Manual(Arc::new(Mutex::new(start)))
    }

    pub fn now(&self) -> DateTime<Utc> {
        match self {
            Self::System => Utc::now(),
            Self::Manual(t) => *t.lock().unwrap_or_else(PoisonError::into_inner),
        }
    }

    /// Moves a manual clock forward; the system clock moves on its own.
    pub fn advance(&self, by: TimeDelta) {
        if let Self::Manual(t) = self {
            *t.lock().unwrap_or_else(PoisonError::into_inner) += by;
        }
    }

    /// Puts a manual clock at `at`; the system clock is left alone.
    pub fn set(&self, at: DateTime<Utc>) {
        if let Self::Manual(t) = self {
            *t.lock().unwrap_or_else(PoisonError::into_inner) = at;
        }
    }
}
