//! The journal accounts compensation posts to, each with the type it is
//! opened with (by the first request that posts to it).

use crate::journal::account::{AccountCode, AccountSpec, InvalidAccountCode};
use crate::journal::AccountType;
pub use crate::payments::accounts::PaymentAccount as CompensationAccount;

/// What compensation costs: every accrued line.
pub fn expense() -> CompensationAccount {
    CompensationAccount {
        code: AccountCode::parse("compensation_expense")
            .unwrap_or_else(|_| unreachable!("compensation_expense is a valid code")),
        spec: AccountSpec::new(AccountType::Expense),
    }
}

/// What is owed to payee `payee`: accrued, not yet paid (in debit when
/// clawbacks exceed what is owed).
pub fn payable(payee: &str) -> Result<CompensationAccount, InvalidAccountCode> {
    Ok(CompensationAccount {
        code: AccountCode::parse(&format!("compensation_payable:{payee}"))?,
        spec: AccountSpec::new(AccountType::Liability),
    })
}

/// The bank account pay runs pay from (`bank:payroll`).
pub fn payroll_bank() -> CompensationAccount {
    crate::payments::accounts::bank("payroll")
        .unwrap_or_else(|_| unreachable!("bank:payroll is a valid code"))
}
