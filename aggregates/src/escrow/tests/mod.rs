//! Given/when/then for every transition of a commitment and every
//! rejection, and a property over random sequences.

mod answers;
mod claims;
mod completion;
mod funding;
mod releases;

use super::*;
use crate::money::Asset;
use crate::rules::Rules;
use chrono::TimeZone;
use cqrs_es::test::TestFramework;

type Given = TestFramework<Commitment>;

fn at(hour: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0).unwrap()
}

fn cents(value: i64) -> Amount {
    Amount::new(value).unwrap()
}

fn deposit_id(n: u128) -> DepositId {
    DepositId::from_uuid(uuid::Uuid::from_u128(0x100 + n))
}

fn transfer_id(n: u128) -> TransferId {
    TransferId::from_uuid(uuid::Uuid::from_u128(0x200 + n))
}

fn claim_id(n: u128) -> ClaimId {
    ClaimId::from_uuid(uuid::Uuid::from_u128(0x300 + n))
}

fn hold_id(n: u128) -> HoldId {
    HoldId::from_uuid(uuid::Uuid::from_u128(0x400 + n))
}

/// Milestones m1 30000 (3 days' inspection, released on timeout) and m2
/// 20000 (1 hour, refunded on timeout), FIFO or LIFO.
fn terms(allocation: Allocation) -> CommitmentTerms {
    CommitmentTerms {
        payer: "buyer-1".into(),
        payee: "seller-9".into(),
        asset: Asset::new("USD", 2).unwrap(),
        allocation,
        milestones: vec![
            MilestoneTerms {
                milestone_id: "m1".into(),
                amount: cents(30_000),
                due_at: None,
                inspection_seconds: 259_200,
                on_timeout: Direction::Release,
            },
            MilestoneTerms {
                milestone_id: "m2".into(),
                amount: cents(20_000),
                due_at: None,
                inspection_seconds: 3_600,
                on_timeout: Direction::Refund,
            },
        ],
        expires_at: Some(at(20)),
    }
}

fn created(allocation: Allocation) -> CommitmentEvent {
    CommitmentEvent::CommitmentCreated {
        terms: terms(allocation),
        expiry_times_out: true,
        at: at(1),
    }
}

fn deposited(n: u128, amount: i64) -> CommitmentEvent {
    CommitmentEvent::Deposited {
        deposit_id: deposit_id(n),
        amount: cents(amount),
        reference: Some(format!("wire-{n}")),
        at: at(2),
    }
}

fn deposit(n: u128, amount: i64) -> CommitmentCommand {
    CommitmentCommand::Deposit {
        deposit_id: deposit_id(n),
        amount: cents(amount),
        reference: Some(format!("wire-{n}")),
        rules: Rules::CURRENT,
        at: at(2),
    }
}

/// Created FIFO and funded by deposits of 20000, 15000 and 15000.
fn funded() -> Vec<CommitmentEvent> {
    vec![
        created(Allocation::Fifo),
        deposited(1, 20_000),
        deposited(2, 15_000),
        deposited(3, 15_000),
    ]
}

fn draw(n: u128, amount: i64) -> Draw {
    Draw {
        deposit_id: deposit_id(n),
        amount: cents(amount),
    }
}

fn state(events: Vec<CommitmentEvent>) -> Commitment {
    let mut commitment = Commitment::default();
    for event in events {
        commitment.apply(event);
    }
    commitment
}

#[allow(clippy::too_many_arguments)]
fn transferred(
    n: u128,
    direction: Direction,
    milestone: Option<&str>,
    amount: i64,
    lineage: Vec<Draw>,
    cause: Cause,
    hour: u32,
) -> CommitmentEvent {
    CommitmentEvent::Transferred(Transfer {
        transfer_id: transfer_id(n),
        direction,
        milestone_id: milestone.map(str::to_string),
        amount: cents(amount),
        lineage,
        cause,
        at: at(hour),
    })
}
