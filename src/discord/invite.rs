//! The invite URL that adds the bot to a server, with exactly the permissions it uses.

use super::access::POSTING;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD_NO_PAD;

/// What an invite asks for: the bot user, and its slash commands.
pub const SCOPES: &str = "bot applications.commands";

/// The permission bits an invite asks for: View Channel, Send Messages and Embed Links, what
/// the bot checks before posting (it edits and deletes only its own messages, reads none).
pub const PERMISSIONS: u64 = POSTING.bits();

/// Discord's authorization page for adding the application `client_id` to a server.
pub fn invite_url(client_id: u64) -> String {
    format!(
        "https://discord.com/oauth2/authorize?client_id={client_id}&scope={}&permissions={PERMISSIONS}",
        SCOPES.replace(' ', "%20")
    )
}

/// A bot token's first segment is its user id (the application id) in base64.
pub fn client_id_from_token(token: &str) -> Option<u64> {
    let first = token.split('.').next()?.trim_end_matches('=');
    let decoded = STANDARD_NO_PAD.decode(first).ok()?;
    std::str::from_utf8(&decoded)
        .ok()?
        .parse()
        .ok()
        .filter(|id| *id > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_application_id_is_read_from_the_token() {
        // base64("1234567890123456789") with and without padding.
        let segment = STANDARD_NO_PAD.encode("1234567890123456789");
        let token = format!("{segment}.GhIjKl.not-a-real-signature");
        assert_eq!(
            client_id_from_token(&token),
            Some(1_234_567_890_123_456_789)
        );
        let padded = format!("{}=.x.y", STANDARD_NO_PAD.encode("12345678901234567"));
        assert_eq!(client_id_from_token(&padded), Some(12_345_678_901_234_567));
        assert_eq!(client_id_from_token("not base64!.x.y"), None);
        assert_eq!(
            client_id_from_token(&format!("{}.x.y", STANDARD_NO_PAD.encode("bot"))),
            None
        );
    }

    #[test]
    fn the_invite_asks_for_the_posting_permissions_and_both_scopes() {
        // View Channel (1 << 10), Send Messages (1 << 11), Embed Links (1 << 14).
        assert_eq!(PERMISSIONS, (1 << 10) | (1 << 11) | (1 << 14));
        assert_eq!(
            invite_url(42),
            "https://discord.com/oauth2/authorize?client_id=42&scope=bot%20applications.commands&permissions=19456"
        );
    }
}
