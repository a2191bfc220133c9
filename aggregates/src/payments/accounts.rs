//! The journal accounts payments post to: fixed codes, so finance and
//! tests can read them, each with the type and flags it is opened with (by
//! the first request that posts to it).

use crate::journal::account::{AccountCode, AccountSpec, InvalidAccountCode};
use crate::journal::AccountType;

/// An account payments post to: its code and how it is opened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentAccount {
    pub code: AccountCode,
    pub spec: AccountSpec,
}

fn account(code: String, spec: AccountSpec) -> Result<PaymentAccount, InvalidAccountCode> {
    Ok(PaymentAccount {
        code: AccountCode::parse(&code)?,
        spec,
    })
}

/// What processor `processor` owes for captures not yet settled.
pub fn receivable(processor: &str) -> Result<PaymentAccount, InvalidAccountCode> {
    account(
        format!("receivable:{processor}"),
        AccountSpec::new(AccountType::Asset),
    )
}

/// Sales.
pub fn revenue() -> PaymentAccount {
    fixed("revenue", AccountSpec::new(AccountType::Revenue))
}

/// Refunds given (a contra-revenue account, debited).
pub fn refunds() -> PaymentAccount {
    fixed("refunds", AccountSpec::new(AccountType::Revenue))
}

/// Cash taken.
pub fn cash() -> PaymentAccount {
    fixed("cash", AccountSpec::new(AccountType::Asset))
}

/// What gift card `code` still holds for its bearer: never below zero.
pub fn gift_card(code: &str) -> Result<PaymentAccount, InvalidAccountCode> {
    account(
        format!("gift_cards:{code}"),
        AccountSpec::new(AccountType::Liability).debits_must_not_exceed_credits(),
    )
}

/// What processor `processor` holds, settled, for the tenant: never below
/// zero.
pub fn processor_balance(processor: &str) -> Result<PaymentAccount, InvalidAccountCode> {
    account(
        format!("processor_balance:{processor}"),
        AccountSpec::new(AccountType::Asset).credits_must_not_exceed_debits(),
    )
}

/// What the tenant owes processor `processor`: a batch's shortfall beyond
/// the processor's balance (since rules 4), paid down by later batches.
/// Never below zero: nothing is prepaid.
pub fn processor_payable(processor: &str) -> Result<PaymentAccount, InvalidAccountCode> {
    account(
        format!("processor_payable:{processor}"),
        AccountSpec::new(AccountType::Liability).debits_must_not_exceed_credits(),
    )
}

/// Processors' fees.
pub fn processing_fees() -> PaymentAccount {
    fixed("processing_fees", AccountSpec::new(AccountType::Expense))
}

/// Captured amounts frozen by open disputes.
pub fn funds_in_dispute() -> PaymentAccount {
    fixed("funds_in_dispute", AccountSpec::new(AccountType::Asset))
}

/// Processors' dispute fees.
pub fn dispute_fees() -> PaymentAccount {
    fixed("dispute_fees", AccountSpec::new(AccountType::Expense))
}

/// Disputes lost.
pub fn dispute_losses() -> PaymentAccount {
    fixed("dispute_losses", AccountSpec::new(AccountType::Expense))
}

/// Settlement differences waiting for a break's resolution.
pub fn settlement_suspense() -> PaymentAccount {
    fixed("settlement_suspense", AccountSpec::new(AccountType::Asset))
}

/// Settlement differences written off (a break resolved by writing off).
pub fn settlement_write_offs() -> PaymentAccount {
    fixed(
        "settlement_write_offs",
        AccountSpec::new(AccountType::Expense),
    )
}

/// Bank account `name`, where payouts land.
pub fn bank(name: &str) -> Result<PaymentAccount, InvalidAccountCode> {
    account(format!("bank:{name}"), AccountSpec::new(AccountType::Asset))
}

fn fixed(code: &'static str, spec: AccountSpec) -> PaymentAccount {
    PaymentAccount {
        code: AccountCode::parse(code).unwrap_or_else(|_| unreachable!("{code} is a valid code")),
        spec,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_account_has_its_code_type_and_flags() {
        let flags = |account: &PaymentAccount| {
            (
                account.code.to_string(),
                account.spec.account_type,
                account.spec.flags.debits_must_not_exceed_credits,
                account.spec.flags.credits_must_not_exceed_debits,
            )
        };
        let all = [
            receivable("stripe").unwrap(),
            revenue(),
            refunds(),
            cash(),
            gift_card("GC-1").unwrap(),
            processor_balance("stripe").unwrap(),
            processor_payable("stripe").unwrap(),
            processing_fees(),
            funds_in_dispute(),
            dispute_fees(),
            dispute_losses(),
            settlement_suspense(),
            settlement_write_offs(),
            bank("main").unwrap(),
        ];
        let expected = [
            ("receivable:stripe", AccountType::Asset, false, false),
            ("revenue", AccountType::Revenue, false, false),
            ("refunds", AccountType::Revenue, false, false),
            ("cash", AccountType::Asset, false, false),
            ("gift_cards:GC-1", AccountType::Liability, true, false),
            ("processor_balance:stripe", AccountType::Asset, false, true),
            (
                "processor_payable:stripe",
                AccountType::Liability,
                true,
                false,
            ),
            ("processing_fees", AccountType::Expense, false, false),
            ("funds_in_dispute", AccountType::Asset, false, false),
            ("dispute_fees", AccountType::Expense, false, false),
            ("dispute_losses", AccountType::Expense, false, false),
            ("settlement_suspense", AccountType::Asset, false, false),
            ("settlement_write_offs", AccountType::Expense, false, false),
            ("bank:main", AccountType::Asset, false, false),
        ];
        let got: Vec<_> = all.iter().map(flags).collect();
        let expected: Vec<_> = expected
            .iter()
            .map(|(code, kind, debits, credits)| (code.to_string(), *kind, *debits, *credits))
            .collect();
        assert_eq!(got, expected);
        assert!(receivable("has space").is_err());
    }
}
