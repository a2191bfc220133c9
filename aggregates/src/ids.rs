//! Newtypes for identifiers. Parsed at the edge; never passed around as bare
//! strings or uuids.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;
use uuid::Uuid;

/// A uuid newtype: time-ordered when generated, shown and parsed as the
/// uuid's text.
macro_rules! uuid_id {
    ($(#[$meta:meta])* $name:ident) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new, time-ordered id.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            /// Wraps an existing uuid (read from storage, a path, a verified
            /// key or a notification).
            pub const fn from_uuid(uuid: Uuid) -> Self {
                Self(uuid)
            }

            /// The underlying uuid.
            pub const fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;

            fn from_str(text: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(text).map(Self)
            }
        }
    };
}

uuid_id!(
    /// One business using the ledger. Every event, record and read row
    /// carries it.
    TenantId
);

uuid_id!(
    /// A grant of quota.
    GrantId
);

uuid_id!(
    /// The stable, non-secret identifier of a tenant's API key.
    KeyId
);

uuid_id!(
    /// A journal entry.
    EntryId
);

uuid_id!(
    /// A hold: a pending transfer that resolves at most once.
    HoldId
);

uuid_id!(
    /// A payment (its intent).
    PaymentId
);

uuid_id!(
    /// One tender of a payment.
    TenderId
);

uuid_id!(
    /// One capture of a tender.
    CaptureId
);

uuid_id!(
    /// One refund of a payment.
    RefundId
);

uuid_id!(
    /// One dispute of a capture.
    DisputeId
);

uuid_id!(
    /// A commitment (a secured settlement between a payer and a payee).
    CommitmentId
);

uuid_id!(
    /// One deposit into a commitment.
    DepositId
);

uuid_id!(
    /// One release to the payee, or refund to the payer, of a commitment.
    TransferId
);

uuid_id!(
    /// One claim freezing part of a milestone.
    ClaimId
);

uuid_id!(
    /// One line of a payee's compensation ledger.
    LineId
);

uuid_id!(
    /// One pay run.
    PayRunId
);
