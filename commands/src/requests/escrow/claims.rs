//! Claims: a rejection or a claim freezes part of a milestone (a hold on
//! the commitment's held funds) until it resolves, once.

use super::{entry, run, Parties};
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::escrow::{ClaimOutcome, CommitmentCommand};
use aggregates::ids::{ClaimId, CommitmentId, TransferId};
use aggregates::money::Amount;
use aggregates::HoldId;
use serde::{Deserialize, Serialize};

/// The entity index's name for claims (found by their own id).
pub const CLAIM_ENTITY: &str = "claim";

/// Freezes `amount` of a milestone until the claim resolves; `rejection`
/// when the payer rejects the milestone (answering its inspection window).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimMilestone {
    pub commitment_id: CommitmentId,
    pub claim_id: ClaimId,
    pub milestone_id: String,
    pub amount: Amount,
    pub reason: Option<String>,
    pub rejection: bool,
    pub parties: Parties,
}

impl Request for ClaimMilestone {
    const KIND: &'static str = "claim_milestone";

    fn targets(&self) -> Vec<Target> {
        self.parties.targets(self.commitment_id, &[])
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let command = CommitmentCommand::Claim {
            claim_id: self.claim_id,
            milestone_id: self.milestone_id.clone(),
            amount: self.amount,
            reason: self.reason.clone(),
            rejection: self.rejection,
            hold_id: HoldId::from_uuid(self.claim_id.as_uuid()),
            rules: decider.rules(),
            at: decider.at(),
        };
        let reply = run(decider, self.commitment_id, &self.parties, command, true)?;
        decider.index::<aggregates::escrow::Commitment>(
            CLAIM_ENTITY,
            self.claim_id.to_string(),
            &self.commitment_id.to_string(),
        );
        Ok(reply)
    }
}

/// Resolves a claim, once: its payee side released (`release_id`), its
/// payer side refunded (`refund_id`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResolveClaim {
    pub commitment_id: CommitmentId,
    pub claim_id: ClaimId,
    pub outcome: ClaimOutcome,
    pub release_id: TransferId,
    pub refund_id: TransferId,
    pub parties: Parties,
}

impl Request for ResolveClaim {
    const KIND: &'static str = "resolve_claim";

    fn targets(&self) -> Vec<Target> {
        self.parties.targets(
            self.commitment_id,
            &[entry(self.release_id), entry(self.refund_id)],
        )
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let command = CommitmentCommand::ResolveClaim {
            claim_id: self.claim_id,
            outcome: self.outcome,
            release_id: self.release_id,
            refund_id: self.refund_id,
            rules: decider.rules(),
            at: decider.at(),
        };
        run(decider, self.commitment_id, &self.parties, command, false)
    }
}
