//! The journal accounts a commitment's money moves on: fixed codes, each
//! with the type and flags it is opened with (by the first request that
//! posts to it).

use crate::journal::account::{AccountSpec, InvalidAccountCode};
use crate::journal::AccountType;
pub use crate::payments::accounts::PaymentAccount as EscrowAccount;

fn account(code: String, spec: AccountSpec) -> Result<EscrowAccount, InvalidAccountCode> {
    Ok(EscrowAccount {
        code: crate::journal::account::AccountCode::parse(&code)?,
        spec,
    })
}

/// The cash every commitment's deposits are held in.
pub fn escrow_cash() -> EscrowAccount {
    EscrowAccount {
        code: crate::journal::account::AccountCode::parse("escrow_cash")
            .unwrap_or_else(|_| unreachable!("escrow_cash is a valid code")),
        spec: AccountSpec::new(AccountType::Asset),
    }
}

/// What commitment `commitment` holds for its parties: never below zero
/// (a claim's hold counts against it).
pub fn held(commitment: &str) -> Result<EscrowAccount, InvalidAccountCode> {
    account(
        format!("escrow_held:{commitment}"),
        AccountSpec::new(AccountType::Liability).debits_must_not_exceed_credits(),
    )
}

/// What is owed to payee `payee`, released.
pub fn payee_payable(payee: &str) -> Result<EscrowAccount, InvalidAccountCode> {
    account(
        format!("payee_payable:{payee}"),
        AccountSpec::new(AccountType::Liability),
    )
}

/// What is owed back to payer `payer`, refunded.
pub fn payer_refunds(payer: &str) -> Result<EscrowAccount, InvalidAccountCode> {
    account(
        format!("payer_refunds:{payer}"),
        AccountSpec::new(AccountType::Liability),
    )
}
