//! Component custom_ids (`kg:<kind>:<id>:<action>`), built and parsed in this one place.

use crate::domain::credentials::ApplicationId;
use crate::domain::ids::UserId;
use std::fmt;

/// What a component belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A wizard draft; the id is the draft id.
    Draft,
    /// A wizard draft offered but not stored yet (its form not submitted);
    /// the id is `<draft id>_<opener>[_<draft it replaces>]`, see `NewDraft`.
    NewDraft,
    /// A registered application; the id is its Application ID.
    App,
    /// A page of an application's history; the id is `<page>_<Application ID>`.
    History,
    /// A stored key or Secret with a grace choice; the id is `<grace>_<credential id>`.
    Credential,
}

/// What the component does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// The Create Application modal (its submit).
    Details,
    /// Reopen the modal, pre-filled.
    Edit,
    Resume,
    Restart,
    UserType,
    SourceApp,
    Scopes,
    ViewApis,
    Next,
    Back,
    Cancel,
    Submit,
    GenerateKey,
    Finish,
    Approve,
    Deny,
    /// The Deny modal (its submit).
    DenyReason,
    Withdraw,
    Reveal,
    /// Show a page of `/app history`.
    Page,
    /// Rotate the credential a confirmation is bound to.
    Confirm,
    /// An expiry warning's button: the rotation confirmation, for the app's key.
    RotateNow,
    /// The revoke modal (its submit: the name typed to confirm).
    RevokeName,
    /// Issue a credential that never reached its owner again.
    IssueAgain,
}

const ACTIONS: [(Action, &str); 24] = [
    (Action::Details, "details"),
    (Action::Edit, "edit"),
    (Action::Resume, "resume"),
    (Action::Restart, "restart"),
    (Action::UserType, "usertype"),
    (Action::SourceApp, "source"),
    (Action::Scopes, "scopes"),
    (Action::ViewApis, "apis"),
    (Action::Next, "next"),
    (Action::Back, "back"),
    (Action::Cancel, "cancel"),
    (Action::Submit, "submit"),
    (Action::GenerateKey, "genkey"),
    (Action::Finish, "finish"),
    (Action::Approve, "approve"),
    (Action::Deny, "deny"),
    (Action::DenyReason, "denyreason"),
    (Action::Withdraw, "withdraw"),
    (Action::Reveal, "reveal"),
    (Action::Page, "page"),
    (Action::Confirm, "confirm"),
    (Action::RotateNow, "rotatenow"),
    (Action::RevokeName, "revokename"),
    (Action::IssueAgain, "reissue"),
];

impl Action {
    fn as_str(self) -> &'static str {
        ACTIONS
            .iter()
            .find(|(a, _)| *a == self)
            .map_or("", |(_, s)| s)
    }

    fn parse(s: &str) -> Option<Self> {
        ACTIONS.iter().find(|(_, name)| *name == s).map(|(a, _)| *a)
    }
}

/// A draft that exists only in the components offering it, until its form
/// is submitted: what that submission must know to store it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewDraft {
    pub id: String,
    /// The member it was offered to: only their submission stores it.
    pub opener: UserId,
    /// Start over: the draft to drop when this one is stored.
    pub replacing: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomId {
    pub kind: Kind,
    pub id: String,
    pub action: Action,
}

impl CustomId {
    pub fn draft(id: &str, action: Action) -> Self {
        Self {
            kind: Kind::Draft,
            id: id.to_owned(),
            action,
        }
    }

    pub fn new_draft(draft: &NewDraft, action: Action) -> Self {
        let mut id = format!("{}_{}", draft.id, draft.opener.0);
        if let Some(old) = &draft.replacing {
            id.push('_');
            id.push_str(old);
        }
        Self {
            kind: Kind::NewDraft,
            id,
            action,
        }
    }

    /// The draft a `newdraft` custom_id offers, if well formed.
    pub fn new_draft_parts(&self) -> Option<NewDraft> {
        if self.kind != Kind::NewDraft {
            return None;
        }
        let mut parts = self.id.split('_');
        let id = parts.next().filter(|p| !p.is_empty())?;
        let opener = parts.next()?.parse().ok()?;
        let replacing = match parts.next() {
            None => None,
            Some(old) if !old.is_empty() => Some(old.to_owned()),
            Some(_) => return None,
        };
        if parts.next().is_some() {
            return None;
        }
        Some(NewDraft {
            id: id.to_owned(),
            opener: UserId(opener),
            replacing,
        })
    }

    pub fn history(app: &str, page: u32) -> Self {
        Self {
            kind: Kind::History,
            id: format!("{page}_{app}"),
            action: Action::Page,
        }
    }

    pub fn credential(grace: &str, credential_id: &str, action: Action) -> Self {
        Self {
            kind: Kind::Credential,
            id: format!("{grace}_{credential_id}"),
            action,
        }
    }

    /// The grace and credential id of a credential custom_id.
    pub fn credential_parts(&self) -> Option<(&str, &str)> {
        match self.kind {
            Kind::Credential => self.id.split_once('_'),
            _ => None,
        }
    }

    /// The page and Application ID of a history custom_id.
    pub fn history_page(&self) -> Option<(u32, &str)> {
        let (page, app) = self.id.split_once('_')?;
        Some((page.parse().ok()?, app))
    }

    /// The Application ID an `app` or `history` custom_id names, if well formed.
    pub fn app_id(&self) -> Option<ApplicationId> {
        let id = match self.kind {
            Kind::App => self.id.as_str(),
            Kind::History => self.history_page()?.1,
            Kind::Draft | Kind::NewDraft | Kind::Credential => return None,
        };
        ApplicationId::parse(id).ok()
    }

    pub fn app(id: &str, action: Action) -> Self {
        Self {
            kind: Kind::App,
            id: id.to_owned(),
            action,
        }
    }

    /// None for anything keygate did not build (or built by an older, incompatible version).
    pub fn parse(text: &str) -> Option<Self> {
        let mut parts = text.split(':');
        if parts.next()? != "kg" {
            return None;
        }
        let kind = match parts.next()? {
            "draft" => Kind::Draft,
            "newdraft" => Kind::NewDraft,
            "app" => Kind::App,
            "history" => Kind::History,
            "cred" => Kind::Credential,
            _ => return None,
        };
        let id = parts.next()?;
        let action = Action::parse(parts.next()?)?;
        if parts.next().is_some()
            || id.is_empty()
            || !id.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return None;
        }
        Some(Self {
            kind,
            id: id.to_owned(),
            action,
        })
    }
}

impl fmt::Display for CustomId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kind = match self.kind {
            Kind::Draft => "draft",
            Kind::NewDraft => "newdraft",
            Kind::App => "app",
            Kind::History => "history",
            Kind::Credential => "cred",
        };
        write!(f, "kg:{kind}:{}:{}", self.id, self.action.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_action_round_trips_within_discords_limit() {
        let fresh = NewDraft {
            id: "dAbcdefghijklmno".into(),
            opener: UserId(u64::MAX),
            replacing: None,
        };
        let over = NewDraft {
            replacing: Some("dPqrstuvwxyz0123".into()),
            ..fresh.clone()
        };
        for (action, _) in ACTIONS {
            for id in [
                CustomId::draft("dAbc123", action),
                CustomId::new_draft(&fresh, action),
                CustomId::new_draft(&over, action),
                CustomId::app("app_abcdefghijklmnopqrstuv", action),
                CustomId::credential("30d", "key_abcdefghijklmnopqrstuv", action),
            ] {
                let text = id.to_string();
                assert!(text.len() <= 100, "{text}");
                assert_eq!(CustomId::parse(&text), Some(id));
            }
        }
    }

    #[test]
    fn foreign_or_broken_ids_are_ignored() {
        for text in [
            "",
            "kg",
            "kg:draft:x",
            "xx:draft:d1:next",
            "kg:user:d1:next",
            "kg:draft:d1:fly",
            "kg:draft::next",
            "kg:draft:d1:next:more",
            "kg:draft:d-1:next",
        ] {
            assert_eq!(CustomId::parse(text), None, "{text}");
        }
    }

    #[test]
    fn a_new_draft_names_its_opener_and_what_it_replaces() {
        let over = NewDraft {
            id: "dNew".into(),
            opener: UserId(42),
            replacing: Some("dOld".into()),
        };
        let text = CustomId::new_draft(&over, Action::Details).to_string();
        assert_eq!(text, "kg:newdraft:dNew_42_dOld:details");
        let parsed = CustomId::parse(&text).and_then(|c| c.new_draft_parts());
        assert_eq!(parsed, Some(over));
        for broken in [
            "kg:newdraft:dNew:details",
            "kg:newdraft:dNew_x:details",
            "kg:newdraft:dNew_42_:details",
            "kg:newdraft:_42:details",
            "kg:newdraft:dNew_42_dOld_more:details",
        ] {
            let parts = CustomId::parse(broken).and_then(|c| c.new_draft_parts());
            assert_eq!(parts, None, "{broken}");
        }
        // A stored draft's custom_id is not a new draft's.
        assert_eq!(
            CustomId::draft("dNew", Action::Edit).new_draft_parts(),
            None
        );
    }
}
