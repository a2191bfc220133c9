//! Seats, a gauge: allocation, release, moves off closing grants, and the
//! unbacked (over-allocated) seats.

use super::{
    allocated_account, unbacked_account, Allocation, BurnOrder, Decision, Grant, GrantStatus,
    Quota, QuotaError, QuotaEvent, QuotaType,
};
use crate::ids::GrantId;
use crate::journal::{JournalEntry, Posting};
use crate::money::Amount;
use chrono::{DateTime, Utc};

impl Decision {
    /// Moves `amount` allocated seats from grant `from` (or from the unbacked
    /// seats) onto usable grants with room, in burn-down order. Seats off a
    /// grant that no grant has room for become unbacked; unbacked seats only
    /// move as far as there is room.
    pub(super) fn move_seats(
        &mut self,
        from: Option<GrantId>,
        amount: Amount,
        excluded: &[GrantId],
        at: DateTime<Utc>,
    ) -> Result<(), QuotaError> {
        let asset = QuotaType::Seats.asset();
        let mut left = amount;
        let mut allocations = Vec::new();
        let mut postings = Vec::new();
        for grant in self.state.usable(at) {
            if left.is_zero() {
                break;
            }
            let grant_id = grant.terms.grant_id;
            if Some(grant_id) == from || excluded.contains(&grant_id) {
                continue;
            }
            let take = grant.remaining().map_or(left, |room| room.min(left));
            if take.is_zero() {
                continue;
            }
            grant.used.checked_add(take)?;
            postings.push(Posting::debit(grant.account(), asset.clone(), take));
            allocations.push(Allocation {
                grant_id,
                amount: take,
            });
            left = left.checked_sub(take)?;
        }
        let (moved, unbacked) = match from {
            Some(_) => (amount, left),
            None => (amount.checked_sub(left)?, Amount::ZERO),
        };
        if moved.is_zero() {
            return Ok(());
        }
        if !unbacked.is_zero() {
            postings.push(Posting::debit(
                unbacked_account(self.holder()),
                asset.clone(),
                unbacked,
            ));
        }
        let source = match from {
            Some(grant_id) => self
                .state
                .grant(grant_id)
                .ok_or(QuotaError::UnknownGrant(grant_id))?
                .account(),
            None => unbacked_account(self.holder()),
        };
        postings.push(Posting::credit(source, asset, moved));
        self.record(QuotaEvent::SeatsMoved {
            from,
            amount: moved,
            allocations,
            unbacked,
            entry: JournalEntry::new(postings)?,
        })
    }

    /// Unbacked seats move onto usable grants that have room.
    pub(super) fn absorb_unbacked(&mut self, at: DateTime<Utc>) -> Result<(), QuotaError> {
        let unbacked = self.state.unbacked;
        if unbacked.is_zero() {
            return Ok(());
        }
        self.move_seats(None, unbacked, &[], at)
    }
}

impl Quota {
    /// Seats allocated now: on open grants, and unbacked.
    pub fn allocated(&self) -> Result<Amount, QuotaError> {
        self.grants
            .iter()
            .filter(|grant| grant.status == GrantStatus::Active)
            .try_fold(self.unbacked, |total, grant| total.checked_add(grant.used))
            .map_err(QuotaError::from)
    }

    pub(super) fn decide_allocate(
        &self,
        amount: Amount,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(QuotaType::Seats)?;
        if amount.is_zero() {
            return Err(QuotaError::AmountNotPositive);
        }
        let mut decision = Decision::new(self);
        decision.expire_due(QuotaType::Seats, at, &[])?;
        // Grants that came into effect since take unbacked seats first; any
        // still unbacked leave no room, so nothing is allocated.
        decision.absorb_unbacked(at)?;
        if !decision.state.unbacked.is_zero() {
            return Err(QuotaError::QuotaExceeded {
                quota: QuotaType::Seats,
                requested: amount.value(),
                available: 0,
            });
        }
        let draws = decision.state.draw(QuotaType::Seats, amount, at)?;
        let mut postings: Vec<Posting> = draws
            .iter()
            .map(|(allocation, account)| {
                Posting::debit(account.clone(), QuotaType::Seats.asset(), allocation.amount)
            })
            .collect();
        postings.push(Posting::credit(
            allocated_account(decision.holder()),
            QuotaType::Seats.asset(),
            amount,
        ));
        decision.record(QuotaEvent::SeatsAllocated {
            amount,
            allocations: draws
                .into_iter()
                .map(|(allocation, _)| allocation)
                .collect(),
            entry: JournalEntry::new(postings)?,
        })?;
        Ok(decision.events)
    }

    pub(super) fn decide_release(
        &self,
        amount: Amount,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(QuotaType::Seats)?;
        if amount.is_zero() {
            return Err(QuotaError::AmountNotPositive);
        }
        let allocated = self.allocated()?;
        if amount > allocated {
            return Err(QuotaError::ReleaseExceedsAllocated {
                requested: amount.value(),
                allocated: allocated.value(),
            });
        }
        let mut decision = Decision::new(self);
        decision.expire_due(QuotaType::Seats, at, &[])?;
        let asset = QuotaType::Seats.asset();
        let holder = decision.holder().cloned();
        // Unbacked seats go first (they are the over-allocation), then seats
        // return to the grants burnt last first.
        let unbacked = decision.state.unbacked.min(amount);
        let mut left = amount.checked_sub(unbacked)?;
        let mut postings = vec![Posting::debit(
            allocated_account(holder.as_ref()),
            asset.clone(),
            amount,
        )];
        if !unbacked.is_zero() {
            postings.push(Posting::credit(
                unbacked_account(holder.as_ref()),
                asset.clone(),
                unbacked,
            ));
        }
        let mut holders: Vec<(BurnOrder, &Grant)> = decision
            .state
            .grants
            .iter()
            .enumerate()
            .filter(|(_, grant)| grant.status == GrantStatus::Active && !grant.used.is_zero())
            .map(|(issue, grant)| (grant.burn_order(issue), grant))
            .collect();
        holders.sort_by_key(|(order, _)| std::cmp::Reverse(*order));
        let mut allocations = Vec::new();
        for (_, grant) in holders {
            if left.is_zero() {
                break;
            }
            let take = grant.used.min(left);
            allocations.push(Allocation {
                grant_id: grant.terms.grant_id,
                amount: take,
            });
            postings.push(Posting::credit(grant.account(), asset.clone(), take));
            left = left.checked_sub(take)?;
        }
        if !left.is_zero() {
            // Moves keep the allocated total, so this cannot happen.
            return Err(QuotaError::ReleaseExceedsAllocated {
                requested: amount.value(),
                allocated: allocated.value(),
            });
        }
        decision.record(QuotaEvent::SeatsReleased {
            amount,
            allocations,
            unbacked,
            entry: JournalEntry::new(postings)?,
        })?;
        Ok(decision.events)
    }
}
