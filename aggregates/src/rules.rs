//! The version of the domain rules a request is decided under.
//!
//! A rule that changes what a request decides would make `verify` and
//! `replay`, which decide every recorded request again, find the requests
//! recorded before the change. So each request records the rules it was
//! decided under (its first event's metadata, `rules`; none for the first
//! version), and is decided again under the same: a command whose decision
//! changed between versions carries the [`Rules`] it is decided under, and
//! keeps the older behaviour for older rules.

/// A version of the rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Rules(u32);

impl Rules {
    /// Every request recorded before rules were versioned (the releases
    /// before version 2; development builds between the two are not
    /// releases, and what they recorded may not verify).
    pub const FIRST: Self = Self(1);
    /// Version 2:
    /// - a processor tender's capture after its first names the processor's
    ///   reference (`capture_reference_required`), and a capture never goes
    ///   by another tender's charge reference (`reference_taken`);
    /// - a charge's reference claim names its tender, so two tenders of one
    ///   payment cannot share it;
    /// - a commission line records the cap it was valued under, which bounds
    ///   what a failed refund gives back of a clawback of it;
    /// - a commitment's expiry first times out, in the order they ended,
    ///   the windows that ended before it.
    pub const SECOND: Self = Self(2);
    /// Version 3:
    /// - a commitment whose inspection window has ended refuses deposits,
    ///   releases and claims until the window's timeout is recorded, so
    ///   the timeout decides over what stood at the window's end, however
    ///   late the scheduler runs (`inspection_window_ended`);
    /// - a refund drawn from a processor's tender, and a dispute of a
    ///   processor's capture, name the processor's reference, without
    ///   which its settlement line could never match it
    ///   (`refund_reference_required`, `dispute_reference_required`);
    /// - a charge claimed under the first rules (naming its payment only)
    ///   is its tender's: another tender of the payment cannot capture by
    ///   it (`reference_taken`);
    /// - the journal's own routes refuse the accounts payments own (a
    ///   processor's receivable and balance, gift cards, the funds in
    ///   dispute, the settlement suspense: `account_code_reserved`), so no
    ///   entry of theirs, nor a reversal of a payment's entry, nor the
    ///   posting of a hold placed there under older rules, moves money on
    ///   them;
    /// - a settlement break whose line the item it names now expects
    ///   exactly is resolved by match only (`break_matchable`): a write-off
    ///   or an adjustment would leave the item unsettled;
    /// - a clawback frees each month's cap in proportion to what is left
    ///   (not clawed back yet) of the commissions it claws from accrued in
    ///   that month (`cap_shares`), and its reversal gives back, month by
    ///   month, what each cap leaves room for;
    /// - work dated after it is recorded is refused (`work_in_future`): it
    ///   accrues payable at once, so a pay run could pay it first.
    pub const THIRD: Self = Self(3);
    /// Version 4:
    /// - a settlement batch that takes more from a processor's balance
    ///   than the balance holds (its refunds and disputes outweigh its
    ///   captures after a payout) is accepted: the shortfall is owed to the
    ///   processor (`processor_payable:<p>`), and a later batch first pays
    ///   down what is owed before adding to the balance. Before, such a
    ///   file was refused (`credits_exceed_debits`), although it agreed
    ///   with itself; the journal's own routes refuse the payable too;
    /// - a failed payout pays down what is owed to the processor from the
    ///   money it brings back, at once;
    /// - an account another domain posts to (`revenue`, `bank:<name>`,
    ///   `escrow_cash`, ...) opens through the journal only with the type
    ///   and flags that domain opens it with (`account_spec_reserved`);
    /// - a subscription's period ends on the day of the month its periods
    ///   are counted from (or the month's last day), so a short month does
    ///   not move the billing date for good;
    /// - a cancellation at the period end is refused once the period has
    ///   ended and awaits its renewal (`period_ended`).
    pub const FOURTH: Self = Self(4);
    /// Version 5:
    /// - a plan change issues the new plan's runs and credits less what the
    ///   period has consumed on its subscription grants (whichever plan
    ///   issued them): the allowance is the period's, so changing plans
    ///   and back no longer issues a plan's full amounts again;
    /// - an escrow window's timeout waits (unrecorded, submitted again)
    ///   while another window that ended before it awaits its own, so
    ///   windows time out in the order they ended, whatever order the
    ///   scheduler's submissions arrive in;
    /// - a commitment's cancel is refused while an inspection window is
    ///   open over unfrozen funds (`inspection_window_open`) and once it is
    ///   completed (`commitment_completed`); a commitment whose expiry is
    ///   not after its creation is refused (`invalid_terms`);
    /// - a payee's work reference accrues once (`accrued_already`), as a
    ///   commission's source does;
    /// - a refund whose clawback rounds to nothing (a refused line) still
    ///   counts in what the captures have refunded, and its failure takes
    ///   it off again, so small refunds add up to the whole.
    pub const FIFTH: Self = Self(5);
    /// Version 6:
    /// - an adjustment that corrects a line toward nothing is bounded by
    ///   what is left of it: the line with its corrections keeps its sign,
    ///   and a commission is corrected down no further than what is left of
    ///   it after every clawback of its capture (each counted whole), nor
    ///   than its capture and the captures a refund links to it have left
    ///   to claw back (`correction_exceeds_line`); a clawback, its reversal
    ///   and a refused line are not corrected by adjustments
    ///   (`line_not_correctable`); a commission's correction counts in the
    ///   cap of its month (`cap_shares`; down, no more than the commission
    ///   counts for there);
    /// - a clawback sees the corrections: what it claws back is the share of
    ///   the commissions as corrected, never more than is left of them as
    ///   corrected, and a failed refund gives back its clawback as
    ///   corrected. Before, a commission corrected to nothing was clawed
    ///   back again when its sale was refunded (the payee docked twice),
    ///   and a commission clawed back whole could be corrected down again;
    /// - an escrow submission whose inspection window would end at or after
    ///   the commitment's expiry is refused (`inspection_window_past_expiry`):
    ///   its timeout could never come, and the expiry would refund it.
    pub const SIXTH: Self = Self(6);
    /// Version 7:
    /// - an entry records the kind of the request that recorded it
    ///   (`recorded_by`), and the journal reverses only its own entries:
    ///   one a domain recorded (a cash tender's capture, a cash refund,
    ///   whose accounts no domain owns alone) is reversed by its domain
    ///   (`entry_recorded_by_domain`). Before, reversing a cash capture
    ///   through the journal left the payment captured and the books
    ///   without the sale;
    /// - the journal refuses a currency code at another scale than its
    ///   ISO 4217 minor unit (`asset_scale_mismatch`): the first use fixes
    ///   a code's scale in the tenant, so `USD/3` posted by hand refused
    ///   every payment, commitment and payee in USD afterwards;
    /// - a settlement break on a dispute's reversal is not written off or
    ///   adjusted while its dispute is open (`break_awaits_dispute`): the
    ///   dispute may still be won, when the line matches; written off
    ///   first, the won dispute left its receivable open for good;
    /// - a commission (the process manager's request) accrues only as its
    ///   capture has it: the payment it names attributed to the payee, in
    ///   the payment's currency as the request names it, holding the
    ///   capture with that amount at that time
    ///   (`commission_source_mismatch`), and a clawback only as its refund
    ///   or lost dispute has it (the same amount, taking from that
    ///   dispute's capture or from the refund's tenders' captures, every
    ///   one made before the refund); before, the process manager's
    ///   requests were taken as they said, so a defect or a rewritten
    ///   history could accrue on a capture that never was, or claw back
    ///   more than was refunded;
    /// - (the route, not the decision) a write-off or adjustment of a
    ///   break names its reason (400 without one).
    pub const SEVENTH: Self = Self(7);
    /// Version 8:
    /// - a clawback's reversal (the process manager's request) names its
    ///   payment and is taken only as that payment has it: attributed to
    ///   the payee, holding the refund both its sources name, failed
    ///   (`commission_source_mismatch`); before, it was taken as it said,
    ///   so a defect or a rewritten history could give back a clawback
    ///   whose refund stands;
    /// - an escrow milestone's inspection window closes when nothing of the
    ///   milestone is left open (released or frozen), whatever moved it: a
    ///   partial acceptance or rejection leaves the rest to the window (to
    ///   answer, or to its timeout), where before any answer closed it, so
    ///   accepting 1 of 30,000 let a cancel refund the rest from under the
    ///   payee; and a release by hand that empties the milestone closes
    ///   it, where before the window stayed open over nothing and held a
    ///   cancel back until its timeout (such windows recorded before hold
    ///   none back); an acceptance or rejection needs an open window
    ///   (`no_inspection_window`): before, one with none recorded an answer
    ///   to a submission that never was;
    /// - a payment attributed to a payee is refused until the payee is
    ///   created (`unknown_payee`): the commission process manager,
    ///   reacting to its capture, was refused for good or not depending on
    ///   how far it lagged behind the payee's creation.
    pub const EIGHTH: Self = Self(8);
    /// Version 9:
    /// - the decision that completes an escrow commitment (a release, a
    ///   claim's resolution or a timeout leaving nothing to move) records
    ///   `CommitmentCompleted`, which settles the commitment's expiry:
    ///   before, the expiry stayed scheduled, was refused
    ///   `commitment_completed` when it came, and stayed open in
    ///   `scheduled_work` for good, every scheduler tick walking past it.
    pub const NINTH: Self = Self(9);
    /// Version 10:
    /// - a payee with a share of a pay run not yet paid is left out of a
    ///   new run: its runs are paid in turn, so a negative balance one run
    ///   carries in (or a negative net it carries out) is recovered from
    ///   the runs created after it; before, a run created meanwhile paid the
    ///   payee its gross while the earlier run held the debt;
    /// - an adjustment correcting a line still in its holding period is
    ///   held until that line is payable (as a clawback's reversal is);
    ///   before, it was payable at once, so a correction of a held
    ///   commission was paid out before the commission could be;
    /// - a payout marked paid may still be marked failed (the bank
    ///   returned it): its entry reversed and its batches freed, as for a
    ///   pending one; before, `payout_not_pending`.
    pub const TENTH: Self = Self(10);
    /// Version 11:
    /// - a pay run's cutoff lies within its period and is not after the
    ///   run is created (`cutoff_outside_period`, `cutoff_in_future`):
    ///   before, a cutoff past the period's end claimed the next period's
    ///   lines into this one, and a cutoff in the future claimed only what
    ///   had accrued when the run was created while it said more; a run
    ///   created under older rules claims, when reopened, no further than
    ///   its period's end and its creation.
    pub const ELEVENTH: Self = Self(11);
    /// What new requests are decided under.
    pub const CURRENT: Self = Self::ELEVENTH;

    /// Version `version`, if this build knows it.
    pub fn new(version: u32) -> Option<Self> {
        (Self::FIRST.0..=Self::CURRENT.0)
            .contains(&version)
            .then_some(Self(version))
    }

    pub fn version(self) -> u32 {
        self.0
    }

    /// Whether these rules include what `version` brought.
    pub fn since(self, version: Self) -> bool {
        self >= version
    }
}

impl Default for Rules {
    fn default() -> Self {
        Self::CURRENT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_known_versions_exist_and_later_rules_include_earlier_ones() {
        assert_eq!(Rules::new(0), None);
        assert_eq!(Rules::new(1), Some(Rules::FIRST));
        assert_eq!(Rules::new(2), Some(Rules::SECOND));
        assert_eq!(Rules::new(3), Some(Rules::THIRD));
        assert_eq!(Rules::new(4), Some(Rules::FOURTH));
        assert_eq!(Rules::new(5), Some(Rules::FIFTH));
        assert_eq!(Rules::new(6), Some(Rules::SIXTH));
        assert_eq!(Rules::new(7), Some(Rules::SEVENTH));
        assert_eq!(Rules::new(8), Some(Rules::EIGHTH));
        assert_eq!(Rules::new(9), Some(Rules::NINTH));
        assert_eq!(Rules::new(10), Some(Rules::TENTH));
        assert_eq!(Rules::new(11), Some(Rules::ELEVENTH));
        assert_eq!(Rules::new(Rules::CURRENT.version() + 1), None);
        assert!(Rules::CURRENT.since(Rules::SECOND));
        assert!(Rules::CURRENT.since(Rules::THIRD));
        assert!(!Rules::FIRST.since(Rules::SECOND));
        assert!(!Rules::SECOND.since(Rules::THIRD));
        assert!(Rules::CURRENT.since(Rules::FOURTH));
        assert!(Rules::CURRENT.since(Rules::FIFTH));
        assert!(!Rules::FOURTH.since(Rules::FIFTH));
        assert!(Rules::CURRENT.since(Rules::SIXTH));
        assert!(!Rules::FIFTH.since(Rules::SIXTH));
        assert!(Rules::CURRENT.since(Rules::SEVENTH));
        assert!(Rules::CURRENT.since(Rules::TENTH));
        assert!(!Rules::SIXTH.since(Rules::SEVENTH));
        assert!(Rules::CURRENT.since(Rules::EIGHTH));
        assert!(!Rules::SEVENTH.since(Rules::EIGHTH));
        assert!(Rules::CURRENT.since(Rules::NINTH));
        assert!(Rules::CURRENT.since(Rules::ELEVENTH));
        assert!(!Rules::TENTH.since(Rules::ELEVENTH));
        assert!(!Rules::EIGHTH.since(Rules::NINTH));
        assert!(!Rules::THIRD.since(Rules::FOURTH));
    }
}
