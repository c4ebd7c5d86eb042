//! Pure types and rules of keygate: no Discord, no database.

pub mod application;
pub mod approval;
pub mod audit;
pub mod catalog;
pub mod credentials;
pub mod ids;
pub mod lifecycle;
pub mod retry;
pub mod settings;
pub mod validation;
pub mod verification;
pub mod wizard;
