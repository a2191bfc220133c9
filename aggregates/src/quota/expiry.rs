//! Closing grants: the ones past their expiry at a command's time, and the
//! close every ending shares (seats moved off first, the unused balance
//! posted as breakage).

use super::{breakage_account, Decision, Ending, GrantStatus, QuotaError, QuotaEvent, QuotaType};
use crate::ids::GrantId;
use crate::journal::JournalEntry;
use crate::money::Amount;
use chrono::{DateTime, Utc};

impl Decision {
    /// Expires the grants past their expiry at `at`. Seats on them move to
    /// grants with room that are not in `closing`.
    pub(super) fn expire_due(
        &mut self,
        quota: QuotaType,
        at: DateTime<Utc>,
        closing: &[GrantId],
    ) -> Result<(), QuotaError> {
        let due: Vec<GrantId> = self
            .state
            .grants
            .iter()
            .filter(|grant| {
                grant.status == GrantStatus::Active
                    && grant.terms.expires_at.is_some_and(|expires| expires <= at)
            })
            .map(|grant| grant.terms.grant_id)
            .collect();
        let mut excluded = due.clone();
        excluded.extend_from_slice(closing);
        for grant_id in due {
            self.close(quota, grant_id, &excluded, Ending::Expired, at)?;
        }
        Ok(())
    }

    /// Closes one active grant at `at`: its allocated seats move first (to
    /// grants not in `excluded`, usable at `at`), then its unused balance is
    /// posted as breakage. An expired grant is closed as of its expiry
    /// (never later than `at`), whichever later command finds it due.
    pub(super) fn close(
        &mut self,
        quota: QuotaType,
        grant_id: GrantId,
        excluded: &[GrantId],
        ending: Ending,
        at: DateTime<Utc>,
    ) -> Result<(), QuotaError> {
        let used = self
            .state
            .grant(grant_id)
            .ok_or(QuotaError::UnknownGrant(grant_id))?
            .used;
        if quota == QuotaType::Seats && !used.is_zero() {
            self.move_seats(Some(grant_id), used, excluded, at)?;
        }
        let grant = self
            .state
            .grant(grant_id)
            .ok_or(QuotaError::UnknownGrant(grant_id))?;
        let breakage = grant.remaining().unwrap_or(Amount::ZERO);
        let expires_at = grant.terms.expires_at;
        let entry = if breakage.is_zero() {
            None
        } else {
            Some(JournalEntry::transfer(
                grant.account(),
                breakage_account(quota, self.holder()),
                &quota.asset(),
                breakage,
            )?)
        };
        self.record(match ending {
            Ending::Revoked => QuotaEvent::GrantRevoked {
                grant_id,
                revoked_at: at,
                breakage,
                entry,
            },
            Ending::Expired => QuotaEvent::GrantExpired {
                grant_id,
                expired_at: expires_at.map_or(at, |expires_at| expires_at.min(at)),
                breakage,
                entry,
            },
        })
    }
}
