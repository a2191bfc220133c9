//! Escrow requests: creating a commitment, depositing, submitting,
//! releasing and accepting milestones, claims (`claims`), timeouts, cancel
//! and expiry (`ends`), each deciding the commitment and moving its money
//! in the journal through `books`:
//!
//! - a deposit: Dr `escrow_cash` / Cr `escrow_held:<commitment>`;
//! - a release: Dr `escrow_held:<commitment>` / Cr `payee_payable:<payee>`;
//! - a refund: Dr `escrow_held:<commitment>` / Cr `payer_refunds:<payer>`;
//! - a claim: a hold on `escrow_held:<commitment>` (toward the payee),
//!   settled when it resolves: its payee side posted, the rest released
//!   and refunded.
//!
//! The parties and the currency are the commitment's, resolved into each
//! request before submission and checked again in the decision.

mod claims;
mod ends;

pub use claims::{ClaimMilestone, ResolveClaim, CLAIM_ENTITY};
pub use ends::{CancelCommitment, ExpireCommitment, MilestoneTimeout, TimeOutMilestone};

use super::books;
use crate::pipeline::{Decider, Refusal, Reply, Request, Target};
use aggregates::escrow::accounts::{self, EscrowAccount};
use aggregates::escrow::{
    Cause, ClaimOutcome, Commitment, CommitmentCommand, CommitmentEvent, CommitmentStatus,
    CommitmentTerms, Direction, Draw,
};
use aggregates::ids::{ClaimId, CommitmentId, DepositId, TransferId};
use aggregates::journal::entry::EntryRecord;
use aggregates::journal::hold::PendingTransfer;
use aggregates::money::{Amount, Asset};
use aggregates::{EntryId, RejectionKind};
use serde::{Deserialize, Serialize};
use serde_json::json;
use utoipa::ToSchema;

/// Who and what a commitment is between, as resolved into a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Parties {
    pub payer: String,
    pub payee: String,
    pub asset: Asset,
}

impl Parties {
    /// The commitment's parties.
    pub fn of(terms: &CommitmentTerms) -> Self {
        Self {
            payer: terms.payer.clone(),
            payee: terms.payee.clone(),
            asset: terms.asset.clone(),
        }
    }

    /// The four accounts of `commitment`: cash, held, the payee's payable,
    /// the payer's refunds.
    fn accounts(&self, commitment: CommitmentId) -> Result<[EscrowAccount; 4], Refusal> {
        let invalid = |what: &str, value: &str| Refusal::Rejected {
            kind: RejectionKind::Invalid,
            code: format!("invalid_{what}"),
            message: format!("{what} {value:?} names no account"),
            details: json!({ what: value }),
        };
        Ok([
            accounts::escrow_cash(),
            accounts::held(&commitment.to_string())
                .map_err(|_| invalid("commitment", &commitment.to_string()))?,
            accounts::payee_payable(&self.payee).map_err(|_| invalid("payee", &self.payee))?,
            accounts::payer_refunds(&self.payer).map_err(|_| invalid("payer", &self.payer))?,
        ])
    }

    /// The targets of money moving on `commitment`'s accounts, and of the
    /// entries `entries`.
    fn targets(&self, commitment: CommitmentId, entries: &[EntryId]) -> Vec<Target> {
        let mut targets = vec![Target::of::<Commitment>(commitment.to_string())];
        if let Ok(accounts) = self.accounts(commitment) {
            targets.extend(books::money_targets(
                accounts.iter().map(|account| &account.code),
                [&self.asset],
            ));
        }
        targets.extend(
            entries
                .iter()
                .map(|entry| Target::of::<EntryRecord>(entry.to_string())),
        );
        targets
    }
}

/// The commitment `commitment_id`, checked against the parties the
/// request was resolved with (they never change: a mismatch is a defect).
fn commitment<'a>(
    decider: &'a Decider<'_>,
    commitment_id: CommitmentId,
    parties: &Parties,
) -> Result<&'a Commitment, Refusal> {
    let commitment = decider.state::<Commitment>(&commitment_id.to_string())?;
    if let Some(terms) = &commitment.terms {
        if Parties::of(terms) != *parties {
            return Err(Refusal::Internal(format!(
                "the request names other parties than commitment {commitment_id}"
            )));
        }
    }
    Ok(commitment)
}

/// The entry of transfer `transfer_id`.
fn entry(transfer_id: TransferId) -> EntryId {
    EntryId::from_uuid(transfer_id.as_uuid())
}

/// The hold transfer a claim of `amount` reserves: from the held funds
/// toward the payee.
fn claim_hold(accounts: &[EscrowAccount; 4], asset: &Asset, amount: Amount) -> PendingTransfer {
    PendingTransfer {
        debit: accounts[1].code.clone(),
        credit: accounts[2].code.clone(),
        asset: asset.clone(),
        amount,
    }
}

/// Moves in the journal what `events` (of commitment `commitment_id`)
/// record: deposits, transfers, claims opened and resolved.
fn book(
    decider: &mut Decider<'_>,
    commitment_id: CommitmentId,
    parties: &Parties,
    events: &[CommitmentEvent],
) -> Result<(), Refusal> {
    let accounts = parties.accounts(commitment_id)?;
    let [cash, held, payable, refunds] = &accounts;
    for event in events {
        match event {
            CommitmentEvent::Deposited {
                deposit_id,
                amount,
                reference,
                at,
            } => {
                for account in [cash, held] {
                    books::open(decider, &account.code, account.spec)?;
                }
                let lines = books::transfer_lines(&cash.code, &held.code, &parties.asset, *amount);
                let entry = EntryId::from_uuid(deposit_id.as_uuid());
                books::post(decider, entry, &lines, reference.clone(), *at)?;
            }
            CommitmentEvent::ClaimOpened {
                amount, hold_id, ..
            } => {
                books::open(decider, &payable.code, payable.spec)?;
                books::reserve(
                    decider,
                    *hold_id,
                    &claim_hold(&accounts, &parties.asset, *amount),
                )?;
            }
            CommitmentEvent::ClaimResolved {
                claim_id,
                resolution,
            } => {
                let (hold_id, amount) = decider
                    .state::<Commitment>(&commitment_id.to_string())?
                    .claim(*claim_id)
                    .map(|claim| (claim.hold_id, claim.amount))
                    .ok_or_else(|| Refusal::Internal("a resolution of no claim".into()))?;
                let release = events.iter().find_map(|event| match event {
                    CommitmentEvent::Transferred(transfer)
                        if transfer.direction == Direction::Release =>
                    {
                        Some(entry(transfer.transfer_id))
                    }
                    _ => None,
                });
                let hold = claim_hold(&accounts, &parties.asset, amount);
                let reference = Some(format!("claim:{claim_id}"));
                let posted = release.map(|entry| (entry, reference));
                books::settle(
                    decider,
                    hold_id,
                    &hold,
                    resolution.to_payee,
                    posted,
                    resolution.at,
                )?;
            }
            CommitmentEvent::Transferred(transfer) => {
                let claimed = matches!(transfer.cause, Cause::Claim { .. });
                let to = match transfer.direction {
                    // A claim's release is posted by settling its hold.
                    Direction::Release if claimed => continue,
                    Direction::Release => payable,
                    Direction::Refund => refunds,
                };
                books::open(decider, &to.code, to.spec)?;
                let lines =
                    books::transfer_lines(&held.code, &to.code, &parties.asset, transfer.amount);
                let reference = Some(format!("commitment:{commitment_id}"));
                books::post(
                    decider,
                    entry(transfer.transfer_id),
                    &lines,
                    reference,
                    transfer.at,
                )?;
            }
            _ => {}
        }
    }
    Ok(())
}

/// A commitment as its requests answer it.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct CommitmentAnswer {
    pub commitment_id: CommitmentId,
    pub status: Option<CommitmentStatus>,
    /// Deposited, held (deposited less released and refunded) and frozen.
    pub funded: Amount,
    pub held: Amount,
    pub frozen: Amount,
}

/// A transfer as answered: its id, direction, amount and lineage.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct TransferAnswer {
    pub transfer_id: TransferId,
    pub direction: Direction,
    pub milestone_id: Option<String>,
    pub amount: Amount,
    pub lineage: Vec<Draw>,
}

/// What a request on a commitment answers: where it stands, and the
/// transfers the request made.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct EscrowAnswer {
    #[serde(flatten)]
    pub commitment: CommitmentAnswer,
    pub transfers: Vec<TransferAnswer>,
    /// A deposit's id, when the request made one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deposit_id: Option<DepositId>,
    /// A claim's id and, once resolved, how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub claim_id: Option<ClaimId>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<ClaimOutcome>,
}

fn answer(
    decider: &Decider<'_>,
    commitment_id: CommitmentId,
    events: &[CommitmentEvent],
) -> Result<EscrowAnswer, Refusal> {
    let commitment = decider.state::<Commitment>(&commitment_id.to_string())?;
    let amount =
        |value: Result<Amount, aggregates::money::AmountError>| value.map_err(Refusal::from);
    let mut reply = EscrowAnswer {
        commitment: CommitmentAnswer {
            commitment_id,
            status: commitment.status(),
            funded: amount(commitment.funded())?,
            held: amount(commitment.held())?,
            frozen: amount(commitment.frozen())?,
        },
        transfers: Vec::new(),
        deposit_id: None,
        claim_id: None,
        outcome: None,
    };
    for event in events {
        match event {
            CommitmentEvent::Transferred(transfer) => reply.transfers.push(TransferAnswer {
                transfer_id: transfer.transfer_id,
                direction: transfer.direction,
                milestone_id: transfer.milestone_id.clone(),
                amount: transfer.amount,
                lineage: transfer.lineage.clone(),
            }),
            CommitmentEvent::Deposited { deposit_id, .. } => reply.deposit_id = Some(*deposit_id),
            CommitmentEvent::ClaimOpened { claim_id, .. } => reply.claim_id = Some(*claim_id),
            CommitmentEvent::ClaimResolved {
                claim_id,
                resolution,
            } => {
                reply.claim_id = Some(*claim_id);
                reply.outcome = Some(resolution.outcome);
            }
            _ => {}
        }
    }
    Ok(reply)
}

/// Decides `command` on commitment `commitment_id`, books what it records
/// and answers (`created`: 201).
fn run(
    decider: &mut Decider<'_>,
    commitment_id: CommitmentId,
    parties: &Parties,
    command: CommitmentCommand,
    created: bool,
) -> Result<Reply, Refusal> {
    commitment(decider, commitment_id, parties)?;
    books::use_assets(decider, [&parties.asset])?;
    let events = decider.execute::<Commitment>(&commitment_id.to_string(), command)?;
    book(decider, commitment_id, parties, &events)?;
    let reply = answer(decider, commitment_id, &events)?;
    if created {
        Reply::created(commitment_id.to_string(), &reply)
    } else {
        Reply::ok(commitment_id.to_string(), &reply)
    }
}

/// Creates a commitment.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateCommitment {
    pub commitment_id: CommitmentId,
    pub terms: CommitmentTerms,
}

impl Request for CreateCommitment {
    const KIND: &'static str = "create_commitment";

    fn targets(&self) -> Vec<Target> {
        let mut targets = vec![Target::of::<Commitment>(self.commitment_id.to_string())];
        targets.extend(books::money_targets([], [&self.terms.asset]));
        targets
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let at = decider.at();
        books::use_assets(decider, [&self.terms.asset])?;
        let events = decider.execute::<Commitment>(
            &self.commitment_id.to_string(),
            CommitmentCommand::Create {
                terms: self.terms.clone(),
                rules: decider.rules(),
                at,
            },
        )?;
        let reply = answer(decider, self.commitment_id, &events)?;
        Reply::created(self.commitment_id.to_string(), &reply)
    }
}

/// Deposits into a commitment (a lot its transfers draw from).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DepositFunds {
    pub commitment_id: CommitmentId,
    pub deposit_id: DepositId,
    pub amount: Amount,
    pub reference: Option<String>,
    pub parties: Parties,
}

impl Request for DepositFunds {
    const KIND: &'static str = "deposit_funds";

    fn targets(&self) -> Vec<Target> {
        let entry = EntryId::from_uuid(self.deposit_id.as_uuid());
        self.parties.targets(self.commitment_id, &[entry])
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let command = CommitmentCommand::Deposit {
            deposit_id: self.deposit_id,
            amount: self.amount,
            reference: self.reference.clone(),
            rules: decider.rules(),
            at: decider.at(),
        };
        run(decider, self.commitment_id, &self.parties, command, true)
    }
}

/// Submits a milestone: its inspection window opens.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SubmitMilestone {
    pub commitment_id: CommitmentId,
    pub milestone_id: String,
    pub parties: Parties,
}

impl Request for SubmitMilestone {
    const KIND: &'static str = "submit_milestone";

    fn targets(&self) -> Vec<Target> {
        self.parties.targets(self.commitment_id, &[])
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let command = CommitmentCommand::Submit {
            milestone_id: self.milestone_id.clone(),
            rules: decider.rules(),
            at: decider.at(),
        };
        run(decider, self.commitment_id, &self.parties, command, false)
    }
}

/// Releases part or all of a milestone to the payee; `accepted` when the
/// payer accepts it (answering its inspection window).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReleaseMilestone {
    pub commitment_id: CommitmentId,
    pub milestone_id: String,
    pub transfer_id: TransferId,
    pub amount: Option<Amount>,
    pub accepted: bool,
    pub parties: Parties,
}

impl Request for ReleaseMilestone {
    const KIND: &'static str = "release_milestone";

    fn targets(&self) -> Vec<Target> {
        self.parties
            .targets(self.commitment_id, &[entry(self.transfer_id)])
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let command = CommitmentCommand::Release {
            transfer_id: self.transfer_id,
            milestone_id: self.milestone_id.clone(),
            amount: self.amount,
            accepted: self.accepted,
            rules: decider.rules(),
            at: decider.at(),
        };
        run(
            decider,
            self.commitment_id,
            &self.parties,
            command,
            !self.accepted,
        )
    }
}

/// The scheduled work of a milestone's inspection window `window`.
pub fn window_timeout(commitment_id: CommitmentId, milestone_id: &str, window: u32) -> String {
    format!("commitment:{commitment_id}:milestone:{milestone_id}:window:{window}")
}

/// The scheduled work of a commitment's expiry.
pub fn expiry(commitment_id: CommitmentId) -> String {
    format!("commitment:{commitment_id}:expiry")
}

/// What a commitment event schedules: an inspection window's timeout at
/// its end (settled when it closes), the commitment's expiry (settled when
/// it ends or, since rules 9, completes).
fn schedule(
    event: &eventstore::StoredEvent,
) -> Result<Vec<projections::scheduled::ScheduleChange>, projections::ApplyError> {
    use crate::scheduler::{due, settled};
    let failed = |message: String| projections::ApplyError::Event {
        tenant_seq: event.tenant_seq,
        message,
    };
    let commitment_id = || {
        event
            .aggregate_id
            .parse::<CommitmentId>()
            .map_err(|error| failed(format!("commitment id {}: {error}", event.aggregate_id)))
    };
    Ok(match projections::decode::decode::<Commitment>(event)? {
        CommitmentEvent::MilestoneSubmitted {
            milestone_id,
            window,
            ends_at,
            payer,
            payee,
            asset,
            ..
        } => vec![due(
            window_timeout(commitment_id()?, &milestone_id, window),
            ends_at,
            &TimeOutMilestone {
                commitment_id: commitment_id()?,
                milestone_id,
                window,
                transfer_id: TransferId::from_uuid(event.event_id),
                parties: Parties {
                    payer,
                    payee,
                    asset,
                },
                due_at: Some(ends_at),
            },
        )?],
        CommitmentEvent::InspectionClosed {
            milestone_id,
            window,
            ..
        } => vec![settled(window_timeout(
            commitment_id()?,
            &milestone_id,
            window,
        ))],
        CommitmentEvent::CommitmentCreated {
            terms,
            expiry_times_out,
            ..
        } => match terms.expires_at {
            Some(expires_at) => vec![due(
                expiry(commitment_id()?),
                expires_at,
                &ExpireCommitment::new(
                    (commitment_id()?, TransferId::from_uuid(event.event_id)),
                    Parties::of(&terms),
                    // A commitment created under the first rules expires
                    // as it always did.
                    if expiry_times_out {
                        &terms.milestones
                    } else {
                        &[]
                    },
                    expires_at,
                ),
            )?],
            None => Vec::new(),
        },
        CommitmentEvent::CommitmentCanceled { .. }
        | CommitmentEvent::CommitmentExpired { .. }
        | CommitmentEvent::CommitmentCompleted { .. } => {
            vec![settled(expiry(commitment_id()?))]
        }
        _ => Vec::new(),
    })
}

/// A commitment as a replay reports it.
fn report(commitment_id: &str, commitment: &Commitment) -> serde_json::Value {
    let Some(terms) = &commitment.terms else {
        return serde_json::Value::Null;
    };
    json!({
        "commitment_id": commitment_id,
        "status": commitment.status(),
        "asset": terms.asset,
        "total": terms.total().ok(),
        "funded": commitment.funded().ok(),
        "held": commitment.held().ok(),
        "frozen": commitment.frozen().ok(),
        "released": commitment.transferred(Direction::Release).ok(),
        "refunded": commitment.transferred(Direction::Refund).ok(),
    })
}

/// The escrow domain: commitments, their deposits, milestones, claims and
/// transfers, moving money in the journal.
pub fn domain() -> crate::domains::Domain {
    use crate::domains::{Domain, RequestKind, Section};
    use crate::pipeline::AggregateKind;
    Domain {
        name: "escrow",
        aggregates: vec![AggregateKind::of::<Commitment>()],
        requests: vec![
            RequestKind::of::<CreateCommitment>(),
            RequestKind::of::<DepositFunds>(),
            RequestKind::of::<SubmitMilestone>(),
            RequestKind::of::<ReleaseMilestone>(),
            RequestKind::of::<ClaimMilestone>(),
            RequestKind::of::<ResolveClaim>(),
            RequestKind::of::<TimeOutMilestone>(),
            RequestKind::of::<CancelCommitment>(),
            RequestKind::of::<ExpireCommitment>(),
        ],
        projections: vec![std::sync::Arc::new(projections::escrow::Escrow)],
        process_managers: Vec::new(),
        reactions: Vec::new(),
        schedules: vec![projections::scheduled::ScheduleReader {
            aggregate_type: aggregates::escrow::COMMITMENT_AGGREGATE,
            events: &[
                "MilestoneSubmitted",
                "InspectionClosed",
                "CommitmentCreated",
                "CommitmentCanceled",
                "CommitmentExpired",
                "CommitmentCompleted",
            ],
            read: schedule,
        }],
        routes: crate::http::escrow::router,
        tags: crate::http::escrow::tags(),
        sections: vec![Section {
            name: "commitments",
            aggregate_type: aggregates::escrow::COMMITMENT_AGGREGATE,
            one: false,
            report: |commitment_id, state, _| match state.as_any().downcast_ref::<Commitment>() {
                Some(commitment) => report(commitment_id, commitment),
                None => serde_json::Value::Null,
            },
        }],
    }
}
