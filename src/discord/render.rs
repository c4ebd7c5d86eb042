//! How an application's fields read in embeds: the review, the approvals request and `/app show`.

use super::reply::{FIELD_MAX, clip};
use crate::domain::application::{AppDetails, SourceApp, quoted};
use crate::domain::catalog::ScopeCatalog;
use crate::domain::lifecycle::{CredentialKind, CredentialState, StoredCredential};
use chrono::{DateTime, Utc};
use poise::serenity_prelude::CreateEmbed;

/// "External CMA (Mobile Booking)": the source with its booking marker.
pub fn source_label(source: SourceApp) -> String {
    match source.booking_marker() {
        Some(marker) => format!("{} ({marker})", source.label()),
        None => source.label().to_owned(),
    }
}

/// The chosen API groups by their labels.
pub fn scope_labels(scopes: &[String], catalog: &ScopeCatalog) -> String {
    scopes
        .iter()
        .map(|key| {
            catalog
                .group(key)
                .map_or_else(|| key.clone(), |g| g.label.clone())
        })
        .collect::<Vec<_>>()
        .join(", ")
}

/// "`kg_AbCd…` · active · created 3 days ago · expires in 11 months · last
/// used 2 minutes ago": one key or Secret as `/app show` lists it (Discord
/// renders the times in the reader's zone).
pub fn credential_line(c: &StoredCredential, now: DateTime<Utc>) -> String {
    let at = |t: DateTime<Utc>| format!("<t:{}:R>", t.timestamp());
    let state = match c.state(now) {
        CredentialState::Active => "active".to_owned(),
        CredentialState::InGrace { until } => format!("in grace until <t:{}:f>", until.timestamp()),
        CredentialState::Expired => "expired".to_owned(),
        CredentialState::Revoked => "revoked".to_owned(),
    };
    let mut parts = vec![
        format!("`{}…`", c.prefix),
        format!("**{state}**"),
        format!("created {}", at(c.created_at)),
    ];
    if let Some(e) = c.expires_at {
        parts.push(format!("expires {}", at(e)));
    }
    if c.kind == CredentialKind::Key {
        parts.push(c.last_used_at.map_or_else(
            || "never used".to_owned(),
            |t| format!("last used {}", at(t)),
        ));
    }
    if c.shown_at.is_none() && c.is_current() {
        parts.push("never shown to its owner".to_owned());
    }
    parts.join(" · ")
}

fn url_lines(urls: &[String]) -> String {
    if urls.is_empty() {
        "—".to_owned()
    } else {
        urls.iter()
            .map(|u| quoted(u))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// URI, Description and the redirect URLs, each cut to what a field holds.
pub fn detail_fields(embed: CreateEmbed, d: &AppDetails) -> CreateEmbed {
    let description = if d.description.is_empty() {
        "—"
    } else {
        d.description.as_str()
    };
    embed
        .field("URI", clip(&d.uri, FIELD_MAX), false)
        .field("Description", clip(description, FIELD_MAX), false)
        .field(
            "Post-login redirect URLs",
            clip(&url_lines(&d.post_login_urls), FIELD_MAX),
            false,
        )
        .field(
            "Post-logout redirect URLs",
            clip(&url_lines(&d.post_logout_urls), FIELD_MAX),
            false,
        )
}
