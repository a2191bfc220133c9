//! Issuing grants, revoking them, and ending a subscription's grants.

use super::{
    grant_account, holder_name, issued_account, Decision, Ending, GrantSource, GrantStatus,
    GrantTerms, Quota, QuotaAccount, QuotaError, QuotaEvent, QuotaType, OPEN_GRANTS_MAX,
    PRIORITY_MAX,
};
use crate::ids::GrantId;
use crate::journal::JournalEntry;
use crate::money::Amount;
use chrono::{DateTime, Utc};

impl Quota {
    /// Units the open finite grants can still give: what they have left, or
    /// for seats (which come back when released) their whole amounts. Kept
    /// within 64 bits so that `available` never overflows.
    pub(super) fn open_units(&self, quota: QuotaType) -> Result<Amount, QuotaError> {
        let mut total = Amount::ZERO;
        for grant in &self.grants {
            if grant.status != GrantStatus::Active {
                continue;
            }
            let units = if quota == QuotaType::Seats {
                grant.terms.amount
            } else {
                grant.remaining()
            };
            if let Some(units) = units {
                total = total.checked_add(units)?;
            }
        }
        Ok(total)
    }

    pub(super) fn decide_issue(
        &self,
        quota: QuotaType,
        account: Option<QuotaAccount>,
        terms: GrantTerms,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(quota)?;
        if self.quota.is_some() && self.account != account {
            return Err(QuotaError::WrongHolder {
                expected: holder_name(self.account.as_ref()),
                requested: holder_name(account.as_ref()),
            });
        }
        if terms.priority > PRIORITY_MAX {
            return Err(QuotaError::InvalidPriority);
        }
        if terms.amount.is_some_and(Amount::is_zero) {
            return Err(QuotaError::AmountNotPositive);
        }
        crate::time::check("effective_at", terms.effective_at)?;
        if let Some(expires) = terms.expires_at {
            crate::time::check("expires_at", expires)?;
            if expires <= terms.effective_at {
                return Err(QuotaError::ExpiryBeforeEffect);
            }
            if expires <= at {
                return Err(QuotaError::ExpiryInThePast);
            }
        }
        if self.grant(terms.grant_id).is_some() {
            return Err(QuotaError::GrantExists(terms.grant_id));
        }
        let mut decision = Decision::new(self);
        decision.expire_due(quota, at, &[])?;
        let open = decision
            .state
            .grants
            .iter()
            .filter(|grant| grant.status == GrantStatus::Active)
            .count();
        if open >= OPEN_GRANTS_MAX {
            return Err(QuotaError::TooManyGrants);
        }
        let entry = match terms.amount {
            Some(amount) => {
                decision.state.open_units(quota)?.checked_add(amount)?;
                Some(JournalEntry::transfer(
                    issued_account(quota, account.as_ref()),
                    grant_account(&terms),
                    &quota.asset(),
                    amount,
                )?)
            }
            None => None,
        };
        decision.record(QuotaEvent::GrantIssued {
            quota,
            account,
            terms,
            entry,
        })?;
        if quota == QuotaType::Seats {
            decision.absorb_unbacked(at)?;
        }
        Ok(decision.events)
    }

    pub(super) fn decide_revoke(
        &self,
        grant_id: GrantId,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        let grant = self
            .grant(grant_id)
            .ok_or(QuotaError::UnknownGrant(grant_id))?;
        if grant.terms.source == GrantSource::Subscription {
            return Err(QuotaError::SubscriptionGrant(grant_id));
        }
        // A grant exists, so the quota type is known.
        let quota = self.quota.unwrap_or(QuotaType::Credits);
        let mut decision = Decision::new(self);
        decision.expire_due(quota, at, &[grant_id])?;
        let status = decision
            .state
            .grant(grant_id)
            .map_or(GrantStatus::Active, |grant| grant.status);
        if status != GrantStatus::Active {
            return Err(QuotaError::GrantClosed {
                grant_id,
                status: status.as_str(),
            });
        }
        decision.close(quota, grant_id, &[], Ending::Revoked, at)?;
        Ok(decision.events)
    }

    pub(super) fn decide_end_subscription_grants(
        &self,
        quota: QuotaType,
        ending: Ending,
        at: DateTime<Utc>,
    ) -> Result<Vec<QuotaEvent>, QuotaError> {
        self.check_quota(quota)?;
        let subscription: Vec<GrantId> = self
            .grants
            .iter()
            .filter(|grant| {
                grant.status == GrantStatus::Active
                    && grant.terms.source == GrantSource::Subscription
            })
            .map(|grant| grant.terms.grant_id)
            .collect();
        let mut decision = Decision::new(self);
        decision.expire_due(quota, at, &subscription)?;
        for grant_id in &subscription {
            let still_open = decision
                .state
                .grant(*grant_id)
                .is_some_and(|grant| grant.status == GrantStatus::Active);
            if still_open {
                decision.close(quota, *grant_id, &subscription, ending, at)?;
            }
        }
        Ok(decision.events)
    }
}
