//! Events of a quota, each with the journal entry it posts.

use super::{GrantTerms, QuotaAccount, QuotaType};
use crate::ids::GrantId;
use crate::journal::JournalEntry;
use crate::money::Amount;
use chrono::{DateTime, Utc};
use cqrs_es::DomainEvent;
use serde::{Deserialize, Serialize};

fn is_zero(amount: &Amount) -> bool {
    amount.is_zero()
}

/// Part of a consumption or allocation drawn from one grant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Allocation {
    pub grant_id: GrantId,
    pub amount: Amount,
}

/// Events of a quota. Each movement of units carries its balanced journal
/// entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum QuotaEvent {
    GrantIssued {
        quota: QuotaType,
        /// The holder (a quota account); absent for the tenant's own quota.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        account: Option<QuotaAccount>,
        terms: GrantTerms,
        /// `None` for an unlimited grant (no finite amount to post).
        entry: Option<JournalEntry>,
    },
    GrantRevoked {
        grant_id: GrantId,
        revoked_at: DateTime<Utc>,
        breakage: Amount,
        entry: Option<JournalEntry>,
    },
    GrantExpired {
        grant_id: GrantId,
        expired_at: DateTime<Utc>,
        breakage: Amount,
        entry: Option<JournalEntry>,
    },
    QuotaConsumed {
        amount: Amount,
        reference: Option<String>,
        allocations: Vec<Allocation>,
        entry: JournalEntry,
    },
    SeatsAllocated {
        amount: Amount,
        allocations: Vec<Allocation>,
        entry: JournalEntry,
    },
    SeatsReleased {
        amount: Amount,
        /// Released from grants.
        allocations: Vec<Allocation>,
        /// Released from the unbacked (over-allocated) seats, first.
        #[serde(default, skip_serializing_if = "is_zero")]
        unbacked: Amount,
        entry: JournalEntry,
    },
    /// Allocated seats moved: off a grant about to close (`from`), or from
    /// the unbacked seats (`from` absent) onto grants with room.
    SeatsMoved {
        from: Option<GrantId>,
        amount: Amount,
        /// The grants that took them, in burn-down order.
        allocations: Vec<Allocation>,
        /// The part no open grant had room for: over-allocated from now on.
        unbacked: Amount,
        entry: JournalEntry,
    },
}

impl QuotaEvent {
    /// The journal entry the event posts, if any.
    pub fn entry(&self) -> Option<&JournalEntry> {
        match self {
            Self::GrantIssued { entry, .. }
            | Self::GrantRevoked { entry, .. }
            | Self::GrantExpired { entry, .. } => entry.as_ref(),
            Self::QuotaConsumed { entry, .. }
            | Self::SeatsAllocated { entry, .. }
            | Self::SeatsReleased { entry, .. }
            | Self::SeatsMoved { entry, .. } => Some(entry),
        }
    }
}

impl DomainEvent for QuotaEvent {
    fn event_type(&self) -> String {
        match self {
            Self::GrantIssued { .. } => "GrantIssued",
            Self::GrantRevoked { .. } => "GrantRevoked",
            Self::GrantExpired { .. } => "GrantExpired",
            Self::QuotaConsumed { .. } => "QuotaConsumed",
            Self::SeatsAllocated { .. } => "SeatsAllocated",
            Self::SeatsReleased { .. } => "SeatsReleased",
            Self::SeatsMoved { .. } => "SeatsMoved",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}
