//! The burn-down order of usable grants and draws along it.

use super::{Allocation, Available, Grant, GrantSource, GrantStatus, Quota, QuotaError, QuotaType};
use crate::ids::GrantId;
use crate::journal::lots::{self, DrawError, Lot, LotOrder};
use crate::journal::Account;
use crate::money::Amount;
use chrono::{DateTime, Utc};

/// Sort key of the burn-down order: priority, expiry (none last), promotional
/// before paid, issue order, id.
pub(super) type BurnOrder = (u8, bool, Option<DateTime<Utc>>, bool, usize, GrantId);

impl Grant {
    /// Sort key of the burn-down order; `issue` is the grant's place in
    /// issue order (its index in [`Quota::grants`]).
    pub(super) fn burn_order(&self, issue: usize) -> BurnOrder {
        (
            self.terms.priority,
            self.terms.expires_at.is_none(),
            self.terms.expires_at,
            self.terms.source != GrantSource::Promocode,
            issue,
            self.terms.grant_id,
        )
    }
}

impl Quota {
    /// Usable grants at `at`, in burn-down order.
    pub(super) fn usable(&self, at: DateTime<Utc>) -> Vec<&Grant> {
        let mut usable: Vec<(BurnOrder, &Grant)> = self
            .grants
            .iter()
            .enumerate()
            .filter(|(_, grant)| grant.usable_at(at))
            .map(|(issue, grant)| (grant.burn_order(issue), grant))
            .collect();
        usable.sort_by_key(|(order, _)| *order);
        usable.into_iter().map(|(_, grant)| grant).collect()
    }

    /// What can be drawn at `at`. Unbacked seats use up room first, and so
    /// do seats still on a grant past its expiry that the scheduler has not
    /// expired yet: the next decision moves them off it before anything
    /// else (what answers and reads show agrees with what it decides).
    pub fn available(&self, at: DateTime<Utc>) -> Result<Available, QuotaError> {
        let mut total = Amount::ZERO;
        for grant in self.usable(at) {
            match grant.remaining() {
                None => return Ok(Available::Unlimited),
                Some(remaining) => total = total.checked_add(remaining)?,
            }
        }
        let mut unbacked = i128::from(self.unbacked.value());
        if self.quota == Some(QuotaType::Seats) {
            unbacked += self
                .grants
                .iter()
                .filter(|grant| grant.status == GrantStatus::Active && !grant.usable_at(at))
                .map(|grant| i128::from(grant.used.value()))
                .sum::<i128>();
        }
        let left = (i128::from(total.value()) - unbacked).max(0);
        Ok(Available::Units(Amount::new(
            i64::try_from(left).unwrap_or(i64::MAX),
        )?))
    }

    /// Draws `amount` from the usable grants in burn-down order (the
    /// journal's lots allocator, in the order given).
    pub(super) fn draw(
        &self,
        quota: QuotaType,
        amount: Amount,
        at: DateTime<Utc>,
    ) -> Result<Vec<(Allocation, Account)>, QuotaError> {
        let usable = self.usable(at);
        let lots: Vec<Lot<usize>> = usable
            .iter()
            .enumerate()
            .map(|(place, grant)| Lot {
                id: place,
                opened: place as u64,
                available: grant.remaining(),
            })
            .collect();
        let draws = lots::draw(&lots, amount, LotOrder::Given).map_err(|error| match error {
            DrawError::Insufficient {
                requested,
                available,
            } => QuotaError::QuotaExceeded {
                quota,
                requested,
                available,
            },
            DrawError::Amount(error) => QuotaError::from(error),
        })?;
        draws
            .into_iter()
            .map(|draw| {
                let grant = usable[draw.lot];
                // An unlimited grant still counts what it gave, within 64 bits.
                grant.used.checked_add(draw.amount)?;
                Ok((
                    Allocation {
                        grant_id: grant.terms.grant_id,
                        amount: draw.amount,
                    },
                    grant.account(),
                ))
            })
            .collect()
    }
}
