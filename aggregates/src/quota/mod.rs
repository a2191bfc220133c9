//! The quota aggregate: one per (tenant, quota type, quota account), holding
//! its grants and deciding consumption, seat allocation, issue, revocation
//! and expiry.
//!
//! Burn-down order of usable grants: priority (0 first, 100 last), then
//! earliest expiry (grants without expiry last), then promotional before
//! paid, then oldest by issue (the order the grants were issued in, never the
//! client-given `effective_at`), then grant id. A consumption may span several
//! grants (one posting per grant) and never overdraws: when the usable total
//! is short of the request, nothing is consumed. Every decision first expires
//! the grants whose expiry has passed at the command's time, posting their
//! unused balance as breakage.
//!
//! Seats are a gauge. When a seat grant closes (revoked, expired, a plan
//! change or renewal) with seats allocated on it, those seats move to the
//! open grants with room, in burn-down order, in the same decision; what no
//! grant has room for is over-allocated (`unbacked`). A grant issued later
//! takes unbacked seats first, a release gives them back first, and no seat
//! is allocated while any is unbacked.
//!
//! Every account this quota posts to belongs to it alone (grant accounts,
//! and `quota_issued:<quota>`, `quota_consumed:<quota>`,
//! `quota_breakage:<quota>`, `seats_allocated`, `seats_unbacked`, suffixed
//! `@<account>` for a quota account's quota). The aggregate keeps their
//! totals, so a decision refuses any entry that verify or replay would refuse
//! later (an overdraft, a total past 64 bits).
//!
//! Layout:
//! - `types`: quota types and accounts, aggregate ids, grants and the
//!   journal accounts a quota posts to.
//! - `commands`, `events`, `errors`: what a quota is asked, what it records,
//!   why it refuses.
//! - `burn_order`: the burn-down order and draws along it.
//! - `grants`: issue, revocation, the end of a subscription's grants.
//! - `expiry`: grants past their expiry, and closing a grant.
//! - `consumption`: consuming runs and credits.
//! - `seats`: allocation, release, seat moves and unbacked seats.
//!
//! This file holds the state ([`Quota`]), the decision in progress, how
//! events fold into the state, and the `Aggregate` and `Decide` impls.

mod burn_order;
mod commands;
mod consumption;
mod errors;
mod events;
mod expiry;
mod grants;
mod seats;
#[cfg(test)]
mod tests;
mod types;

use burn_order::BurnOrder;
pub use commands::{Ending, QuotaCommand};
pub use errors::{holder_name, QuotaError};
pub use events::{Allocation, QuotaEvent};
pub use types::{
    allocated_account, breakage_account, consumed_account, grant_account, is_quota_account,
    issued_account, parse_quota_aggregate_id, quota_aggregate_id, unbacked_account, Available,
    Grant, GrantSource, GrantStatus, GrantTerms, InvalidQuotaAccount, QuotaAccount, QuotaType,
    UnknownQuota,
};

use crate::decide::{handle_by_deciding, Decide};
use crate::ids::GrantId;
use crate::journal::{Balances, JournalEntry};
use crate::money::Amount;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::Aggregate;
use serde::{Deserialize, Serialize};

/// Aggregate type of quotas in the event store.
pub const QUOTA_AGGREGATE: &str = "quota";

/// Longest external reference on a consumption.
pub const REFERENCE_LENGTH_MAX: usize = 200;

/// Highest (last-burnt) grant priority.
pub const PRIORITY_MAX: u8 = 100;

/// Default grant priority.
pub const PRIORITY_DEFAULT: u8 = 50;

/// Most grants a quota holds open at once.
pub const OPEN_GRANTS_MAX: usize = 1_000;

/// A quota of one type for one holder, with its grants.
///
/// New fields have no serde default on purpose: a snapshot taken before them
/// fails to deserialize and is replayed from events instead of restoring a
/// state with wrong totals.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Set by the first grant.
    pub quota: Option<QuotaType>,
    /// The holder, set by the first grant: `None` for the tenant's own.
    pub account: Option<QuotaAccount>,
    /// Every grant, in issue order.
    pub grants: Vec<Grant>,
    /// Seats allocated that no open grant has room for (over-allocation).
    pub unbacked: Amount,
    /// Totals of every journal account this quota posts to (it alone does).
    pub balances: Balances,
}

/// A decision in progress: the state with the events decided so far applied,
/// and those events. Every entry is posted to the working balances as it is
/// recorded, so the decision refuses what verify and replay would refuse.
struct Decision {
    state: Quota,
    events: Vec<QuotaEvent>,
}

impl Decision {
    fn new(quota: &Quota) -> Self {
        Self {
            state: quota.clone(),
            events: Vec::new(),
        }
    }

    fn record(&mut self, event: QuotaEvent) -> Result<(), QuotaError> {
        if let Some(entry) = event.entry() {
            self.state.balances.post(entry)?;
        }
        self.state.fold(event.clone());
        self.events.push(event);
        Ok(())
    }

    fn holder(&self) -> Option<&QuotaAccount> {
        self.state.account.as_ref()
    }
}

impl Quota {
    pub fn grant(&self, grant_id: GrantId) -> Option<&Grant> {
        self.grants
            .iter()
            .find(|grant| grant.terms.grant_id == grant_id)
    }

    /// Units consumed on the subscription grants of the period from
    /// `period_start` to `period_end` (in effect from its start or later,
    /// expiring at its end): whichever plan issued them and whether or not
    /// a plan change revoked them since. What the period has used of its
    /// allowance; zero for seats, a gauge whose allocations move from grant
    /// to grant. Past 2^63-1, 2^63-1.
    pub fn consumed_in_period(
        &self,
        period_start: DateTime<Utc>,
        period_end: DateTime<Utc>,
    ) -> Amount {
        if self.quota == Some(QuotaType::Seats) {
            return Amount::ZERO;
        }
        let consumed: i128 = self
            .grants
            .iter()
            .filter(|grant| {
                grant.terms.source == GrantSource::Subscription
                    && grant.terms.effective_at >= period_start
                    && grant.terms.expires_at == Some(period_end)
            })
            .map(|grant| i128::from(grant.used.value()))
            .sum();
        Amount::new(i64::try_from(consumed).unwrap_or(i64::MAX)).unwrap_or(Amount::ZERO)
    }

    fn check_quota(&self, requested: QuotaType) -> Result<(), QuotaError> {
        match self.quota {
            Some(expected) if expected != requested => Err(QuotaError::WrongQuota {
                expected,
                requested,
            }),
            _ => Ok(()),
        }
    }

    fn grant_mut(&mut self, grant_id: GrantId) -> Option<&mut Grant> {
        self.grants
            .iter_mut()
            .find(|grant| grant.terms.grant_id == grant_id)
    }

    /// Adds (or with `release`, takes) each allocation to its grant's `used`.
    /// Decisions check these sums, so the fallbacks are never taken.
    fn use_allocations(&mut self, allocations: &[Allocation], release: bool) {
        for allocation in allocations {
            if let Some(grant) = self.grant_mut(allocation.grant_id) {
                grant.used = if release {
                    grant
                        .used
                        .checked_sub(allocation.amount)
                        .unwrap_or(Amount::ZERO)
                } else {
                    grant
                        .used
                        .checked_add(allocation.amount)
                        .unwrap_or(grant.used)
                };
            }
        }
    }

    /// Folds an event into the grants (everything but the journal totals).
    fn fold(&mut self, event: QuotaEvent) {
        match event {
            QuotaEvent::GrantIssued {
                quota,
                account,
                terms,
                ..
            } => {
                if self.grants.is_empty() {
                    self.account = account;
                }
                self.quota = Some(quota);
                self.grants.push(Grant {
                    terms,
                    used: Amount::ZERO,
                    status: GrantStatus::Active,
                });
            }
            QuotaEvent::GrantRevoked { grant_id, .. } => {
                if let Some(grant) = self.grant_mut(grant_id) {
                    grant.status = GrantStatus::Revoked;
                }
            }
            QuotaEvent::GrantExpired { grant_id, .. } => {
                if let Some(grant) = self.grant_mut(grant_id) {
                    grant.status = GrantStatus::Expired;
                }
            }
            QuotaEvent::QuotaConsumed { allocations, .. }
            | QuotaEvent::SeatsAllocated { allocations, .. } => {
                self.use_allocations(&allocations, false);
            }
            QuotaEvent::SeatsReleased {
                allocations,
                unbacked,
                ..
            } => {
                self.use_allocations(&allocations, true);
                self.unbacked = self.unbacked.checked_sub(unbacked).unwrap_or(Amount::ZERO);
            }
            QuotaEvent::SeatsMoved {
                from,
                amount,
                allocations,
                unbacked,
                ..
            } => {
                match from {
                    Some(grant_id) => {
                        self.use_allocations(&[Allocation { grant_id, amount }], true)
                    }
                    None => {
                        self.unbacked = self.unbacked.checked_sub(amount).unwrap_or(Amount::ZERO)
                    }
                }
                self.use_allocations(&allocations, false);
                self.unbacked = self.unbacked.checked_add(unbacked).unwrap_or(self.unbacked);
            }
        }
    }
}

impl Aggregate for Quota {
    const TYPE: &'static str = QUOTA_AGGREGATE;
    type Command = QuotaCommand;
    type Event = QuotaEvent;
    type Error = QuotaError;
    type Services = ();

    async fn handle(
        &mut self,
        command: QuotaCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), QuotaError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: QuotaEvent) {
        if let Some(entry) = event.entry() {
            // Decisions post every entry before recording it, so a stored
            // entry is accepted here; one that is not (a history the domain
            // never decided) is what verify and replay report.
            let _ = self.balances.post(entry);
        }
        self.fold(event);
    }
}

impl Decide for Quota {
    fn journal_entry(event: &QuotaEvent) -> Option<&JournalEntry> {
        event.entry()
    }

    fn journal_reference(event: &QuotaEvent) -> Option<&str> {
        match event {
            QuotaEvent::QuotaConsumed { reference, .. } => reference.as_deref(),
            _ => None,
        }
    }

    fn decide(&self, command: QuotaCommand) -> Result<Vec<QuotaEvent>, QuotaError> {
        match command {
            QuotaCommand::IssueGrant {
                quota,
                account,
                terms,
                at,
            } => self.decide_issue(quota, account, terms, at),
            QuotaCommand::RevokeGrant { grant_id, at } => self.decide_revoke(grant_id, at),
            QuotaCommand::EndSubscriptionGrants { quota, ending, at } => {
                self.decide_end_subscription_grants(quota, ending, at)
            }
            QuotaCommand::ExpireGrants { quota, at } => {
                self.check_quota(quota)?;
                let mut decision = Decision::new(self);
                decision.expire_due(quota, at, &[])?;
                Ok(decision.events)
            }
            QuotaCommand::Consume {
                quota,
                amount,
                reference,
                at,
            } => self.decide_consume(quota, amount, reference, at),
            QuotaCommand::AllocateSeats { amount, at } => self.decide_allocate(amount, at),
            QuotaCommand::ReleaseSeats { amount, at } => self.decide_release(amount, at),
        }
    }
}
