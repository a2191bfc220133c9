//! A commitment's decisions: each command checked against the state, the
//! events it gives, and the lineage of every transfer drawn from the
//! deposits in the commitment's order.

use super::{
    Allocation, Cause, ClaimOutcome, Commitment, CommitmentCommand, CommitmentEvent,
    CommitmentTerms, Direction, Draw, EscrowError, Resolution, Transfer, ENTRIES_MAX,
    INSPECTION_SECONDS_MAX, MILESTONES_MAX,
};
use crate::decide::Decide;
use crate::ids::{DepositId, TransferId};
use crate::money::Amount;
use crate::rules::Rules;
use chrono::{DateTime, Duration, Utc};
use cqrs_es::Aggregate;

type Decided = Result<Vec<CommitmentEvent>, EscrowError>;

/// Basis points in a whole.
const BPS: u128 = 10_000;

/// `amount` split `payee_bps` to the payee and the rest to the payer, in
/// exact minor units summing to `amount`: each side's share rounded down,
/// the unit left over to the side with the larger remainder (the payee on
/// a tie).
pub fn split(amount: Amount, payee_bps: u16) -> Result<(Amount, Amount), EscrowError> {
    if u128::from(payee_bps) > BPS {
        return Err(EscrowError::InvalidSplit);
    }
    let whole = u128::try_from(amount.value()).map_err(|_| EscrowError::NonPositive)?;
    let payee_share = whole * u128::from(payee_bps);
    let payer_share = whole * (BPS - u128::from(payee_bps));
    let (mut payee, mut payer) = (payee_share / BPS, payer_share / BPS);
    if payee + payer < whole {
        if payee_share % BPS >= payer_share % BPS {
            payee += 1;
        } else {
            payer += 1;
        }
    }
    let amount_of = |units: u128| {
        i64::try_from(units)
            .map_err(|_| crate::money::AmountError::Overflow)
            .and_then(Amount::new)
    };
    Ok((amount_of(payee)?, amount_of(payer)?))
}

/// What is left of each deposit, in the order transfers draw them; drawn
/// down as one decision makes several transfers.
struct Drawer {
    left: Vec<(DepositId, Amount)>,
}

impl Drawer {
    fn of(commitment: &Commitment, allocation: Allocation) -> Result<Self, EscrowError> {
        let mut left = Vec::with_capacity(commitment.deposits.len());
        for deposit in &commitment.deposits {
            left.push((deposit.deposit_id, deposit.remaining()?));
        }
        if allocation == Allocation::Lifo {
            left.reverse();
        }
        Ok(Self { left })
    }

    /// The lineage of `amount`, drawn in order.
    fn draw(&mut self, amount: Amount) -> Result<Vec<Draw>, EscrowError> {
        let mut wanted = amount;
        let mut lineage = Vec::new();
        for (deposit_id, left) in &mut self.left {
            if wanted.is_zero() {
                break;
            }
            let taken = (*left).min(wanted);
            if taken.is_zero() {
                continue;
            }
            *left = left.checked_sub(taken)?;
            wanted = wanted.checked_sub(taken)?;
            lineage.push(Draw {
                deposit_id: *deposit_id,
                amount: taken,
            });
        }
        if !wanted.is_zero() {
            return Err(EscrowError::InsufficientUnfrozen {
                unfrozen: amount.checked_sub(wanted)?,
                asked: amount,
            });
        }
        Ok(lineage)
    }
}

fn check_terms(terms: &CommitmentTerms) -> Result<(), EscrowError> {
    let invalid = |why: &str| Err(EscrowError::InvalidTerms(why.to_string()));
    if terms.milestones.is_empty() || terms.milestones.len() > MILESTONES_MAX {
        return invalid("a commitment has 1 to 50 milestones");
    }
    let mut seen = std::collections::BTreeSet::new();
    for milestone in &terms.milestones {
        if !seen.insert(milestone.milestone_id.as_str()) {
            return invalid("milestone ids are unique");
        }
        if milestone.amount.is_zero() {
            return invalid("a milestone is for a positive amount");
        }
        if !(0..=INSPECTION_SECONDS_MAX).contains(&milestone.inspection_seconds) {
            return invalid("an inspection window is 0 seconds to 90 days");
        }
        if let (Some(due_at), Some(expires_at)) = (milestone.due_at, terms.expires_at) {
            if due_at > expires_at {
                return invalid("a milestone is due on or before the commitment expires");
            }
        }
    }
    terms.total()?;
    Ok(())
}

/// A transfer of `amount` in `direction`, drawn by `drawer`.
fn transfer(
    drawer: &mut Drawer,
    (transfer_id, direction): (TransferId, Direction),
    milestone_id: Option<&str>,
    amount: Amount,
    cause: Cause,
    at: DateTime<Utc>,
) -> Result<CommitmentEvent, EscrowError> {
    Ok(CommitmentEvent::Transferred(Transfer {
        transfer_id,
        direction,
        milestone_id: milestone_id.map(str::to_string),
        amount,
        lineage: drawer.draw(amount)?,
        cause,
        at,
    }))
}

impl Commitment {
    /// The terms of a live commitment at `at`: created, neither canceled
    /// nor expired (nor past its expiry, which the scheduler is about to
    /// apply).
    fn live(&self, at: DateTime<Utc>) -> Result<&CommitmentTerms, EscrowError> {
        let terms = self.terms.as_ref().ok_or(EscrowError::Unknown)?;
        if self.canceled_at.is_some() {
            return Err(EscrowError::Canceled);
        }
        let past = terms.expires_at.is_some_and(|expires_at| at >= expires_at);
        if self.expired_at.is_some() || past {
            return Err(EscrowError::Expired);
        }
        Ok(terms)
    }

    /// Checks that the payer may still answer `milestone_id`'s window at
    /// `at`: once an open window has ended, its timeout decides.
    fn answerable(&self, milestone_id: &str, at: DateTime<Utc>) -> Result<(), EscrowError> {
        let window = self
            .milestone(milestone_id)
            .and_then(|milestone| milestone.window.as_ref())
            .filter(|window| !window.closed);
        match window {
            Some(window) if at >= window.ends_at => Err(EscrowError::InspectionWindowEnded {
                ends_at: window.ends_at,
            }),
            _ => Ok(()),
        }
    }

    fn drawer(&self) -> Result<Drawer, EscrowError> {
        let allocation = self
            .terms
            .as_ref()
            .map_or(Allocation::Fifo, |terms| terms.allocation);
        Drawer::of(self, allocation)
    }

    /// Checks that an acceptance or rejection of `milestone_id` has a
    /// window to answer (since rules 8, `no_inspection_window`): before,
    /// one with none recorded an answer to a submission that never was.
    fn has_window(&self, milestone_id: &str, rules: Rules) -> Result<(), EscrowError> {
        let milestone = self
            .milestone(milestone_id)
            .ok_or_else(|| EscrowError::UnknownMilestone(milestone_id.to_string()))?;
        if rules.since(Rules::EIGHTH) && !milestone.in_inspection() {
            return Err(EscrowError::NoInspectionWindow);
        }
        Ok(())
    }

    /// The closing of `milestone_id`'s window, if one is open, by an answer
    /// (`answered`: an acceptance or rejection; `whole`: an acceptance of
    /// all of it) moving or freezing `asked` of the `open` left. Since
    /// rules 8 the window closes when nothing of the milestone is left open
    /// after it, answer or not, or when the payer accepts it whole (what is
    /// not funded yet of it then waits for another submission, as before:
    /// its timeout would refund the deposits made meanwhile): a partial
    /// answer leaves the rest to the window (answered, or decided by its
    /// timeout), so a cancel cannot refund it from under the payee, and a
    /// release by hand that empties the milestone leaves no window over
    /// nothing to hold a cancel back. Before, an answer of any amount
    /// closed it, and nothing else did.
    fn closing(
        &self,
        milestone_id: &str,
        (answered, whole): (bool, bool),
        (open, asked): (Amount, Amount),
        (rules, at): (Rules, DateTime<Utc>),
    ) -> Option<CommitmentEvent> {
        let closes = if rules.since(Rules::EIGHTH) {
            open == asked || whole
        } else {
            answered
        };
        if closes {
            self.answer(milestone_id, at)
        } else {
            None
        }
    }

    /// The closing of `milestone_id`'s inspection window, when one is open
    /// (an answer, a timeout, an end, and since rules 8 whatever leaves
    /// nothing of the milestone open closes it).
    fn answer(&self, milestone_id: &str, at: DateTime<Utc>) -> Option<CommitmentEvent> {
        let window = self
            .milestone(milestone_id)?
            .window
            .as_ref()
            .filter(|window| !window.closed)?;
        Some(CommitmentEvent::InspectionClosed {
            milestone_id: milestone_id.to_string(),
            window: window.number,
            at,
        })
    }

    /// Checks a release by hand may add a transfer: at most
    /// [`ENTRIES_MAX`] of them (resolutions, timeouts and endings are never
    /// refused for the count, so no money is locked by it).
    fn room_for_release(&self) -> Result<(), EscrowError> {
        if self.transfers.len() >= ENTRIES_MAX {
            return Err(EscrowError::TooMany { max: ENTRIES_MAX });
        }
        Ok(())
    }

    fn transfer_taken(&self, transfer_id: TransferId) -> Result<(), EscrowError> {
        if self
            .transfers
            .iter()
            .any(|transfer| transfer.transfer_id == transfer_id)
        {
            return Err(EscrowError::IdTaken);
        }
        Ok(())
    }

    /// The milestone `milestone_id` with something still open on it.
    fn open_milestone(&self, milestone_id: &str) -> Result<Amount, EscrowError> {
        let milestone = self
            .milestone(milestone_id)
            .ok_or_else(|| EscrowError::UnknownMilestone(milestone_id.to_string()))?;
        let open = milestone.open()?;
        if open.is_zero() && !milestone.frozen.is_zero() {
            return Err(EscrowError::MilestoneFrozen {
                milestone_id: milestone_id.to_string(),
                frozen: milestone.frozen,
            });
        }
        if open.is_zero() {
            return Err(EscrowError::MilestoneSettled(milestone_id.to_string()));
        }
        Ok(open)
    }

    /// Checks that `asked` of a milestone with `open` left can move now.
    fn movable(&self, open: Amount, asked: Amount) -> Result<(), EscrowError> {
        if asked.is_zero() {
            return Err(EscrowError::NonPositive);
        }
        if asked > open {
            return Err(EscrowError::ExceedsMilestone { open, asked });
        }
        let unfrozen = self.unfrozen()?;
        if asked > unfrozen {
            return Err(EscrowError::InsufficientUnfrozen { unfrozen, asked });
        }
        Ok(())
    }

    /// Checks, under rules since version 3, that no inspection window has
    /// ended without its timeout: until the timeout is recorded, nothing
    /// may change what it decides over (the held, unfrozen funds and what
    /// is open of each milestone), so it decides the same however late the
    /// scheduler runs.
    fn no_window_overdue(&self, rules: Rules, at: DateTime<Utc>) -> Result<(), EscrowError> {
        if rules.since(Rules::THIRD) {
            self.no_window_ended(at)
        } else {
            Ok(())
        }
    }

    /// Refused (`inspection_window_ended`) when a window has ended by `at`
    /// and its timeout is not recorded yet.
    fn no_window_ended(&self, at: DateTime<Utc>) -> Result<(), EscrowError> {
        for milestone in &self.milestones {
            self.answerable(&milestone.terms.milestone_id, at)?;
        }
        Ok(())
    }

    fn deposit(
        &self,
        deposit_id: DepositId,
        amount: Amount,
        reference: Option<String>,
        (rules, at): (Rules, DateTime<Utc>),
    ) -> Decided {
        let terms = self.live(at)?;
        self.no_window_overdue(rules, at)?;
        if amount.is_zero() {
            return Err(EscrowError::NonPositive);
        }
        if self.deposits.len() >= ENTRIES_MAX {
            return Err(EscrowError::TooMany { max: ENTRIES_MAX });
        }
        if self
            .deposits
            .iter()
            .any(|deposit| deposit.deposit_id == deposit_id)
        {
            return Err(EscrowError::IdTaken);
        }
        let (total, funded) = (terms.total()?, self.funded()?);
        // Past the total whatever it adds to: never an overflow.
        if amount > total.checked_sub(funded)? {
            let funded = funded.checked_add(amount).unwrap_or(Amount::MAX);
            return Err(EscrowError::Overfunded { total, funded });
        }
        Ok(vec![CommitmentEvent::Deposited {
            deposit_id,
            amount,
            reference,
            at,
        }])
    }

    fn submit(&self, milestone_id: String, (rules, at): (Rules, DateTime<Utc>)) -> Decided {
        let terms = self.live(at)?;
        self.open_milestone(&milestone_id)?;
        let milestone = self
            .milestone(&milestone_id)
            .ok_or_else(|| EscrowError::UnknownMilestone(milestone_id.clone()))?;
        if let Some(window) = milestone.window.as_ref().filter(|window| !window.closed) {
            // Ended: its timeout decides before anything else.
            if at >= window.ends_at {
                return Err(EscrowError::InspectionWindowEnded {
                    ends_at: window.ends_at,
                });
            }
            return Err(EscrowError::InspectionWindowOpen {
                ends_at: window.ends_at,
            });
        }
        let ends_at = at
            .checked_add_signed(Duration::seconds(milestone.terms.inspection_seconds))
            .ok_or(EscrowError::InvalidTerms(
                "the window ends past the calendar".into(),
            ))?;
        // Since rules 6: a window the expiry would end first (its timeout
        // never comes; the expiry refunds the milestone) is refused.
        let expires_at = terms.expires_at.filter(|_| rules.since(Rules::SIXTH));
        if let Some(expires_at) = expires_at.filter(|expires_at| ends_at >= *expires_at) {
            return Err(EscrowError::WindowPastExpiry {
                ends_at,
                expires_at,
            });
        }
        let window = milestone
            .window
            .as_ref()
            .map_or(1, |window| window.number.saturating_add(1));
        Ok(vec![CommitmentEvent::MilestoneSubmitted {
            milestone_id,
            window,
            ends_at,
            payer: terms.payer.clone(),
            payee: terms.payee.clone(),
            asset: terms.asset.clone(),
            at,
        }])
    }

    fn release(
        &self,
        transfer_id: TransferId,
        milestone_id: String,
        amount: Option<Amount>,
        accepted: bool,
        (rules, at): (Rules, DateTime<Utc>),
    ) -> Decided {
        self.live(at)?;
        self.no_window_overdue(rules, at)?;
        self.room_for_release()?;
        self.transfer_taken(transfer_id)?;
        if accepted {
            self.answerable(&milestone_id, at)?;
            self.has_window(&milestone_id, rules)?;
        }
        let open = self.open_milestone(&milestone_id)?;
        // Accepting all that is open takes what is held of it (and is
        // refused when nothing is).
        let asked = match amount {
            Some(amount) => amount,
            None => {
                let unfrozen = self.unfrozen()?;
                if unfrozen.is_zero() {
                    return Err(EscrowError::InsufficientUnfrozen {
                        unfrozen,
                        asked: open,
                    });
                }
                open.min(unfrozen)
            }
        };
        self.movable(open, asked)?;
        let mut events = Vec::new();
        let whole = accepted && amount.is_none();
        events.extend(self.closing(&milestone_id, (accepted, whole), (open, asked), (rules, at)));
        let cause = if accepted {
            Cause::Accepted
        } else {
            Cause::Released
        };
        events.push(transfer(
            &mut self.drawer()?,
            (transfer_id, Direction::Release),
            Some(&milestone_id),
            asked,
            cause,
            at,
        )?);
        Ok(events)
    }
}

impl Commitment {
    fn open_claim(&self, command: CommitmentCommand) -> Decided {
        let CommitmentCommand::Claim {
            claim_id,
            milestone_id,
            amount,
            reason,
            rejection,
            hold_id,
            rules,
            at,
        } = command
        else {
            return Ok(Vec::new());
        };
        self.live(at)?;
        self.no_window_overdue(rules, at)?;
        if rejection {
            self.answerable(&milestone_id, at)?;
            self.has_window(&milestone_id, rules)?;
        }
        if self.claims.len() >= ENTRIES_MAX {
            return Err(EscrowError::TooMany { max: ENTRIES_MAX });
        }
        if self.claim(claim_id).is_some() {
            return Err(EscrowError::IdTaken);
        }
        let open = self.open_milestone(&milestone_id)?;
        self.movable(open, amount)?;
        let mut events = Vec::new();
        events.extend(self.closing(
            &milestone_id,
            (rejection, false),
            (open, amount),
            (rules, at),
        ));
        events.push(CommitmentEvent::ClaimOpened {
            claim_id,
            milestone_id,
            amount,
            reason,
            rejection,
            hold_id,
            at,
        });
        Ok(events)
    }

    fn resolve_claim(&self, command: CommitmentCommand) -> Decided {
        let CommitmentCommand::ResolveClaim {
            claim_id,
            outcome,
            release_id,
            refund_id,
            at,
            ..
        } = command
        else {
            return Ok(Vec::new());
        };
        // A claim resolves whatever became of the commitment since: the
        // frozen funds are the claim's.
        self.terms.as_ref().ok_or(EscrowError::Unknown)?;
        let claim = self
            .claim(claim_id)
            .ok_or(EscrowError::UnknownClaim(claim_id))?;
        if claim.resolution.is_some() {
            return Err(EscrowError::ClaimResolved);
        }
        self.transfer_taken(release_id)?;
        self.transfer_taken(refund_id)?;
        if release_id == refund_id {
            return Err(EscrowError::IdTaken);
        }
        let (to_payee, to_payer) = match outcome {
            ClaimOutcome::Release => (claim.amount, Amount::ZERO),
            ClaimOutcome::Refund => (Amount::ZERO, claim.amount),
            ClaimOutcome::Split { payee_bps } => split(claim.amount, payee_bps)?,
        };
        let mut events = vec![CommitmentEvent::ClaimResolved {
            claim_id,
            resolution: Resolution {
                outcome,
                to_payee,
                to_payer,
                at,
            },
        }];
        let mut drawer = self.drawer()?;
        let cause = Cause::Claim { claim_id };
        for (amount, side) in [
            (to_payee, (release_id, Direction::Release)),
            (to_payer, (refund_id, Direction::Refund)),
        ] {
            if !amount.is_zero() {
                let milestone = Some(claim.milestone_id.as_str());
                events.push(transfer(&mut drawer, side, milestone, amount, cause, at)?);
            }
        }
        Ok(events)
    }

    fn time_out(
        &self,
        (milestone_id, number): (String, u32),
        transfer_id: TransferId,
        at: DateTime<Utc>,
    ) -> Decided {
        // A window ending before the commitment's expiry times out as of
        // its end, whenever the scheduler comes round.
        self.terms.as_ref().ok_or(EscrowError::Unknown)?;
        if self.canceled_at.is_some() {
            return Err(EscrowError::Canceled);
        }
        if self.expired_at.is_some() {
            return Err(EscrowError::Expired);
        }
        self.transfer_taken(transfer_id)?;
        let milestone = self
            .milestone(&milestone_id)
            .ok_or_else(|| EscrowError::UnknownMilestone(milestone_id.clone()))?;
        let window = milestone
            .window
            .as_ref()
            .filter(|window| !window.closed && window.number == number)
            .ok_or(EscrowError::NoInspectionWindow)?;
        if at < window.ends_at {
            return Err(EscrowError::InspectionWindowOpen {
                ends_at: window.ends_at,
            });
        }
        // A window ending at or after the commitment's expiry never times
        // out: the expiry came first, and its refund decides (whichever of
        // the two the scheduler submits first).
        if !self.times_out(window) {
            return Err(EscrowError::Expired);
        }
        let mut unfrozen = self.unfrozen()?;
        let timeout = (milestone, transfer_id);
        self.timed_out(timeout, &mut self.drawer()?, &mut unfrozen, at)
    }

    /// Since rules 5, a cancel is refused once the commitment is completed
    /// (`commitment_completed`: nothing is left to cancel) and, while it
    /// holds unfrozen funds, while an inspection window is open
    /// (`inspection_window_open`): the payee's submission is the payer's
    /// to answer, or its timeout's to decide.
    /// Since rules 8 a window over a milestone with nothing left open
    /// (recorded under older rules) holds no cancel back.
    fn cancelable(&self, rules: Rules) -> Result<(), EscrowError> {
        if self.status() == Some(super::CommitmentStatus::Completed) {
            return Err(EscrowError::Completed);
        }
        // With nothing unfrozen held, a window protects nothing (the payer
        // could accept nothing of it), and a payee submitting again after
        // each timeout would keep the commitment from ever ending.
        if self.unfrozen()?.is_zero() {
            return Ok(());
        }
        let over_something = |milestone: &&super::Milestone| {
            !rules.since(Rules::EIGHTH) || milestone.open().map_or(true, |open| !open.is_zero())
        };
        let open = self
            .milestones
            .iter()
            .filter(over_something)
            .filter_map(|milestone| milestone.window.as_ref())
            .filter(|window| !window.closed)
            .map(|window| window.ends_at)
            .min();
        match open {
            Some(ends_at) => Err(EscrowError::InspectionWindowOpen { ends_at }),
            None => Ok(()),
        }
    }

    /// Another milestone's window that ended before window `number` of
    /// `milestone_id` (or with it, in milestone order) and has not timed
    /// out yet, when that window is open: its timeout goes first, as the
    /// scheduler would have run them on time (an expiry orders them so
    /// too). Its milestone and end.
    pub fn earlier_window_awaiting(
        &self,
        milestone_id: &str,
        number: u32,
    ) -> Option<(String, DateTime<Utc>)> {
        let place = self
            .milestones
            .iter()
            .position(|milestone| milestone.terms.milestone_id == milestone_id)?;
        let ends_at = self.milestones[place]
            .window
            .as_ref()
            .filter(|window| !window.closed && window.number == number)?
            .ends_at;
        self.milestones
            .iter()
            .enumerate()
            .filter(|(other, _)| *other != place)
            .filter_map(|(other, milestone)| {
                let window = milestone.window.as_ref().filter(|window| !window.closed)?;
                let earlier = (window.ends_at, other) < (ends_at, place);
                (earlier && self.times_out(window))
                    .then(|| (milestone.terms.milestone_id.clone(), window.ends_at))
            })
            .min_by_key(|(_, ends_at)| *ends_at)
    }

    /// Whether `window` times out: it ends before the commitment's expiry.
    fn times_out(&self, window: &super::Window) -> bool {
        let expires_at = self.terms.as_ref().and_then(|terms| terms.expires_at);
        expires_at.is_none_or(|expires_at| window.ends_at < expires_at)
    }

    /// The timeout of `milestone`'s open window by `transfer_id`, at `at`:
    /// the window closes, and what is open of the milestone and held for
    /// it (of `unfrozen`, which it lowers) moves by its `on_timeout`;
    /// nothing moves when nothing is.
    fn timed_out(
        &self,
        (milestone, transfer_id): (&super::Milestone, TransferId),
        drawer: &mut Drawer,
        unfrozen: &mut Amount,
        at: DateTime<Utc>,
    ) -> Decided {
        let milestone_id = &milestone.terms.milestone_id;
        let window = milestone
            .window
            .as_ref()
            .ok_or(EscrowError::NoInspectionWindow)?;
        let amount = milestone.open()?.min(*unfrozen);
        *unfrozen = unfrozen.checked_sub(amount)?;
        let mut events = vec![CommitmentEvent::InspectionClosed {
            milestone_id: milestone_id.clone(),
            window: window.number,
            at,
        }];
        if !amount.is_zero() {
            let direction = milestone.terms.on_timeout;
            events.push(transfer(
                drawer,
                (transfer_id, direction),
                Some(milestone_id),
                amount,
                Cause::TimedOut,
                at,
            )?);
        }
        Ok(events)
    }

    /// The timeouts an expiry applies first, in the order their windows
    /// ended (then in milestone order), as the scheduler would have run
    /// them: of every window that ended before the expiry and has not timed
    /// out, by its milestone's transfer in `timeouts` (an expiry recorded
    /// without them refunds such a window, as it always did). Also the
    /// milestones whose windows they closed.
    fn overdue_timeouts<'a>(
        &'a self,
        timeouts: &[(String, TransferId)],
        drawer: &mut Drawer,
        unfrozen: &mut Amount,
    ) -> Result<(Vec<CommitmentEvent>, Vec<&'a str>), EscrowError> {
        let mut overdue = Vec::new();
        for milestone in &self.milestones {
            let Some(window) = milestone.window.as_ref().filter(|window| !window.closed) else {
                continue;
            };
            let transfer = timeouts
                .iter()
                .find(|(milestone_id, _)| *milestone_id == milestone.terms.milestone_id);
            if let Some((_, transfer_id)) = transfer.filter(|_| self.times_out(window)) {
                overdue.push((window.ends_at, milestone, *transfer_id));
            }
        }
        // Stable: windows ending together time out in milestone order.
        overdue.sort_by_key(|(ends_at, _, _)| *ends_at);
        let (mut events, mut closed) = (Vec::new(), Vec::new());
        for (ends_at, milestone, transfer_id) in overdue {
            self.transfer_taken(transfer_id)?;
            events.extend(self.timed_out((milestone, transfer_id), drawer, unfrozen, ends_at)?);
            closed.push(milestone.terms.milestone_id.as_str());
        }
        Ok((events, closed))
    }

    /// Ends the commitment (`ended`), refunding every unfrozen held amount
    /// (an expiry after timing out the windows that ended before it, by
    /// `timeouts`).
    fn end(
        &self,
        (transfer_id, timeouts): (TransferId, &[(String, TransferId)]),
        cause: Cause,
        at: DateTime<Utc>,
    ) -> Decided {
        let terms = self.terms.as_ref().ok_or(EscrowError::Unknown)?;
        if self.canceled_at.is_some() {
            return Err(EscrowError::Canceled);
        }
        if self.expired_at.is_some() {
            return Err(EscrowError::Expired);
        }
        if cause == Cause::Expired {
            match terms.expires_at {
                Some(expires_at) if at >= expires_at => {}
                Some(expires_at) => return Err(EscrowError::NotExpired { expires_at }),
                None => return Err(EscrowError::InvalidTerms("it never expires".into())),
            }
            if self.status() == Some(super::CommitmentStatus::Completed) {
                return Err(EscrowError::Completed);
            }
        } else {
            self.live(at)?;
            // A window that has ended is its timeout's to decide: the payer
            // cancels once it has run, never over what it owes the payee.
            self.no_window_ended(at)?;
        }
        self.transfer_taken(transfer_id)?;
        let mut drawer = self.drawer()?;
        let mut unfrozen = self.unfrozen()?;
        // What was owed at the end of a window before the expiry is owed
        // still: its timeout goes first (a cancel has none left to wait).
        let (mut events, closed) = self.overdue_timeouts(timeouts, &mut drawer, &mut unfrozen)?;
        events.push(match cause {
            Cause::Expired => CommitmentEvent::CommitmentExpired { at },
            _ => CommitmentEvent::CommitmentCanceled { at },
        });
        // Its other open windows close with it: nothing is left to time out.
        for milestone in &self.milestones {
            if !closed.contains(&milestone.terms.milestone_id.as_str()) {
                events.extend(self.answer(&milestone.terms.milestone_id, at));
            }
        }
        if !unfrozen.is_zero() {
            events.push(transfer(
                &mut drawer,
                (transfer_id, Direction::Refund),
                None,
                unfrozen,
                cause,
                at,
            )?);
        }
        Ok(events)
    }
}

impl Commitment {
    /// Since rules 9, the event recording that `events` complete the
    /// commitment (after a release, a claim's resolution or a timeout): it
    /// was not completed before them and is after.
    fn completed_by(
        &self,
        events: &[CommitmentEvent],
        (rules, at): (Rules, DateTime<Utc>),
    ) -> Option<CommitmentEvent> {
        if !rules.since(Rules::NINTH) || self.status() == Some(super::CommitmentStatus::Completed) {
            return None;
        }
        let mut after = self.clone();
        for event in events {
            after.apply(event.clone());
        }
        (after.status() == Some(super::CommitmentStatus::Completed))
            .then_some(CommitmentEvent::CommitmentCompleted { at })
    }

    fn decide_command(&self, command: CommitmentCommand) -> Decided {
        match command {
            CommitmentCommand::Create { terms, rules, at } => {
                if self.terms.is_some() {
                    return Err(EscrowError::Exists);
                }
                check_terms(&terms)?;
                // Since rules 5 a commitment expires after it is created:
                // one past its expiry refuses every deposit.
                let past = terms.expires_at.is_some_and(|expires_at| expires_at <= at);
                if rules.since(Rules::FIFTH) && past {
                    return Err(EscrowError::InvalidTerms(
                        "a commitment expires after it is created".into(),
                    ));
                }
                Ok(vec![CommitmentEvent::CommitmentCreated {
                    terms,
                    expiry_times_out: rules.since(Rules::SECOND),
                    at,
                }])
            }
            CommitmentCommand::Deposit {
                deposit_id,
                amount,
                reference,
                rules,
                at,
            } => self.deposit(deposit_id, amount, reference, (rules, at)),
            CommitmentCommand::Submit {
                milestone_id,
                rules,
                at,
            } => self.submit(milestone_id, (rules, at)),
            CommitmentCommand::Release {
                transfer_id,
                milestone_id,
                amount,
                accepted,
                rules,
                at,
            } => self.release(transfer_id, milestone_id, amount, accepted, (rules, at)),
            command @ CommitmentCommand::Claim { .. } => self.open_claim(command),
            command @ CommitmentCommand::ResolveClaim { .. } => self.resolve_claim(command),
            CommitmentCommand::TimeOut {
                milestone_id,
                window,
                transfer_id,
                at,
                ..
            } => self.time_out((milestone_id, window), transfer_id, at),
            CommitmentCommand::Cancel {
                transfer_id,
                rules,
                at,
            } => {
                if rules.since(Rules::FIFTH) {
                    // Ended, expired or past its timeout's window first,
                    // as before; then what the fifth rules refuse.
                    self.live(at)?;
                    self.no_window_ended(at)?;
                    self.cancelable(rules)?;
                }
                self.end((transfer_id, &[]), Cause::Canceled, at)
            }
            CommitmentCommand::Expire {
                transfer_id,
                timeouts,
                at,
            } => self.end((transfer_id, &timeouts), Cause::Expired, at),
        }
    }
}

impl Decide for Commitment {
    fn decide(&self, command: CommitmentCommand) -> Decided {
        let completing = match &command {
            CommitmentCommand::Release { rules, at, .. }
            | CommitmentCommand::ResolveClaim { rules, at, .. }
            | CommitmentCommand::TimeOut { rules, at, .. } => Some((*rules, *at)),
            _ => None,
        };
        let mut events = self.decide_command(command)?;
        if let Some(completed) = completing.and_then(|when| self.completed_by(&events, when)) {
            events.push(completed);
        }
        Ok(events)
    }
}
