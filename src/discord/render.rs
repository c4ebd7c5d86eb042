//! How user-typed text and an application's fields read in messages and embeds.

use super::reply::{FIELD_MAX, clip};
use crate::domain::application::{AppDetails, SourceApp, quoted};
use crate::domain::catalog::ScopeCatalog;
use crate::domain::ids::{ChannelId, GuildId, MessageId};
use crate::domain::lifecycle::{CredentialKind, CredentialState, StoredCredential};
use chrono::{DateTime, Utc};
use poise::serenity_prelude::CreateEmbed;

/// A name or URL in a code span, where Discord reads no markdown.
pub use crate::domain::application::quoted as code;

/// The link that opens a message in Discord.
pub fn message_link(guild: GuildId, (channel, message): (ChannelId, MessageId)) -> String {
    format!("https://discord.com/channels/{guild}/{channel}/{message}")
}

/// Text a member typed (a name, a description, a deny reason), made to read
/// as typed in a message or embed outside a code span: every character that
/// Discord's markdown acts on is escaped, so `[Approve](https://evil.example)`
/// is no masked link, `**`, `__`, `~~`, `||` and backticks format nothing,
/// `<@…>` and `<t:…>` stay text, and a line cannot start a quote, a heading
/// or a list. A bare `http(s)://` link is kept clickable, and its address
/// intact, as an autolink (`<…>`), inside which Discord reads no markdown.
/// The one function for this: names in code spans use `quoted` instead.
pub fn user_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + text.len() / 4);
    for (i, line) in text.split('\n').enumerate() {
        if i > 0 {
            out.push('\n');
        }
        escape_line(line, &mut out);
    }
    out
}

/// Marks that act anywhere in a line. `\\` first: a typed backslash must
/// not escape the escapes.
const INLINE_MARKS: &[char] = &['\\', '*', '_', '~', '|', '`', '[', ']', '<', '>', '#'];

fn escape_line(line: &str, out: &mut String) {
    let indent = line.len() - line.trim_start().len();
    out.push_str(&line[..indent]);
    let mut rest = &line[indent..];
    // Line-start marks: `- ` and `+ ` lists, `-# ` subtext, `1. ` lists
    // (`*`, `>` and `#` are escaped everywhere below).
    if let Some(tail) = rest.strip_prefix(['-', '+']) {
        out.push('\\');
        out.push_str(&rest[..1]);
        rest = tail;
    } else {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits > 0 && rest[digits..].starts_with('.') {
            out.push_str(&rest[..digits]);
            out.push_str("\\.");
            rest = &rest[digits + 1..];
        }
    }
    let mut word_start = true;
    let mut chars = rest.char_indices().peekable();
    while let Some((at, c)) = chars.next() {
        if word_start && let Some(link) = autolink(&rest[at..]) {
            out.push('<');
            out.push_str(link);
            out.push('>');
            // Skip the link's characters.
            while chars
                .peek()
                .is_some_and(|(next, _)| *next < at + link.len())
            {
                chars.next();
            }
            word_start = false;
            continue;
        }
        if INLINE_MARKS.contains(&c) {
            out.push('\\');
        }
        out.push(c);
        word_start = c.is_whitespace();
    }
}

/// The `http(s)://…` word at the start of `text`, when it can be an autolink:
/// it has something after the scheme, and no `<` or `>`, which would end or
/// break the `<…>`.
fn autolink(text: &str) -> Option<&str> {
    let word = text.split(char::is_whitespace).next()?;
    let scheme = word.get(..8)?.to_ascii_lowercase();
    let after = if scheme.starts_with("https://") {
        8
    } else if scheme.starts_with("http://") {
        7
    } else {
        return None;
    };
    (word.len() > after && !word.contains(['<', '>'])).then_some(word)
}

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

/// URI, Description and the redirect URLs, each cut to what a field holds:
/// the URLs in code spans, the description escaped.
pub fn detail_fields(embed: CreateEmbed, d: &AppDetails) -> CreateEmbed {
    let description = if d.description.is_empty() {
        "—"
    } else {
        d.description.as_str()
    };
    embed
        .field("URI", clip(&quoted(&d.uri), FIELD_MAX), false)
        .field(
            "Description",
            clip(&user_text(description), FIELD_MAX),
            false,
        )
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

#[cfg(test)]
mod tests {
    use super::*;

    /// Each case: what a member typed, and what the bot sends Discord.
    #[test]
    fn user_text_formats_nothing() {
        let cases = [
            (
                "[Approve](https://evil.example) **bold**",
                r"\[Approve\](https://evil.example) \*\*bold\*\*",
            ),
            ("__under__ ~~strike~~", r"\_\_under\_\_ \~\~strike\~\~"),
            ("||spoiler||", r"\|\|spoiler\|\|"),
            ("`code` and ```block```", r"\`code\` and \`\`\`block\`\`\`"),
            ("*em* _em_", r"\*em\* \_em\_"),
            ("> quote\n>>> all", "\\> quote\n\\>\\>\\> all"),
            ("# Heading\n## Sub", "\\# Heading\n\\#\\# Sub"),
            ("-# subtext", r"\-\# subtext"),
            ("- item\n+ item\n  * item", "\\- item\n\\+ item\n  \\* item"),
            ("1. first\n10. tenth", "1\\. first\n10\\. tenth"),
            ("<@123> <#456> <t:1:R>", r"\<@123\> \<\#456\> \<t:1:R\>"),
            // A typed backslash cannot undo an escape.
            (r"\*not bold\*", r"\\\*not bold\\\*"),
            ("plain text, 3 - 2 = 1.", "plain text, 3 - 2 = 1."),
            ("Café 東京 @everyone", "Café 東京 @everyone"),
            // A bare link stays a link to the same address, and inert.
            (
                "docs at https://spa.example.com/api_docs?a=1&b=**2**",
                "docs at <https://spa.example.com/api_docs?a=1&b=**2**>",
            ),
            ("HTTP://localhost:3000/x_y", "<HTTP://localhost:3000/x_y>"),
            // Not a link: escaped like any text.
            ("http:// alone", "http:// alone"),
            ("https://a.example/<@1>", r"https://a.example/\<@1\>"),
            ("(https://a.example/x_y)", r"(https://a.example/x\_y)"),
        ];
        for (typed, sent) in cases {
            assert_eq!(user_text(typed), sent, "{typed:?}");
        }
    }

    #[test]
    fn details_escape_the_description_and_quote_the_uri() {
        let details = AppDetails {
            name: "n".into(),
            uri: "https://spa.example.com/a_b".into(),
            description: "[Approve](https://evil.example) **bold**".into(),
            post_login_urls: vec![],
            post_logout_urls: vec![],
        };
        let embed = serde_json::to_value(detail_fields(CreateEmbed::new(), &details))
            .expect("an embed serializes");
        let fields = embed["fields"].as_array().expect("fields");
        assert_eq!(fields[0]["value"], "`https://spa.example.com/a_b`");
        assert_eq!(
            fields[1]["value"],
            r"\[Approve\](https://evil.example) \*\*bold\*\*"
        );
    }
}
