//! Approval requests and the rules for voting on them.

use crate::domain::credentials::ApplicationId;
use crate::domain::ids::{ChannelId, GuildId, MessageId, UserId};
use chrono::{DateTime, Utc};

pub const DENY_REASON_MAX_CHARS: usize = 500;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestStatus {
    Pending,
    Approved,
    Denied,
    Withdrawn,
    Expired,
}

impl RequestStatus {
    pub const ALL: [RequestStatus; 5] = [
        Self::Pending,
        Self::Approved,
        Self::Denied,
        Self::Withdrawn,
        Self::Expired,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Denied => "denied",
            Self::Withdrawn => "withdrawn",
            Self::Expired => "expired",
        }
    }

    pub fn parse(value: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.as_str() == value)
    }
}

/// A request for approval of one application.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovalRequest {
    pub app_id: ApplicationId,
    pub guild_id: GuildId,
    pub requester_id: UserId,
    pub approvals_required: u8,
    pub status: RequestStatus,
    /// Who approved so far, in order.
    pub approvers: Vec<UserId>,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    pub decided_by: Option<UserId>,
    pub deny_reason: Option<String>,
    /// The channel the wizard ran in.
    pub origin_channel: Option<ChannelId>,
    /// The request's message in the approvals channel, once posted.
    pub message: Option<(ChannelId, MessageId)>,
    pub reminded_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VoteOutcome {
    /// The vote counted; more are needed.
    Counted { given: u8, required: u8 },
    /// This vote completed the approval.
    Approved,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApprovalError {
    #[error("this request was already {}", .0.as_str())]
    NotPending(RequestStatus),
    #[error("this request has expired")]
    Expired,
    #[error("you cannot decide on your own request")]
    OwnRequest,
    #[error("you have already approved this request")]
    AlreadyApproved,
    #[error("a reason is required to deny a request")]
    ReasonRequired,
    #[error("the reason must be at most {DENY_REASON_MAX_CHARS} characters")]
    ReasonTooLong,
}

impl ApprovalRequest {
    fn check_open(&self, decider: UserId, now: DateTime<Utc>) -> Result<(), ApprovalError> {
        if self.status != RequestStatus::Pending {
            return Err(ApprovalError::NotPending(self.status));
        }
        if now >= self.expires_at {
            return Err(ApprovalError::Expired);
        }
        if decider == self.requester_id {
            return Err(ApprovalError::OwnRequest);
        }
        Ok(())
    }

    /// What one approver's vote does, if it may be cast.
    pub fn vote(&self, approver: UserId, now: DateTime<Utc>) -> Result<VoteOutcome, ApprovalError> {
        self.check_open(approver, now)?;
        if self.approvers.contains(&approver) {
            return Err(ApprovalError::AlreadyApproved);
        }
        let given = self.approvers.len() as u8 + 1;
        if given >= self.approvals_required {
            Ok(VoteOutcome::Approved)
        } else {
            Ok(VoteOutcome::Counted {
                given,
                required: self.approvals_required,
            })
        }
    }

    /// Half of its lifetime gone: approvers get a reminder.
    pub fn reminder_due(&self, now: DateTime<Utc>) -> bool {
        self.status == RequestStatus::Pending
            && self.reminded_at.is_none()
            && now >= self.created_at + (self.expires_at - self.created_at) / 2
    }

    /// Checks a denial and returns the cleaned-up reason.
    pub fn deny(
        &self,
        approver: UserId,
        reason: &str,
        now: DateTime<Utc>,
    ) -> Result<String, ApprovalError> {
        self.check_open(approver, now)?;
        let reason = reason.trim();
        if reason.is_empty() {
            return Err(ApprovalError::ReasonRequired);
        }
        if reason.chars().count() > DENY_REASON_MAX_CHARS {
            return Err(ApprovalError::ReasonTooLong);
        }
        Ok(reason.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeDelta;

    fn request(required: u8) -> ApprovalRequest {
        let now = Utc::now();
        ApprovalRequest {
            app_id: ApplicationId::generate(),
            guild_id: GuildId(1),
            requester_id: UserId(10),
            approvals_required: required,
            status: RequestStatus::Pending,
            approvers: vec![],
            created_at: now,
            expires_at: now + TimeDelta::hours(72),
            decided_by: None,
            deny_reason: None,
            origin_channel: None,
            message: None,
            reminded_at: None,
        }
    }

    #[test]
    fn the_reminder_falls_due_at_half_time_once() {
        let mut r = request(1);
        let half = r.created_at + TimeDelta::hours(36);
        assert!(!r.reminder_due(half - TimeDelta::seconds(1)));
        assert!(r.reminder_due(half));
        r.reminded_at = Some(half);
        assert!(!r.reminder_due(half + TimeDelta::hours(1)));
    }

    #[test]
    fn distinct_approvers_reach_the_count() {
        let mut r = request(2);
        let now = Utc::now();
        assert_eq!(
            r.vote(UserId(20), now),
            Ok(VoteOutcome::Counted {
                given: 1,
                required: 2
            })
        );
        r.approvers.push(UserId(20));
        assert_eq!(r.vote(UserId(20), now), Err(ApprovalError::AlreadyApproved));
        assert_eq!(r.vote(UserId(21), now), Ok(VoteOutcome::Approved));
        assert_eq!(request(1).vote(UserId(20), now), Ok(VoteOutcome::Approved));
    }

    #[test]
    fn the_requester_cannot_decide() {
        let r = request(1);
        let now = Utc::now();
        assert_eq!(r.vote(UserId(10), now), Err(ApprovalError::OwnRequest));
        assert_eq!(
            r.deny(UserId(10), "no", now),
            Err(ApprovalError::OwnRequest)
        );
    }

    #[test]
    fn closed_and_expired_requests_refuse_votes() {
        let mut r = request(1);
        let late = r.expires_at;
        assert_eq!(r.vote(UserId(20), late), Err(ApprovalError::Expired));
        r.status = RequestStatus::Denied;
        assert_eq!(
            r.vote(UserId(20), Utc::now()),
            Err(ApprovalError::NotPending(RequestStatus::Denied))
        );
        assert_eq!(
            ApprovalError::NotPending(RequestStatus::Withdrawn).to_string(),
            "this request was already withdrawn"
        );
    }

    #[test]
    fn denial_needs_a_short_reason() {
        let r = request(1);
        let now = Utc::now();
        assert_eq!(
            r.deny(UserId(20), "  ", now),
            Err(ApprovalError::ReasonRequired)
        );
        assert_eq!(
            r.deny(UserId(20), &"x".repeat(501), now),
            Err(ApprovalError::ReasonTooLong)
        );
        assert_eq!(
            r.deny(UserId(20), " not needed ", now),
            Ok("not needed".into())
        );
    }
}
