//! When a background job that failed on Discord is tried again.

use chrono::TimeDelta;

/// The longest any job waits between two tries.
pub const BACKOFF_CAP: TimeDelta = TimeDelta::minutes(10);

/// How often a channel the bot lost access to is tried again, by posting the
/// oldest item waiting for it: rare enough to cost nothing against Discord's
/// invalid-request limit, often enough that a permission fixed by hand is
/// noticed without a `/keygate setup`.
pub const PROBE_EVERY: TimeDelta = TimeDelta::minutes(10);

/// How long a process holds an item of a background job it is doing before
/// another may take it over: long enough for a few slow Discord calls, and
/// at most a minute, so that a takeover's post falls within Discord's nonce
/// window and shows once.
pub const LEASE: TimeDelta = TimeDelta::seconds(60);

/// The longest a process works on one claimed item before it gives up (the
/// item is tried again): well inside [`LEASE`], so that no other process
/// takes the item over while this one still works on it, whatever serenity
/// sleeps on a rate limit meanwhile.
pub const WORK_LIMIT: std::time::Duration = std::time::Duration::from_secs(40);

/// The least a queue waits after a 429. serenity drops the body's
/// `retry_after` when it talks to `DISCORD_API_URL`, so most 429s carry none.
pub const RATE_LIMIT_FLOOR: std::time::Duration = std::time::Duration::from_secs(5);

/// The wait after `failures` failed tries (1 for the first): 1 s doubling,
/// each with up to a quarter more at random so that items failing together
/// spread out, never over [`BACKOFF_CAP`].
pub fn backoff(failures: u32) -> TimeDelta {
    let doublings = failures.saturating_sub(1).min(10);
    let base = (TimeDelta::seconds(1) * 2_i32.pow(doublings)).min(BACKOFF_CAP);
    let jitter = TimeDelta::milliseconds(rand::random_range(0..=base.num_milliseconds() / 4));
    if base == BACKOFF_CAP {
        // At the cap the spread goes below it, or items failing together
        // would all come back at the same instant from then on.
        BACKOFF_CAP - jitter
    } else {
        (base + jitter).min(BACKOFF_CAP)
    }
}

/// The wait after a 429: what Discord asked for, and never under the floor.
pub fn rate_limit_wait(retry_after: Option<std::time::Duration>) -> std::time::Duration {
    retry_after.map_or(RATE_LIMIT_FLOOR, |d| d.max(RATE_LIMIT_FLOOR))
}

/// The background jobs that retry an item on Discord, each with its own
/// schedule per item.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Job {
    /// Posting a request to the approvals channel.
    PostRequest,
    /// Delivering approved credentials to the requester.
    Deliver,
    /// Reminding approvers of a request at half its lifetime.
    Remind,
    /// Redacting a DM that carried a secret.
    Redact,
}

impl Job {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PostRequest => "post_request",
            Self::Deliver => "deliver",
            Self::Remind => "remind",
            Self::Redact => "redact",
        }
    }
}

/// Why a channel's queue is paused: Discord refused the bot in it for good
/// until someone changes a permission or the setting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChannelLoss {
    /// 50001: the bot cannot see the channel.
    MissingAccess,
    /// 50013: the bot may see it but not post there.
    MissingPermissions,
    /// 10003: the channel was deleted.
    UnknownChannel,
}

impl ChannelLoss {
    /// The loss a Discord error code means, if it is one.
    pub fn from_code(code: isize) -> Option<Self> {
        match code {
            50001 => Some(Self::MissingAccess),
            50013 => Some(Self::MissingPermissions),
            10003 => Some(Self::UnknownChannel),
            _ => None,
        }
    }

    pub fn code(self) -> i64 {
        match self {
            Self::MissingAccess => 50001,
            Self::MissingPermissions => 50013,
            Self::UnknownChannel => 10003,
        }
    }

    pub fn from_db(code: i64) -> Self {
        Self::from_code(code as isize).unwrap_or(Self::MissingAccess)
    }

    /// What an admin must fix, in a sentence's middle.
    pub fn explain(self) -> &'static str {
        match self {
            Self::MissingAccess => "keygate cannot see it (View Channel)",
            Self::MissingPermissions => {
                "keygate lacks a permission there (Send Messages or Embed Links)"
            }
            Self::UnknownChannel => "it was deleted",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_starts_at_a_second_doubles_and_stops_at_ten_minutes() {
        for _ in 0..100 {
            let first = backoff(1);
            assert!(first >= TimeDelta::seconds(1) && first <= TimeDelta::milliseconds(1250));
            let fourth = backoff(4);
            assert!(fourth >= TimeDelta::seconds(8) && fourth <= TimeDelta::seconds(10));
            let capped = backoff(12);
            assert!(capped <= BACKOFF_CAP && capped >= BACKOFF_CAP * 3 / 4);
            assert!(backoff(u32::MAX) <= BACKOFF_CAP);
        }
    }

    #[test]
    fn items_at_the_cap_stay_spread() {
        let waits: std::collections::HashSet<_> = (0..50).map(|_| backoff(20)).collect();
        assert!(waits.len() > 1, "every capped wait was the same");
    }

    #[test]
    fn a_rate_limit_waits_at_least_the_floor_and_what_discord_asked() {
        assert_eq!(rate_limit_wait(None), RATE_LIMIT_FLOOR);
        assert_eq!(
            rate_limit_wait(Some(std::time::Duration::from_millis(10))),
            RATE_LIMIT_FLOOR
        );
        assert_eq!(
            rate_limit_wait(Some(std::time::Duration::from_secs(30))),
            std::time::Duration::from_secs(30)
        );
    }

    #[test]
    fn only_channel_codes_pause_a_channel() {
        for code in [50001, 50013, 10003] {
            let loss = ChannelLoss::from_code(code).expect("a loss");
            assert_eq!(loss.code(), code as i64);
            assert_eq!(ChannelLoss::from_db(loss.code()), loss);
        }
        for code in [50007, 10008, 0, 40060] {
            assert_eq!(ChannelLoss::from_code(code), None);
        }
    }
}
