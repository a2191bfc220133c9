//! Drawing an amount from lots (grants, escrow deposits) in a declared
//! order, recording which lots each draw took from and how much: the lineage
//! of every unit drawn.

use crate::money::{Amount, AmountError};

/// A lot an amount may be drawn from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lot<Id> {
    pub id: Id,
    /// When it was opened relative to the others (its place in opening
    /// order), for FIFO and LIFO.
    pub opened: u64,
    /// What is left of it; `None` is unlimited.
    pub available: Option<Amount>,
}

/// The order lots are drawn in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LotOrder {
    /// Oldest opened first.
    Fifo,
    /// Newest opened first.
    Lifo,
    /// The order the lots are given in (a domain's own order, such as the
    /// quota burn-down).
    Given,
}

/// Part of a draw taken from one lot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LotDraw<Id> {
    pub lot: Id,
    pub amount: Amount,
}

/// Why an amount cannot be drawn.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DrawError {
    #[error("cannot draw {requested}: {available} available in the lots")]
    Insufficient { requested: i64, available: i64 },
    #[error(transparent)]
    Amount(#[from] AmountError),
}

/// Draws `amount` from `lots` in `order`, lot by lot, each to its end
/// before the next; all or nothing. A lot with nothing left is skipped.
pub fn draw<Id: Clone>(
    lots: &[Lot<Id>],
    amount: Amount,
    order: LotOrder,
) -> Result<Vec<LotDraw<Id>>, DrawError> {
    let mut ordered: Vec<&Lot<Id>> = lots.iter().collect();
    match order {
        LotOrder::Fifo => ordered.sort_by_key(|lot| lot.opened),
        LotOrder::Lifo => ordered.sort_by_key(|lot| std::cmp::Reverse(lot.opened)),
        LotOrder::Given => {}
    }
    let mut left = amount;
    let mut draws = Vec::new();
    for lot in ordered {
        if left.is_zero() {
            break;
        }
        let take = match lot.available {
            None => left,
            Some(available) => available.min(left),
        };
        if take.is_zero() {
            continue;
        }
        draws.push(LotDraw {
            lot: lot.id.clone(),
            amount: take,
        });
        left = left.checked_sub(take)?;
    }
    if !left.is_zero() {
        return Err(DrawError::Insufficient {
            requested: amount.value(),
            available: amount.checked_sub(left)?.value(),
        });
    }
    Ok(draws)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(value: i64) -> Amount {
        Amount::new(value).unwrap()
    }

    fn lot(id: &'static str, opened: u64, available: Option<i64>) -> Lot<&'static str> {
        Lot {
            id,
            opened,
            available: available.map(amount),
        }
    }

    fn taken(draws: &[LotDraw<&'static str>]) -> Vec<(&'static str, i64)> {
        draws
            .iter()
            .map(|draw| (draw.lot, draw.amount.value()))
            .collect()
    }

    fn deposits() -> Vec<Lot<&'static str>> {
        // Given out of opening order, to show FIFO and LIFO sort.
        vec![
            lot("second", 2, Some(30)),
            lot("first", 1, Some(50)),
            lot("third", 3, Some(40)),
        ]
    }

    #[test]
    fn fifo_draws_the_oldest_lot_first_and_records_each_part() {
        let draws = draw(&deposits(), amount(70), LotOrder::Fifo).unwrap();
        assert_eq!(taken(&draws), [("first", 50), ("second", 20)]);
    }

    #[test]
    fn lifo_draws_the_newest_lot_first() {
        let draws = draw(&deposits(), amount(70), LotOrder::Lifo).unwrap();
        assert_eq!(taken(&draws), [("third", 40), ("second", 30)]);
    }

    #[test]
    fn a_given_order_is_kept() {
        let draws = draw(&deposits(), amount(31), LotOrder::Given).unwrap();
        assert_eq!(taken(&draws), [("second", 30), ("first", 1)]);
    }

    #[test]
    fn empty_lots_are_skipped_and_an_unlimited_lot_covers_the_rest() {
        let lots = vec![
            lot("empty", 1, Some(0)),
            lot("some", 2, Some(5)),
            lot("unlimited", 3, None),
        ];
        let draws = draw(&lots, amount(1_000), LotOrder::Fifo).unwrap();
        assert_eq!(taken(&draws), [("some", 5), ("unlimited", 995)]);
    }

    #[test]
    fn drawing_more_than_the_lots_hold_draws_nothing() {
        assert_eq!(
            draw(&deposits(), amount(121), LotOrder::Fifo),
            Err(DrawError::Insufficient {
                requested: 121,
                available: 120
            })
        );
        assert_eq!(draw(&deposits(), Amount::ZERO, LotOrder::Fifo), Ok(vec![]));
    }
}
