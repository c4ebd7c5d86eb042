//! The `/app create` wizard as a pure state machine over one user's draft.

use crate::domain::application::{AppDetails, LoginUserType, NewApplication, SourceApp};
use crate::domain::ids::{GuildId, UserId};
use crate::domain::validation::AppForm;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WizardStep {
    /// Step 1: the modal form.
    Details,
    /// Step 2: Login User Type and Source App.
    Options,
    /// Step 3: API groups.
    Scopes,
    /// Step 4: everything, before Submit.
    Review,
}

impl WizardStep {
    /// The step's number as the user sees it ("Step 2 of 4").
    pub fn number(self) -> u8 {
        match self {
            Self::Details => 1,
            Self::Options => 2,
            Self::Scopes => 3,
            Self::Review => 4,
        }
    }

    pub const COUNT: u8 = 4;
}

/// One user's run through the wizard: what they entered so far. Stored as is
/// in the database so a restart, or another bot process, continues it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WizardDraft {
    pub step: WizardStep,
    /// The form as typed, to pre-fill the modal when the user goes back to it.
    pub form: AppForm,
    pub details: Option<AppDetails>,
    pub user_type: Option<LoginUserType>,
    pub source_app: Option<SourceApp>,
    pub scopes: Vec<String>,
}

/// A draft as saved: whose it is and until when it lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SavedDraft {
    /// Random and unguessable: it travels in component custom_ids.
    pub id: String,
    pub guild_id: GuildId,
    pub user_id: UserId,
    pub draft: WizardDraft,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

/// What the user did on the current step.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WizardAction {
    /// The modal was submitted and its fields passed validation.
    SetDetails {
        form: Box<AppForm>,
        details: Box<AppDetails>,
    },
    SetUserType(LoginUserType),
    SetSourceApp(SourceApp),
    /// Scopes already checked against the catalog.
    SetScopes(Vec<String>),
    Next,
    Back,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WizardError {
    #[error("that belongs to step {expected}, but the wizard is on step {actual}")]
    WrongStep { expected: u8, actual: u8 },
    #[error("{0}")]
    Incomplete(&'static str),
    #[error("this is the first step")]
    NoPreviousStep,
    #[error("this is the last step: review and press Submit")]
    NoNextStep,
}

impl Default for WizardDraft {
    fn default() -> Self {
        Self::new()
    }
}

impl WizardDraft {
    pub fn new() -> Self {
        Self {
            step: WizardStep::Details,
            form: AppForm::default(),
            details: None,
            user_type: None,
            source_app: None,
            scopes: Vec::new(),
        }
    }

    fn expect_step(&self, expected: WizardStep) -> Result<(), WizardError> {
        if self.step == expected {
            Ok(())
        } else {
            Err(WizardError::WrongStep {
                expected: expected.number(),
                actual: self.step.number(),
            })
        }
    }

    /// Applies one action. On error the draft is unchanged.
    pub fn apply(&mut self, action: WizardAction) -> Result<(), WizardError> {
        use WizardStep::*;
        match action {
            // The form can be edited from any step (the modal reopens over the
            // wizard); only the first submission moves the wizard on.
            WizardAction::SetDetails { form, details } => {
                self.form = *form;
                self.details = Some(*details);
                if self.step == Details {
                    self.step = Options;
                }
            }
            WizardAction::SetUserType(t) => {
                self.expect_step(Options)?;
                self.user_type = Some(t);
            }
            WizardAction::SetSourceApp(s) => {
                self.expect_step(Options)?;
                self.source_app = Some(s);
            }
            WizardAction::SetScopes(scopes) => {
                self.expect_step(Scopes)?;
                self.scopes = scopes;
            }
            WizardAction::Next => {
                self.step = match self.step {
                    Details if self.details.is_none() => {
                        return Err(WizardError::Incomplete("fill in the form first"));
                    }
                    Details => Options,
                    Options if self.user_type.is_none() => {
                        return Err(WizardError::Incomplete("choose a Login User Type"));
                    }
                    Options if self.source_app.is_none() => {
                        return Err(WizardError::Incomplete("choose a Source App"));
                    }
                    Options => Scopes,
                    Scopes if self.scopes.is_empty() => {
                        return Err(WizardError::Incomplete("choose at least one API group"));
                    }
                    Scopes => Review,
                    Review => return Err(WizardError::NoNextStep),
                };
            }
            WizardAction::Back => {
                // Going back keeps every choice, so Next shows it again.
                self.step = match self.step {
                    Details => return Err(WizardError::NoPreviousStep),
                    Options => Details,
                    Scopes => Options,
                    Review => Scopes,
                };
            }
        }
        Ok(())
    }

    /// Submit: only from the review step, with every choice made.
    pub fn complete(&self) -> Result<NewApplication, WizardError> {
        self.expect_step(WizardStep::Review)?;
        match (&self.details, self.user_type, self.source_app) {
            (Some(details), Some(user_type), Some(source_app)) if !self.scopes.is_empty() => {
                Ok(NewApplication {
                    details: details.clone(),
                    user_type,
                    source_app,
                    scopes: self.scopes.clone(),
                })
            }
            _ => Err(WizardError::Incomplete("some steps are not filled in")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::validation::validate_form;

    fn form() -> AppForm {
        AppForm {
            name: "Spa".into(),
            uri: "https://spa.example.com".into(),
            ..AppForm::default()
        }
    }

    fn set_details(d: &mut WizardDraft) -> Result<(), WizardError> {
        let form = form();
        let details = validate_form(&form).unwrap();
        d.apply(WizardAction::SetDetails {
            form: Box::new(form),
            details: Box::new(details),
        })
    }

    fn at_review() -> WizardDraft {
        let mut d = WizardDraft::new();
        set_details(&mut d).unwrap();
        d.apply(WizardAction::SetUserType(LoginUserType::Guest))
            .unwrap();
        d.apply(WizardAction::SetSourceApp(SourceApp::Bot)).unwrap();
        d.apply(WizardAction::Next).unwrap();
        d.apply(WizardAction::SetScopes(vec!["guests".into()]))
            .unwrap();
        d.apply(WizardAction::Next).unwrap();
        d
    }

    #[test]
    fn walks_forward_to_a_complete_application() {
        let d = at_review();
        assert_eq!(d.step, WizardStep::Review);
        let app = d.complete().unwrap();
        assert_eq!(app.details.name, "Spa");
        assert_eq!(app.user_type, LoginUserType::Guest);
        assert_eq!(app.source_app, SourceApp::Bot);
        assert_eq!(app.scopes, vec!["guests"]);
    }

    #[test]
    fn back_and_next_keep_selections() {
        let mut d = at_review();
        d.apply(WizardAction::Back).unwrap();
        d.apply(WizardAction::Back).unwrap();
        d.apply(WizardAction::Back).unwrap();
        assert_eq!(d.step, WizardStep::Details);
        assert_eq!(
            d.apply(WizardAction::Back),
            Err(WizardError::NoPreviousStep)
        );
        assert_eq!(d.form, form(), "the typed form is kept for the modal");
        d.apply(WizardAction::Next).unwrap();
        d.apply(WizardAction::Next).unwrap();
        d.apply(WizardAction::Next).unwrap();
        assert_eq!(d, at_review());
    }

    #[test]
    fn next_needs_the_step_filled_in() {
        let mut d = WizardDraft::new();
        assert!(matches!(
            d.apply(WizardAction::Next),
            Err(WizardError::Incomplete(_))
        ));
        set_details(&mut d).unwrap();
        let before = d.clone();
        assert_eq!(
            d.apply(WizardAction::Next),
            Err(WizardError::Incomplete("choose a Login User Type"))
        );
        d.apply(WizardAction::SetUserType(LoginUserType::Employee))
            .unwrap();
        assert_eq!(
            d.apply(WizardAction::Next),
            Err(WizardError::Incomplete("choose a Source App"))
        );
        assert_ne!(d, before);
        d.apply(WizardAction::SetSourceApp(SourceApp::ClientApp))
            .unwrap();
        d.apply(WizardAction::Next).unwrap();
        assert_eq!(
            d.apply(WizardAction::Next),
            Err(WizardError::Incomplete("choose at least one API group"))
        );
        assert_eq!(d.step, WizardStep::Scopes);
    }

    #[test]
    fn actions_belong_to_their_step() {
        let mut d = WizardDraft::new();
        let before = d.clone();
        assert_eq!(
            d.apply(WizardAction::SetUserType(LoginUserType::Guest)),
            Err(WizardError::WrongStep {
                expected: 2,
                actual: 1
            })
        );
        assert_eq!(
            d.apply(WizardAction::SetScopes(vec!["guests".into()])),
            Err(WizardError::WrongStep {
                expected: 3,
                actual: 1
            })
        );
        assert_eq!(d, before, "a refused action changes nothing");
        let mut d = at_review();
        assert_eq!(d.apply(WizardAction::Next), Err(WizardError::NoNextStep));
        // Editing the form from the review keeps the wizard on the review.
        set_details(&mut d).unwrap();
        assert_eq!(d.step, WizardStep::Review);
    }

    #[test]
    fn submit_only_from_review() {
        let mut d = at_review();
        d.apply(WizardAction::Back).unwrap();
        assert_eq!(
            d.complete(),
            Err(WizardError::WrongStep {
                expected: 4,
                actual: 3
            })
        );
    }

    #[test]
    fn survives_a_round_trip_through_json() {
        let d = at_review();
        let json = serde_json::to_string(&d).unwrap();
        assert_eq!(serde_json::from_str::<WizardDraft>(&json).unwrap(), d);
    }
}
