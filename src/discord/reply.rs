//! How the bot answers: no pings, ephemeral messages, and errors users can act on.

use super::error::{BotError, BotResult};
use crate::domain::retry::{ChannelLoss, rate_limit_wait};
use crate::service::Retry;
use poise::serenity_prelude as serenity;
use rand::distr::{Alphanumeric, SampleString};
use serenity::{
    Builder, ComponentInteraction, CreateActionRow, CreateAllowedMentions, CreateEmbed,
    CreateInteractionResponse, CreateInteractionResponseFollowup, CreateInteractionResponseMessage,
    EditInteractionResponse, Http, InteractionId, LightMethod, ModalInteraction, Request, Route,
};
use std::cell::Cell;
use std::time::Duration;

tokio::task_local! {
    /// Whether the interaction being handled (see [`tracked`]) has had its
    /// first answer: [`report`] then follows up at once, instead of trying a
    /// callback Discord would refuse.
    static ANSWERED: Cell<bool>;
}

/// Runs a component's or a modal's handler, and tells whether it answered
/// the interaction (through [`Reply`]) before it ended.
pub async fn tracked<T>(handler: impl Future<Output = T>) -> (T, bool) {
    ANSWERED
        .scope(Cell::new(false), async {
            let out = handler.await;
            (out, ANSWERED.with(Cell::get))
        })
        .await
}

/// Notes that the interaction being handled is answered, when it is tracked.
fn mark_answered() {
    // Outside `tracked` (a slash command: poise keeps its own flag) there is nothing to note.
    let _ = ANSWERED.try_with(|a| a.set(true));
}

/// Mentions allowed in anything the bot sends: none, so user-typed text such
/// as an app named `@everyone` pings no one.
pub fn no_pings() -> CreateAllowedMentions {
    CreateAllowedMentions::new()
}

/// An ephemeral message with pings off: the base of every wizard message.
pub fn private(content: impl Into<String>) -> CreateInteractionResponseMessage {
    CreateInteractionResponseMessage::new()
        .ephemeral(true)
        .allowed_mentions(no_pings())
        .content(content)
}

/// What a message shows, built once for both ways of showing it: as the
/// first answer, or as the edit after a deferral (see [`Reply::answer`]).
pub struct Screen {
    content: String,
    embeds: Vec<CreateEmbed>,
    components: Vec<CreateActionRow>,
}

impl Screen {
    pub fn new(content: impl Into<String>) -> Self {
        Self {
            content: content.into(),
            embeds: Vec::new(),
            components: Vec::new(),
        }
    }

    pub fn embed(mut self, embed: CreateEmbed) -> Self {
        self.embeds.push(embed);
        self
    }

    /// The message's rows; none clears the ones it had.
    pub fn components(mut self, rows: Vec<CreateActionRow>) -> Self {
        self.components = rows;
        self
    }

    /// As the first answer: an update of the message the interaction came
    /// from (`in_place`), else a new ephemeral message; pings off either way.
    pub fn response(self, in_place: bool) -> CreateInteractionResponse {
        self.response_to(in_place, true)
    }

    /// As [`Screen::response`]; a new message is ephemeral only if `ephemeral`.
    fn response_to(self, in_place: bool, ephemeral: bool) -> CreateInteractionResponse {
        // As in an edit, the screen is the whole message: no embeds clears
        // the last screen's.
        let message = CreateInteractionResponseMessage::new()
            .content(self.content)
            .components(self.components)
            .embeds(self.embeds)
            .allowed_mentions(no_pings());
        if in_place {
            // An update keeps the message's flags: a DM stays a DM.
            CreateInteractionResponse::UpdateMessage(message)
        } else {
            CreateInteractionResponse::Message(message.ephemeral(ephemeral))
        }
    }

    /// As the edit of `@original` after a deferral, pings off; a deferred
    /// message keeps the ephemeral state it was created with.
    pub fn edit(self) -> EditInteractionResponse {
        // A screen is the whole message: no embeds clears the last screen's
        // (Back from the review must not keep the review's embed).
        EditInteractionResponse::new()
            .content(self.content)
            .components(self.components)
            .embeds(self.embeds)
            .allowed_mentions(no_pings())
    }
}

/// How long after its creation (its snowflake's time) an interaction may go
/// unacknowledged while its handler's database work runs. Work done by then
/// is answered with its content in one call; slower work is deferred
/// meanwhile and shown by an edit. The gateway's delay and the reads before
/// the work count against it, so a slow callback (1.5 s) sent at the budget
/// still lands inside Discord's 3 seconds; one that arrived later than that
/// is deferred at once.
pub const ANSWER_BUDGET: Duration = Duration::from_millis(750);

/// What is left of [`ANSWER_BUDGET`] for an interaction created at `created`
/// (Discord's clock) when it is `now` (ours). Never more than the whole
/// budget from now, so a clock of ours that lags Discord's cannot stretch it.
fn budget_left(
    created: chrono::DateTime<chrono::Utc>,
    now: chrono::DateTime<chrono::Utc>,
) -> Duration {
    let age = (now - created).to_std().unwrap_or(Duration::ZERO);
    ANSWER_BUDGET.saturating_sub(age)
}

/// The interaction a handler answers, and where its content goes.
#[derive(Clone, Copy)]
pub struct Reply<'a> {
    id: InteractionId,
    token: &'a str,
    /// Into the message the interaction came from, else a new one.
    in_place: bool,
    /// A new message is seen only by the member (and cannot be edited
    /// after 15 minutes), unless it goes into the member's DM to stay.
    ephemeral: bool,
}

impl<'a> Reply<'a> {
    /// A button or select: its content replaces its message.
    pub fn component(component: &'a ComponentInteraction) -> Self {
        Self {
            id: component.id,
            token: &component.token,
            in_place: true,
            ephemeral: true,
        }
    }

    /// A modal submission: in place when the modal was opened from a
    /// message (one evolving message), else a new ephemeral message.
    pub fn modal(modal: &'a ModalInteraction) -> Self {
        Self {
            id: modal.id,
            token: &modal.token,
            in_place: modal.message.is_some(),
            ephemeral: true,
        }
    }

    /// Its content goes in a new ephemeral message, not into the message the
    /// interaction came from (a confirmation the message it answers must not
    /// lose its buttons to).
    pub fn in_new_message(self) -> Self {
        Self {
            in_place: false,
            ..self
        }
    }

    /// Its content goes in a new message of the DM the interaction came
    /// from, not ephemeral: the bot can still edit it (redact it) through
    /// the channel when the interaction's token has long expired.
    pub fn in_new_dm_message(self) -> Self {
        Self {
            in_place: false,
            ephemeral: false,
            ..self
        }
    }

    /// Acknowledges without content: a deferred update (type 6) of the
    /// message, or a deferred ephemeral message (type 5); an edit follows.
    /// A handler whose Discord calls come before its content sends this
    /// first, so that slow calls cannot make it miss Discord's 3 seconds.
    pub async fn defer(self, http: &Http) -> serenity::Result<()> {
        let response = if self.in_place {
            CreateInteractionResponse::Acknowledge
        } else {
            CreateInteractionResponse::Defer(
                CreateInteractionResponseMessage::new().ephemeral(self.ephemeral),
            )
        };
        response.execute(http, (self.id, self.token)).await?;
        mark_answered();
        Ok(())
    }

    /// Shows the screen `work` makes; see [`Reply::answer`].
    pub async fn show(
        self,
        http: &Http,
        work: impl Future<Output = BotResult<Screen>>,
    ) -> BotResult<()> {
        self.answer(http, async { Ok((work.await?, ())) }).await
    }

    /// Answers with the screen `work` makes, and hands back the rest of its
    /// result. Done within [`ANSWER_BUDGET`], the callback carries the
    /// screen; else the deferral goes out while `work` goes on, and an edit
    /// shows the screen. `work` must not call Discord: the callback is the
    /// interaction's first call. An error of `work` is left to the caller's
    /// report, which answers or follows up as the interaction stands.
    pub async fn answer<T>(
        self,
        http: &Http,
        work: impl Future<Output = BotResult<(Screen, T)>>,
    ) -> BotResult<T> {
        Ok(self.respond(http, work, false).await?.0)
    }

    /// As [`Reply::answer`], and what became of the screen.
    pub async fn answer_shown<T>(
        self,
        http: &Http,
        work: impl Future<Output = BotResult<(Screen, T)>>,
    ) -> BotResult<(T, Answered)> {
        self.respond(http, work, false).await
    }

    /// As [`Reply::answer_shown`], with the message the screen went into:
    /// learnt from the callback itself (`with_response`) or from the edit,
    /// so no call is spent asking for it.
    pub async fn answer_in_message<T>(
        self,
        http: &Http,
        work: impl Future<Output = BotResult<(Screen, T)>>,
    ) -> BotResult<(T, Answered)> {
        self.respond(http, work, true).await
    }

    /// The answer, and what became of it; the message only when `learn`
    /// asked for it.
    async fn respond<T>(
        self,
        http: &Http,
        work: impl Future<Output = BotResult<(Screen, T)>>,
        learn: bool,
    ) -> BotResult<(T, Answered)> {
        let mut work = std::pin::pin!(work);
        let budget = budget_left(*self.id.created_at(), chrono::Utc::now());
        let (screen, rest) = match tokio::time::timeout(budget, &mut work).await {
            Ok(done) => {
                let (screen, rest) = done?;
                let response = screen.response_to(self.in_place, self.ephemeral);
                let answered = self.callback(http, response, learn).await;
                if answered.is_ok() {
                    mark_answered();
                }
                return Ok(Self::done_anyway(answered, rest));
            }
            Err(_) => {
                let (deferred, done) = tokio::join!(self.defer(http), work);
                // The work's error says more than a failed deferral.
                let (screen, rest) = done?;
                if let Err(e) = deferred {
                    return Ok(Self::done_anyway(Err(e), rest));
                }
                (screen, rest)
            }
        };
        let edited = screen.edit().execute(http, self.token).await?;
        Ok((rest, Answered::Shown(Some(edited.id))))
    }

    /// Sends the first answer; with `learn`, asks Discord to return the
    /// message it made or updated (`with_response`, which serenity 0.12's
    /// builder does not ask for).
    async fn callback(
        self,
        http: &Http,
        response: CreateInteractionResponse,
        learn: bool,
    ) -> serenity::Result<Option<serenity::MessageId>> {
        if !learn {
            response.execute(http, (self.id, self.token)).await?;
            return Ok(None);
        }
        let route = Route::InteractionResponse {
            interaction_id: self.id,
            token: self.token,
        };
        let request = Request::new(route, LightMethod::Post)
            .body(Some(serde_json::to_vec(&response)?))
            .params(Some(vec![("with_response", "true".to_owned())]));
        // Boxed: the call's future is large, and it sits inside every answer's.
        let answered: serde_json::Value = Box::pin(http.fire(request)).await?;
        // Any 2xx is an answer given, whatever its body says.
        let id = answered["resource"]["message"]["id"].as_str();
        Ok(id
            .and_then(|id| id.parse::<std::num::NonZeroU64>().ok())
            .map(serenity::MessageId::from))
    }

    /// The work is written (a Submit's credentials exist), so its caller
    /// goes on even when the interaction could not be answered: what
    /// follows (a DM, a post) needs no interaction. Only the screen is lost.
    fn done_anyway<T>(
        answered: serenity::Result<Option<serenity::MessageId>>,
        rest: T,
    ) -> (T, Answered) {
        match answered {
            Ok(message) => (rest, Answered::Shown(message)),
            Err(e) => {
                count_rest_error(&e);
                tracing::warn!(error = %e, "could not answer an interaction whose work was done");
                (rest, Answered::Refused)
            }
        }
    }
}

/// What became of an answer's screen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answered {
    /// Discord refused the callback, or its response was lost: the work is
    /// done, and the screen may or may not be there.
    Refused,
    /// Shown; in this message, when the answer asked Discord which.
    Shown(Option<serenity::MessageId>),
}

/// What a message's content holds.
pub const MESSAGE_MAX: usize = 2000;

/// What an embed field holds.
pub const FIELD_MAX: usize = 1024;

/// Text cut to Discord's limit for where it goes (an embed field holds 1024
/// characters), marked when cut.
pub fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        return text.to_owned();
    }
    let mut out: String = text.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

/// Discord's JSON error code of a failed REST call (50007, 10008…), if it has one.
pub fn discord_code(e: &serenity::Error) -> Option<isize> {
    match e {
        serenity::Error::Http(serenity::HttpError::UnsuccessfulRequest(r)) => Some(r.error.code),
        _ => None,
    }
}

/// What a failed REST call means for the background job that made it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestFailure {
    /// The bot lost the channel it posted to: the channel's queue pauses.
    Channel(ChannelLoss),
    /// A 429: the whole queue waits this long.
    RateLimited(std::time::Duration),
    /// The user's DMs are closed (50007): the job's fallback applies.
    DmsClosed,
    /// The message is gone (10008).
    UnknownMessage,
    /// Anything else (a 5xx, a timeout): the item backs off.
    Other,
}

impl RestFailure {
    pub fn of(e: &serenity::Error) -> Self {
        let serenity::Error::Http(serenity::HttpError::UnsuccessfulRequest(r)) = e else {
            return Self::Other;
        };
        if r.status_code.as_u16() == 429 {
            // serenity keeps no `retry_after` of a 429 it hands back.
            return Self::RateLimited(rate_limit_wait(None));
        }
        match r.error.code {
            50007 => Self::DmsClosed,
            10008 => Self::UnknownMessage,
            code => ChannelLoss::from_code(code).map_or(Self::Other, Self::Channel),
        }
    }

    /// How the item that failed so is tried again: no sooner than a 429's
    /// wait, and after its backoff either way.
    pub fn retry(self) -> Retry {
        match self {
            Self::RateLimited(wait) => Retry::AtLeast(wait),
            _ => Retry::Backoff,
        }
    }

    /// How long the item's whole queue waits: a 429's wait, else not at all.
    pub fn hold(self) -> Option<std::time::Duration> {
        match self {
            Self::RateLimited(wait) => Some(wait),
            _ => None,
        }
    }

    /// The failure of the Discord call somewhere in `err`'s chain; a failure
    /// of ours (the database) is `Other`.
    pub fn in_chain(err: &anyhow::Error) -> Self {
        err.chain()
            .find_map(|c| c.downcast_ref::<serenity::Error>())
            .map_or(Self::Other, Self::of)
    }
}

/// Counts a failed Discord REST call by its HTTP status, for `/metrics`.
pub fn count_rest_error(err: &serenity::Error) {
    let status = match err {
        serenity::Error::Http(serenity::HttpError::UnsuccessfulRequest(r)) => {
            r.status_code.as_str().to_owned()
        }
        serenity::Error::Http(_) => "transport".to_owned(),
        _ => return,
    };
    metrics::counter!("keygate_discord_rest_errors_total", "status" => status).increment(1);
}

/// Counts the Discord REST failure somewhere in `err`'s chain, if any.
pub fn count_rest_error_in(err: &anyhow::Error) {
    if let Some(e) = err
        .chain()
        .find_map(|c| c.downcast_ref::<serenity::Error>())
    {
        count_rest_error(e);
    }
}

/// Tells the user what went wrong, ephemerally: their mistake as it is, ours
/// as a generic message with a reference that points to the full log line.
/// `answered`: the interaction had its first answer (a follow-up then says
/// it; after a deferred message, the first follow-up takes its place).
pub async fn report(
    http: &serenity::Http,
    interaction: InteractionId,
    token: &str,
    answered: bool,
    err: BotError,
) {
    let text = match err {
        BotError::User(message) => format!("⚠️ {message}"),
        BotError::Internal(err) => {
            count_rest_error_in(&err);
            let reference = Alphanumeric.sample_string(&mut rand::rng(), 8);
            tracing::error!(reference, error = format!("{err:#}"), "interaction failed");
            format!(
                "Something went wrong on our side. Please try again; if it keeps happening, \
                 give your admins this reference: `{reference}`."
            )
        }
    };
    let response = CreateInteractionResponse::Message(private(text.clone()));
    if answered || response.execute(http, (interaction, token)).await.is_err() {
        // Already answered (the error came after the first response): follow up instead.
        let followup = CreateInteractionResponseFollowup::new()
            .ephemeral(true)
            .allowed_mentions(no_pings())
            .content(text);
        if let Err(e) = followup.execute(http, (None, token)).await {
            count_rest_error(&e);
            tracing::warn!(error = %e, "could not tell the user about an error");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{ANSWER_BUDGET, budget_left};
    use chrono::{TimeDelta, Utc};
    use std::time::Duration;

    #[test]
    fn the_budget_counts_from_the_interactions_creation() {
        let now = Utc::now();
        let left = |age_ms| budget_left(now - TimeDelta::milliseconds(age_ms), now);
        assert_eq!(left(0), ANSWER_BUDGET);
        assert_eq!(left(200), ANSWER_BUDGET - Duration::from_millis(200));
        assert_eq!(left(2_000), Duration::ZERO);
        // Created "later" than now: our clock lags Discord's, and the budget
        // is still no more than the whole of it.
        assert_eq!(left(-5_000), ANSWER_BUDGET);
    }
}
