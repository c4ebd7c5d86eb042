//! Discord snowflake identifiers as plain domain newtypes.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! snowflake {
    ($($(#[$doc:meta])* $name:ident),* $(,)?) => {$(
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl $name {
            /// Snowflakes use 63 bits (a millisecond timestamp since 2015 in the top
            /// bits), so they round-trip through the databases' signed BIGINT.
            pub fn to_db(self) -> i64 {
                self.0 as i64
            }

            pub fn from_db(value: i64) -> Self {
                Self(value as u64)
            }
        }
    )*};
}

snowflake! {
    /// A Discord server: one organization.
    GuildId,
    /// A Discord user.
    UserId,
    /// A Discord channel (guild channel or DM).
    ChannelId,
    /// A Discord message.
    MessageId,
    /// A Discord role.
    RoleId,
    /// A Discord interaction (a command, button press or form submission).
    InteractionId,
}
