//! Commands of a quota.

use super::{GrantTerms, QuotaAccount, QuotaType};
use crate::ids::GrantId;
use crate::money::Amount;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// What a subscription-grant ending records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Ending {
    /// The plan changed or the subscription was cancelled.
    Revoked,
    /// The period ended.
    Expired,
}

/// Commands of a quota. Every command carries its time, stamped by the
/// pipeline.
#[derive(Debug, Clone, PartialEq)]
pub enum QuotaCommand {
    IssueGrant {
        quota: QuotaType,
        /// The holder: `None` for the tenant's own quota. Names the quota's
        /// journal accounts; must match the holder of its earlier grants.
        account: Option<QuotaAccount>,
        terms: GrantTerms,
        at: DateTime<Utc>,
    },
    RevokeGrant {
        grant_id: GrantId,
        at: DateTime<Utc>,
    },
    /// Ends every open subscription grant (plan change, cancellation, renewal).
    EndSubscriptionGrants {
        quota: QuotaType,
        ending: Ending,
        at: DateTime<Utc>,
    },
    /// Expires the grants past their expiry at `at`.
    ExpireGrants {
        quota: QuotaType,
        at: DateTime<Utc>,
    },
    Consume {
        quota: QuotaType,
        amount: Amount,
        reference: Option<String>,
        at: DateTime<Utc>,
    },
    AllocateSeats {
        amount: Amount,
        at: DateTime<Utc>,
    },
    ReleaseSeats {
        amount: Amount,
        at: DateTime<Utc>,
    },
}
