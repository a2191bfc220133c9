//! What ends money's wait: a milestone's inspection window timing out (the
//! scheduler submits it at the window's end), a cancel, and the
//! commitment's expiry (the scheduler's, at it).

use super::{entry, run, Parties};
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::escrow::CommitmentCommand;
use aggregates::ids::{CommitmentId, TransferId};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// Applies a milestone's `on_timeout` outcome at the end of its window.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeOutMilestone {
    pub commitment_id: CommitmentId,
    pub milestone_id: String,
    /// The window it times out (a later one is not this request's).
    pub window: u32,
    pub transfer_id: TransferId,
    pub parties: Parties,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

impl Request for TimeOutMilestone {
    const KIND: &'static str = "time_out_milestone";

    fn targets(&self) -> Vec<Target> {
        self.parties
            .targets(self.commitment_id, &[entry(self.transfer_id)])
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let command = CommitmentCommand::TimeOut {
            milestone_id: self.milestone_id.clone(),
            window: self.window,
            transfer_id: self.transfer_id,
            at: decider.at_due(self.due_at)?,
        };
        run(decider, self.commitment_id, &self.parties, command, false)
    }
}

/// Cancels a commitment: every unreleased, unfrozen balance back to the
/// payer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CancelCommitment {
    pub commitment_id: CommitmentId,
    pub transfer_id: TransferId,
    pub parties: Parties,
}

impl Request for CancelCommitment {
    const KIND: &'static str = "cancel_commitment";

    fn targets(&self) -> Vec<Target> {
        self.parties
            .targets(self.commitment_id, &[entry(self.transfer_id)])
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let command = CommitmentCommand::Cancel {
            transfer_id: self.transfer_id,
            at: decider.at(),
        };
        run(decider, self.commitment_id, &self.parties, command, false)
    }
}

/// Ends a commitment at its expiry: what is unreleased and unfrozen back
/// to the payer.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpireCommitment {
    pub commitment_id: CommitmentId,
    pub transfer_id: TransferId,
    pub parties: Parties,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

impl Request for ExpireCommitment {
    const KIND: &'static str = "expire_commitment";

    fn targets(&self) -> Vec<Target> {
        self.parties
            .targets(self.commitment_id, &[entry(self.transfer_id)])
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let command = CommitmentCommand::Expire {
            transfer_id: self.transfer_id,
            at: decider.at_due(self.due_at)?,
        };
        run(decider, self.commitment_id, &self.parties, command, false)
    }
}
