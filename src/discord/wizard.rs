//! The `/app create` wizard on Discord: the modal, the step messages and their components.

use super::Bot;
use super::access::can_create;
use super::custom_id::{Action, CustomId, NewDraft};
use super::error::{BotError, BotResult, stale};
use super::render::{code, detail_fields, scope_labels, source_label, user_text};
use super::reply::{FIELD_MAX, MESSAGE_MAX, Reply, Screen, clip, no_pings, private};
use super::{approvals, delivery};
use crate::domain::application::{Application, LoginUserType, SourceApp};
use crate::domain::approval::ApprovalRequest;
use crate::domain::catalog::{ApiGroup, ScopeCatalog};
use crate::domain::ids::{ChannelId, GuildId, UserId};
use crate::domain::retry::Job;
use crate::domain::validation::{
    AppForm, DESCRIPTION_MAX_CHARS, NAME_MAX_CHARS, REDIRECT_FIELD_MAX_CHARS, URI_MAX_CHARS,
    ValidationErrors,
};
use crate::domain::wizard::{SavedDraft, WizardStep};
use crate::service::{
    DraftInput, IssuedCredentials, ServiceError, ServiceResult, Submitted, new_draft_id,
};
use poise::serenity_prelude as serenity;
use serenity::{
    ActionRowComponent, ButtonStyle, ComponentInteraction, ComponentInteractionDataKind,
    CreateActionRow, CreateButton, CreateEmbed, CreateInputText, CreateInteractionResponse,
    CreateInteractionResponseMessage, CreateModal, CreateSelectMenu, CreateSelectMenuKind,
    CreateSelectMenuOption, InputTextStyle, ModalInteraction,
};

const MODAL_TITLE: &str = "Create application";
const FIELD_NAME: &str = "name";
const FIELD_URI: &str = "uri";
const FIELD_DESCRIPTION: &str = "description";
const FIELD_LOGIN_URLS: &str = "login_urls";
const FIELD_LOGOUT_URLS: &str = "logout_urls";

fn limit(n: usize) -> u16 {
    u16::try_from(n).unwrap_or(u16::MAX)
}

/// The Create Application modal of a stored draft, pre-filled with `form`.
pub fn modal(draft_id: &str, form: &AppForm) -> CreateModal {
    form_modal(CustomId::draft(draft_id, Action::Details), form)
}

/// The Create Application modal of a draft not stored yet: its submission
/// stores it.
pub fn new_draft_modal(draft: &NewDraft, form: &AppForm) -> CreateModal {
    form_modal(CustomId::new_draft(draft, Action::Details), form)
}

fn form_modal(custom_id: CustomId, form: &AppForm) -> CreateModal {
    let input =
        |style, label: &str, id: &str, value: &str, max: usize, required: bool, hint: &str| {
            let mut input = CreateInputText::new(style, label, id)
                .max_length(limit(max))
                .required(required)
                .placeholder(hint);
            if !value.is_empty() {
                input = input.value(value);
            }
            CreateActionRow::InputText(input)
        };
    CreateModal::new(custom_id.to_string(), MODAL_TITLE).components(vec![
        input(
            InputTextStyle::Short,
            "Name",
            FIELD_NAME,
            &form.name,
            NAME_MAX_CHARS,
            true,
            "Spa Mobile",
        ),
        input(
            InputTextStyle::Short,
            "URI",
            FIELD_URI,
            &form.uri,
            URI_MAX_CHARS,
            true,
            "https://app.example.com",
        ),
        input(
            InputTextStyle::Paragraph,
            "Description",
            FIELD_DESCRIPTION,
            &form.description,
            DESCRIPTION_MAX_CHARS,
            false,
            "What the app does",
        ),
        input(
            InputTextStyle::Paragraph,
            "Post-login redirect URLs",
            FIELD_LOGIN_URLS,
            &form.post_login_urls,
            REDIRECT_FIELD_MAX_CHARS,
            false,
            "One URL per line",
        ),
        input(
            InputTextStyle::Paragraph,
            "Post-logout redirect URLs",
            FIELD_LOGOUT_URLS,
            &form.post_logout_urls,
            REDIRECT_FIELD_MAX_CHARS,
            false,
            "One URL per line",
        ),
    ])
}

/// The typed form out of a modal submission.
fn form_of(modal: &ModalInteraction) -> AppForm {
    let mut form = AppForm::default();
    for component in modal.data.components.iter().flat_map(|row| &row.components) {
        if let ActionRowComponent::InputText(input) = component {
            let value = input.value.clone().unwrap_or_default();
            match input.custom_id.as_str() {
                FIELD_NAME => form.name = value,
                FIELD_URI => form.uri = value,
                FIELD_DESCRIPTION => form.description = value,
                FIELD_LOGIN_URLS => form.post_login_urls = value,
                FIELD_LOGOUT_URLS => form.post_logout_urls = value,
                _ => {}
            }
        }
    }
    form
}

fn button(draft_id: &str, action: Action, label: &str, style: ButtonStyle) -> CreateButton {
    button_for(CustomId::draft(draft_id, action), label, style)
}

fn button_for(custom_id: CustomId, label: &str, style: ButtonStyle) -> CreateButton {
    CreateButton::new(custom_id.to_string())
        .label(label)
        .style(style)
}

fn nav(draft_id: &str, forward: Option<(Action, &str)>) -> CreateActionRow {
    let mut buttons = vec![button(
        draft_id,
        Action::Back,
        "Back",
        ButtonStyle::Secondary,
    )];
    if let Some((action, label)) = forward {
        let style = if action == Action::Submit {
            ButtonStyle::Success
        } else {
            ButtonStyle::Primary
        };
        buttons.push(button(draft_id, action, label, style));
    }
    buttons.push(button(
        draft_id,
        Action::Cancel,
        "Cancel",
        ButtonStyle::Danger,
    ));
    CreateActionRow::Buttons(buttons)
}

/// The wizard message for the draft's current step.
pub fn step_message(saved: &SavedDraft, catalog: &ScopeCatalog) -> Screen {
    let d = &saved.draft;
    let id = saved.id.as_str();
    let name = d
        .details
        .as_ref()
        .map_or_else(String::new, |det| format!(" {}", code(&det.name)));
    let header = format!(
        "**Create application{name} — Step {} of {}",
        d.step.number(),
        WizardStep::COUNT
    );
    match d.step {
        // The modal is the first step; a message for it only appears when the
        // user dismissed the modal and came back.
        WizardStep::Details => Screen::new(format!(
            "{header}: Details**\nOpen the form to continue."
        ))
        .components(vec![CreateActionRow::Buttons(vec![
            button(id, Action::Edit, "Open form", ButtonStyle::Primary),
            button(id, Action::Cancel, "Cancel", ButtonStyle::Danger),
        ])]),
        WizardStep::Options => {
            let user_types = LoginUserType::ALL
                .into_iter()
                .map(|t| {
                    CreateSelectMenuOption::new(t.label(), t.as_str())
                        .description(t.description())
                        .default_selection(d.user_type == Some(t))
                })
                .collect();
            let sources = SourceApp::ALL
                .into_iter()
                .map(|s| {
                    let marker = s.booking_marker().unwrap_or("no booking marker");
                    CreateSelectMenuOption::new(s.label(), s.as_str())
                        .description(format!("{} · {marker}", s.description()))
                        .default_selection(d.source_app == Some(s))
                })
                .collect();
            Screen::new(format!(
                "{header}: Options**\nChoose who signs in to the app and where its traffic comes from."
            ))
            .components(vec![
                CreateActionRow::SelectMenu(
                    CreateSelectMenu::new(
                        CustomId::draft(id, Action::UserType).to_string(),
                        CreateSelectMenuKind::String { options: user_types },
                    )
                    .placeholder("Login User Type"),
                ),
                CreateActionRow::SelectMenu(
                    CreateSelectMenu::new(
                        CustomId::draft(id, Action::SourceApp).to_string(),
                        CreateSelectMenuKind::String { options: sources },
                    )
                    .placeholder("Source App"),
                ),
                nav(id, Some((Action::Next, "Next"))),
            ])
        }
        WizardStep::Scopes => {
            let groups = catalog.groups();
            let scope_options = groups
                .iter()
                .map(|g| {
                    CreateSelectMenuOption::new(g.label.as_str(), g.key.as_str())
                        .description(g.description.as_str())
                        .default_selection(d.scopes.contains(&g.key))
                })
                .collect();
            let view_options = groups
                .iter()
                .map(|g| {
                    CreateSelectMenuOption::new(g.label.as_str(), g.key.as_str())
                        .description(format!("{} APIs", g.apis.len()))
                })
                .collect();
            Screen::new(format!(
                "{header}: Scope**\nTick the API groups the app may call. Pick a group under *View APIs* to see what it holds."
            ))
            .components(vec![
                CreateActionRow::SelectMenu(
                    CreateSelectMenu::new(
                        CustomId::draft(id, Action::Scopes).to_string(),
                        CreateSelectMenuKind::String { options: scope_options },
                    )
                    .placeholder("API groups")
                    .min_values(1)
                    .max_values(u8::try_from(groups.len()).unwrap_or(25)),
                ),
                CreateActionRow::SelectMenu(
                    CreateSelectMenu::new(
                        CustomId::draft(id, Action::ViewApis).to_string(),
                        CreateSelectMenuKind::String { options: view_options },
                    )
                    .placeholder("View APIs of a group"),
                ),
                nav(id, Some((Action::Next, "Next"))),
            ])
        }
        WizardStep::Review => {
            let mut embed = CreateEmbed::new().title("Review").colour(0x5865F2);
            if let Some(det) = &d.details {
                embed = detail_fields(embed.field("Name", user_text(&det.name), true), det);
            }
            if let Some(t) = d.user_type {
                embed = embed.field("Login User Type", t.label(), true);
            }
            if let Some(s) = d.source_app {
                embed = embed.field("Source App", source_label(s), true);
            }
            embed = embed.field(
                "Scopes",
                clip(&scope_labels(&d.scopes, catalog), FIELD_MAX),
                false,
            );
            Screen::new(format!(
                "{header}: Review**\nCheck everything, then Submit."
            ))
            .embed(embed)
            .components(vec![nav(id, Some((Action::Submit, "Submit")))])
        }
    }
}

/// Offered when `/app create` finds an open draft.
pub fn resume_prompt(saved: &SavedDraft) -> CreateInteractionResponseMessage {
    let name = saved
        .draft
        .details
        .as_ref()
        .map_or_else(String::new, |d| format!(" for {}", code(&d.name)));
    private(format!(
        "You have an unfinished application{name} (step {} of {}). Resume it or start over?",
        saved.draft.step.number(),
        WizardStep::COUNT
    ))
    .components(vec![CreateActionRow::Buttons(vec![
        button(&saved.id, Action::Resume, "Resume", ButtonStyle::Primary),
        button(
            &saved.id,
            Action::Restart,
            "Start over",
            ButtonStyle::Secondary,
        ),
    ])])
}

/// `edit` and `cancel` are the message's buttons: a stored draft's, or those
/// of a draft still to be stored.
fn invalid_form(errors: &ValidationErrors, edit: CustomId, cancel: CustomId) -> Screen {
    let list: String = errors
        .0
        .iter()
        // A problem quotes what was typed, which may be thousands of characters.
        .map(|e| format!("\n• **{}**: {}", e.field.label(), clip(&e.message, 300)))
        .collect();
    let intro = "**The form needs a few fixes:**";
    let outro = "\n\nNothing was saved. Press *Edit form* to correct it; what you typed is kept.";
    let room = MESSAGE_MAX - intro.chars().count() - outro.chars().count();
    Screen::new(format!("{intro}{}{outro}", clip(&list, room))).components(vec![
        CreateActionRow::Buttons(vec![
            button_for(edit, "Edit form", ButtonStyle::Primary),
            button_for(cancel, "Cancel", ButtonStyle::Danger),
        ]),
    ])
}

fn apis_message(group: &ApiGroup) -> CreateInteractionResponseMessage {
    let list: String = group
        .apis
        .iter()
        .map(|api| format!("\n`{} {}` — {}", api.method, api.path, api.summary))
        .collect();
    private(clip(
        &format!("**{}** — {}{list}", group.label, group.description),
        MESSAGE_MAX,
    ))
}

/// The Create Application modal of a stored draft was submitted.
pub async fn on_details(
    ctx: &serenity::Context,
    bot: &Bot,
    modal: &ModalInteraction,
    draft_id: &str,
) -> BotResult<()> {
    let user = UserId(modal.user.id.get());
    let form = form_of(modal);
    // In place when the modal was opened from a wizard message (one
    // evolving message), else as a new ephemeral one.
    Reply::modal(modal)
        .show(&ctx.http, async {
            let result = bot
                .service
                .advance_draft(draft_id, user, DraftInput::Details(form.clone()))
                .await;
            let buttons = (
                CustomId::draft(draft_id, Action::Edit),
                CustomId::draft(draft_id, Action::Cancel),
            );
            details_screen(bot, draft_id, user, form, result, buttons)
        })
        .await
}

/// The Create Application modal of a draft not stored yet was submitted:
/// the draft is stored now (replacing the one Start over was pressed on),
/// for the member it was offered to only.
pub async fn on_new_details(
    ctx: &serenity::Context,
    bot: &Bot,
    modal: &ModalInteraction,
    cid: &CustomId,
) -> BotResult<()> {
    let user = UserId(modal.user.id.get());
    let draft = offered_to(cid, user)?;
    let guild = modal
        .guild_id
        .map(|g| GuildId(g.get()))
        .ok_or_else(|| BotError::User("use this in a server".into()))?;
    // This is where the draft is written, so the right to create is
    // checked here too, as `/app create` checked it.
    require_creator(bot, Some(guild), modal.member.as_ref()).await?;
    let form = form_of(modal);
    Reply::modal(modal)
        .show(&ctx.http, async {
            let result = bot
                .service
                .create_draft(
                    guild,
                    &draft.id,
                    user,
                    form.clone(),
                    draft.replacing.as_deref(),
                )
                .await;
            let buttons = (
                CustomId::new_draft(&draft, Action::Edit),
                CustomId::new_draft(&draft, Action::Cancel),
            );
            details_screen(bot, &draft.id, user, form, result, buttons)
        })
        .await
}

/// The draft a `newdraft` form or button offers, to the member it was
/// offered to only: nothing in the database says whose it is yet.
fn offered_to(cid: &CustomId, user: UserId) -> BotResult<NewDraft> {
    let draft = cid.new_draft_parts().ok_or_else(stale)?;
    if draft.opener != user {
        return Err(ServiceError::NotYourDraft.into());
    }
    Ok(draft)
}

/// The answer to a submitted form: the next step, or what to fix (the
/// typed form kept in memory for the next modal, never written).
fn details_screen(
    bot: &Bot,
    draft_id: &str,
    user: UserId,
    form: AppForm,
    result: ServiceResult<SavedDraft>,
    (edit, cancel): (CustomId, CustomId),
) -> BotResult<Screen> {
    match result {
        Ok(saved) => {
            bot.forget_rejected(draft_id);
            Ok(step_message(&saved, bot.service.catalog()))
        }
        Err(ServiceError::Validation(errors)) => {
            bot.remember_rejected(draft_id, user, form);
            Ok(invalid_form(&errors, edit, cancel))
        }
        Err(other) => Err(other.into()),
    }
}

/// Edit form and Cancel under a refused form of a draft not stored yet.
pub async fn on_new_draft_component(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    cid: &CustomId,
) -> BotResult<()> {
    let user = UserId(component.user.id.get());
    let draft = offered_to(cid, user)?;
    let response = match cid.action {
        // Answered with a modal: reads only.
        Action::Edit => {
            let rejected = bot.rejected(&draft.id, user);
            match bot.service.draft(&draft.id, user).await {
                // Stored since (its form was submitted from another message).
                Ok(saved) => CreateInteractionResponse::Modal(modal(
                    &saved.id,
                    &rejected.unwrap_or(saved.draft.form),
                )),
                Err(ServiceError::DraftNotFound) => CreateInteractionResponse::Modal(
                    new_draft_modal(&draft, &rejected.unwrap_or_default()),
                ),
                Err(other) => return Err(other.into()),
            }
        }
        Action::Cancel => {
            return Reply::component(component)
                .show(&ctx.http, async {
                    // Nothing was stored, unless its form was since submitted
                    // from another message: then that draft goes, as Cancel does.
                    match bot.service.cancel_draft(&draft.id, user).await {
                        Ok(()) | Err(ServiceError::DraftNotFound) => {}
                        Err(other) => return Err(other.into()),
                    }
                    bot.forget_rejected(&draft.id);
                    let text = if draft.replacing.is_some() {
                        "Cancelled: nothing was saved, and your unfinished application is kept. Run `/app create` to resume it."
                    } else {
                        "Cancelled: nothing was saved. Run `/app create` to start again."
                    };
                    Ok(Screen::new(text))
                })
                .await;
        }
        _ => return Err(stale()),
    };
    component.create_response(&ctx.http, response).await?;
    Ok(())
}

/// A button or select of a wizard message.
pub async fn on_component(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    cid: &CustomId,
) -> BotResult<()> {
    let user = UserId(component.user.id.get());
    let service = &bot.service;
    let id = cid.id.as_str();
    let values = || match &component.data.kind {
        ComponentInteractionDataKind::StringSelect { values } => values.clone(),
        _ => Vec::new(),
    };
    let response = match cid.action {
        Action::Edit => reopen_form(bot, id, user).await?,
        Action::Back if service.draft(id, user).await?.draft.step == WizardStep::Options => {
            // Back from step 2 is the form itself.
            reopen_form(bot, id, user).await?
        }
        Action::Resume => {
            let saved = service.draft(id, user).await?;
            if saved.draft.step == WizardStep::Details {
                CreateInteractionResponse::Modal(modal(id, &saved.draft.form))
            } else {
                // Read only: answered with the step itself.
                step_message(&saved, service.catalog()).response(true)
            }
        }
        Action::Restart => {
            // Answered with a modal, which cannot follow a deferral: reads
            // only. The old draft stays until the new form is submitted (a
            // dismissed form keeps it); only its owner may start it over.
            require_component_creator(bot, component).await?;
            let old = service.draft(id, user).await?;
            let fresh = NewDraft {
                id: new_draft_id(),
                opener: user,
                replacing: Some(old.id),
            };
            CreateInteractionResponse::Modal(new_draft_modal(&fresh, &AppForm::default()))
        }
        Action::UserType | Action::SourceApp | Action::Scopes | Action::Next | Action::Back => {
            let input = match cid.action {
                Action::UserType => DraftInput::UserType(
                    values()
                        .first()
                        .and_then(|v| LoginUserType::parse(v))
                        .ok_or_else(|| BotError::User("choose a Login User Type".into()))?,
                ),
                Action::SourceApp => DraftInput::SourceApp(
                    values()
                        .first()
                        .and_then(|v| SourceApp::parse(v))
                        .ok_or_else(|| BotError::User("choose a Source App".into()))?,
                ),
                Action::Scopes => DraftInput::Scopes(values()),
                Action::Next => DraftInput::Next,
                _ => DraftInput::Back,
            };
            return Reply::component(component)
                .show(&ctx.http, async {
                    let saved = service.advance_draft(id, user, input).await?;
                    Ok(step_message(&saved, service.catalog()))
                })
                .await;
        }
        Action::ViewApis => {
            // Looking does not change the draft, but only its owner may look.
            service.draft(id, user).await?;
            let key = values().into_iter().next().unwrap_or_default();
            let group = service
                .catalog()
                .group(&key)
                .ok_or_else(|| BotError::User("no such API group".into()))?;
            CreateInteractionResponse::Message(apis_message(group))
        }
        Action::Cancel => {
            return Reply::component(component)
                .show(&ctx.http, async {
                    service.cancel_draft(id, user).await?;
                    bot.forget_rejected(id);
                    Ok(Screen::new(
                        "Cancelled: nothing was saved. Run `/app create` to start again.",
                    ))
                })
                .await;
        }
        Action::Submit => {
            // The right to create is judged now, not when the wizard began.
            require_component_creator(bot, component).await?;
            let origin = ChannelId(component.channel_id.get());
            // The application is written before any call but the answer;
            // the post or the delivery that follows edits this message.
            let next = Reply::component(component)
                .answer(&ctx.http, async {
                    let submitted = service.submit_draft(id, user, Some(origin)).await?;
                    bot.forget_rejected(id);
                    submitted_screen(submitted)
                })
                .await?;
            return on_submitted(ctx, bot, component, next).await;
        }
        _ => {
            return Err(stale());
        }
    };
    component.create_response(&ctx.http, response).await?;
    Ok(())
}

/// The modal again, pre-filled with the last thing typed: a rejected form is
/// kept in memory only (rejected input is never written), else the saved one.
async fn reopen_form(bot: &Bot, id: &str, user: UserId) -> BotResult<CreateInteractionResponse> {
    let saved = bot.service.draft(id, user).await?;
    let form = bot.rejected(id, user).unwrap_or(saved.draft.form);
    Ok(CreateInteractionResponse::Modal(modal(id, &form)))
}

/// What follows Submit's first screen.
enum AfterSubmit {
    /// The request waits for approvers: it is posted; `rows` are the
    /// buttons of its waiting message.
    Post {
        app: Application,
        request: ApprovalRequest,
        rows: Vec<CreateActionRow>,
    },
    /// No approval needed: the credentials are delivered.
    Deliver(IssuedCredentials),
}

/// What Submit shows first (that the request waits for approvers, or that
/// the credentials are on their way to the DMs), and what follows it.
fn submitted_screen(submitted: Submitted) -> BotResult<(Screen, AfterSubmit)> {
    match (submitted.request, submitted.credentials) {
        (Some(request), _) => {
            let (text, rows) = approvals::waiting_message(&submitted.app, &request, None);
            let screen = Screen::new(text).components(rows.clone());
            let app = submitted.app;
            Ok((screen, AfterSubmit::Post { app, request, rows }))
        }
        (None, Some(creds)) => Ok((
            delivery::sending_screen(&creds.app),
            AfterSubmit::Deliver(creds),
        )),
        (None, None) => Err(BotError::Internal(anyhow::anyhow!(
            "submit of {} returned neither a request nor credentials",
            submitted.app.id
        ))),
    }
}

/// After Submit, once [`submitted_screen`] is shown: post the request, or
/// deliver the credentials.
async fn on_submitted(
    ctx: &serenity::Context,
    bot: &Bot,
    component: &ComponentInteraction,
    next: AfterSubmit,
) -> BotResult<()> {
    match next {
        AfterSubmit::Post { app, request, rows } => {
            let mut gate = bot.service.retry_gate(Job::PostRequest).await?;
            let channel = bot.service.settings(app.guild_id).await?.approvals_channel;
            let edit = |text: String, rows| {
                serenity::EditInteractionResponse::new()
                    .content(text)
                    .components(rows)
                    .allowed_mentions(no_pings())
            };
            if let Some(loss) = channel.and_then(|c| gate.paused(c)).map(|p| p.loss) {
                // Held behind a channel Discord refuses the bot in: the worker
                // posts it once the channel works; the requester reads why here.
                bot.service
                    .alert_once(&mut gate, Job::PostRequest, app.id.as_str())
                    .await?;
                component
                    .edit_response(&ctx.http, edit(approvals::held_text(&app, loss), rows))
                    .await?;
                return Ok(());
            }
            match approvals::post_request(&ctx.http, &bot.service, &app, &request).await {
                Ok(posted) => {
                    let (text, rows) = approvals::waiting_message(&app, &request, Some(posted));
                    component.edit_response(&ctx.http, edit(text, rows)).await?;
                }
                // The request is saved; the approvals worker posts it later.
                Err(e) => {
                    approvals::request_post_failed(
                        &ctx.http,
                        &bot.service,
                        &mut gate,
                        &app,
                        channel,
                        &e,
                    )
                    .await?;
                    // Refused just now: the requester reads why here too.
                    if let Some(loss) = channel.and_then(|c| gate.paused(c)).map(|p| p.loss) {
                        let (_, rows) = approvals::waiting_message(&app, &request, None);
                        component
                            .edit_response(&ctx.http, edit(approvals::held_text(&app, loss), rows))
                            .await?;
                    }
                }
            }
            Ok(())
        }
        AfterSubmit::Deliver(creds) => delivery::deliver(ctx, bot, component, &creds).await,
    }
}

/// Refuses a member who may no longer create applications (their role or
/// the server's creator role changed since the wizard began).
async fn require_component_creator(bot: &Bot, component: &ComponentInteraction) -> BotResult<()> {
    let guild = component.guild_id.map(|g| GuildId(g.get()));
    require_creator(bot, guild, component.member.as_ref()).await
}

async fn require_creator(
    bot: &Bot,
    guild: Option<GuildId>,
    member: Option<&serenity::Member>,
) -> BotResult<()> {
    let guild = guild.ok_or_else(|| BotError::User("use this in a server".into()))?;
    if can_create(bot, guild, member).await? {
        Ok(())
    } else {
        Err(BotError::User(
            "you may no longer register applications in this server (you need the Manage Server permission or its creator role)".into(),
        ))
    }
}
