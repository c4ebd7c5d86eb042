//! keygate: register an organization's API applications and issue their credentials from Discord.

pub mod config;
pub mod discord;
pub mod domain;
pub mod http;
pub mod runtime;
pub mod sandbox;
pub mod service;
pub mod store;
pub mod telemetry;
