//! What ends money's wait: a milestone's inspection window timing out (the
//! scheduler submits it at the window's end), a cancel, and the
//! commitment's expiry (the scheduler's, at it).

use super::{entry, run, Parties};
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::escrow::{Commitment, CommitmentCommand};
use aggregates::ids::{CommitmentId, TransferId};
use aggregates::rules::Rules;
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
        // Since rules 5, windows time out in the order they ended, however
        // the scheduler's submissions arrive: a later one waits, unrecorded
        // (the next tick submits it again), for an earlier
        // one's timeout, which would otherwise find the money moved.
        if decider.rules().since(Rules::FIFTH) {
            let commitment = decider.state::<Commitment>(&self.commitment_id.to_string())?;
            if let Some((milestone, ends_at)) =
                commitment.earlier_window_awaiting(&self.milestone_id, self.window)
            {
                return Err(Refusal::Stale(format!(
                    "the window of milestone {milestone} ended first ({ends_at}): its timeout goes first"
                )));
            }
        }
        let command = CommitmentCommand::TimeOut {
            milestone_id: self.milestone_id.clone(),
            window: self.window,
            transfer_id: self.transfer_id,
            rules: decider.rules(),
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
            rules: decider.rules(),
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
    /// The transfer by which each milestone's window, ended before the
    /// expiry and not yet timed out, times out first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub timeouts: Vec<MilestoneTimeout>,
    pub parties: Parties,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub due_at: Option<DateTime<Utc>>,
}

/// The transfer an expiry times a milestone's overdue window out by.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MilestoneTimeout {
    pub milestone_id: String,
    pub transfer_id: TransferId,
}

impl ExpireCommitment {
    /// The expiry of commitment `commitment_id` (between `parties`, with
    /// `milestones`) by `transfer_id`, due at `due_at`: each milestone's
    /// timeout transfer is derived from `transfer_id` and the milestone.
    pub fn new(
        (commitment_id, transfer_id): (CommitmentId, TransferId),
        parties: Parties,
        milestones: &[aggregates::escrow::MilestoneTerms],
        due_at: DateTime<Utc>,
    ) -> Self {
        let timeouts = milestones
            .iter()
            .map(|milestone| MilestoneTimeout {
                milestone_id: milestone.milestone_id.clone(),
                transfer_id: timeout_transfer(transfer_id, &milestone.milestone_id),
            })
            .collect();
        Self {
            commitment_id,
            transfer_id,
            timeouts,
            parties,
            due_at: Some(due_at),
        }
    }
}

/// The transfer by which the expiry `expiry` times out `milestone_id`.
fn timeout_transfer(expiry: TransferId, milestone_id: &str) -> TransferId {
    TransferId::from_uuid(crate::pipeline::hashed_id(&[
        b"ledger.escrow.expiry-timeout.v1",
        expiry.as_uuid().as_bytes(),
        milestone_id.as_bytes(),
    ]))
}

impl Request for ExpireCommitment {
    const KIND: &'static str = "expire_commitment";

    fn targets(&self) -> Vec<Target> {
        let entries: Vec<_> = std::iter::once(self.transfer_id)
            .chain(self.timeouts.iter().map(|timeout| timeout.transfer_id))
            .map(entry)
            .collect();
        self.parties.targets(self.commitment_id, &entries)
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let timeouts = self
            .timeouts
            .iter()
            .map(|timeout| (timeout.milestone_id.clone(), timeout.transfer_id))
            .collect();
        let command = CommitmentCommand::Expire {
            transfer_id: self.transfer_id,
            timeouts,
            at: decider.at_due(self.due_at)?,
        };
        run(decider, self.commitment_id, &self.parties, command, false)
    }
}
