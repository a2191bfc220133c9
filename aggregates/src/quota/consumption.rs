//! Consuming runs and credits.

use super::{
    consumed_account, Decision, Quota, QuotaError, QuotaEvent, QuotaType, REFERENCE_LENGTH_MAX,
};
use crate::journal::{JournalEntry, Posting};
use crate::money::Amount;
use chrono::{DateTime, Utc};

impl Quota {
    pub(super) fn decide_consume(
        &self,
        quota: QuotaType,
        amount: Amount,
        reference: Option<String>,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(quota)?;
        if !quota.is_consumable() {
            return Err(QuotaError::SeatsAreNotConsumed);
        }
        if amount.is_zero() {
            return Err(QuotaError::AmountNotPositive);
        }
        if let Some(reference) = &reference {
            crate::text::check_storable(reference, REFERENCE_LENGTH_MAX)
                .map_err(QuotaError::InvalidReference)?;
        }
        let mut decision = Decision::new(self);
        decision.expire_due(quota, at, &[])?;
        let draws = decision.state.draw(quota, amount, at)?;
        let mut postings: Vec<Posting> = draws
            .iter()
            .map(|(allocation, account)| {
                Posting::debit(account.clone(), quota.asset(), allocation.amount)
            })
            .collect();
        postings.push(Posting::credit(
            consumed_account(quota, decision.holder()),
            quota.asset(),
            amount,
        ));
        decision.record(QuotaEvent::QuotaConsumed {
            amount,
            reference,
            allocations: draws
                .into_iter()
                .map(|(allocation, _)| allocation)
                .collect(),
            entry: JournalEntry::new(postings)?,
        })?;
        Ok(decision.events)
    }
}
