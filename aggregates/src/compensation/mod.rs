//! Compensation (payroll-grade): payout plans in immutable versions,
//! role templates, payees assigned to plans from a date, the immutable
//! compensation ledger of each payee (time, units and commission lines
//! valued once by the version in effect when the work was done, clawbacks,
//! adjustments), and pay runs that claim payable lines, are approved and
//! paid, carrying a negative net forward.

pub mod accounts;
mod corrections;
mod errors;
pub mod ledger;
mod payee;
mod payee_decide;
pub mod plan;
pub mod rules;
pub mod run;

#[cfg(test)]
mod tests;

pub use errors::CompensationError;
pub use ledger::{Line, LineKind, LineStatus, Work};
pub use payee::{Assignment, Payee, PayeeCommand, PayeeEvent, Profile, RunShare, PAYEE_AGGREGATE};
pub use plan::{Directory, Plan, PlanCommand, PlanEvent, Role, RoleCommand, RoleEvent};
pub use rules::{PlanInEffect, PlanVersion, Rule};
pub use run::{PayRun, PayRunCommand, PayRunEvent, RunPayee, RunStatus, RunTerms};
