//! Splitting an amount into exact minor units: by basis points (a claim
//! split between payer and payee, a revenue share), or by any weights.
//!
//! Largest remainder: every part gets the floor of its exact share, and the
//! units left over go one each to the parts with the largest fractional
//! remainders, earlier parts first on a tie. So the parts always sum to the
//! whole, and no part differs from its exact share by a unit or more.

use crate::money::Amount;

/// Basis points in the whole.
pub const BASIS_POINTS_WHOLE: u32 = 10_000;

/// Most parts in one split.
pub const SPLIT_PARTS_MAX: usize = 1_000;

/// Why an amount cannot be split as asked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SplitError {
    #[error("a split needs 1 to {SPLIT_PARTS_MAX} parts, not {0}")]
    Parts(usize),
    #[error("the shares sum to {sum} basis points, not {BASIS_POINTS_WHOLE}")]
    NotWhole { sum: u64 },
    #[error("the weights sum to zero")]
    NoWeight,
}

/// `total` split by `shares` in basis points, which sum to
/// [`BASIS_POINTS_WHOLE`].
pub fn split_basis_points(total: Amount, shares: &[u32]) -> Result<Vec<Amount>, SplitError> {
    let sum: u64 = shares.iter().map(|share| u64::from(*share)).sum();
    if !shares.is_empty() && sum != u64::from(BASIS_POINTS_WHOLE) {
        return Err(SplitError::NotWhole { sum });
    }
    let weights: Vec<u64> = shares.iter().map(|share| u64::from(*share)).collect();
    split_by_weights(total, &weights)
}

/// `total` split in proportion to `weights` (any non-negative integers, not
/// all zero).
pub fn split_by_weights(total: Amount, weights: &[u64]) -> Result<Vec<Amount>, SplitError> {
    if weights.is_empty() || weights.len() > SPLIT_PARTS_MAX {
        return Err(SplitError::Parts(weights.len()));
    }
    // At most 1,000 weights of at most 2^64 each: the sum fits 128 bits, and
    // so does every product with a 63-bit total.
    let whole: u128 = weights.iter().map(|weight| u128::from(*weight)).sum();
    if whole == 0 {
        return Err(SplitError::NoWeight);
    }
    let total_units = u128::try_from(total.value()).unwrap_or(0);
    let mut parts: Vec<u128> = Vec::with_capacity(weights.len());
    let mut remainders: Vec<(u128, usize)> = Vec::with_capacity(weights.len());
    for (index, weight) in weights.iter().enumerate() {
        let exact = total_units * u128::from(*weight);
        parts.push(exact / whole);
        remainders.push((exact % whole, index));
    }
    let given: u128 = parts.iter().sum();
    let left = total_units - given;
    // Largest remainder first; on a tie, the earlier part.
    remainders.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(&b.1)));
    for (_, index) in remainders.iter().take(usize::try_from(left).unwrap_or(0)) {
        parts[*index] += 1;
    }
    Ok(parts
        .into_iter()
        .map(|part| Amount::new(i64::try_from(part).unwrap_or(i64::MAX)).unwrap_or(Amount::ZERO))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn amount(value: i64) -> Amount {
        Amount::new(value).unwrap()
    }

    fn values(parts: &[Amount]) -> Vec<i64> {
        parts.iter().map(|part| part.value()).collect()
    }

    #[test]
    fn a_split_that_divides_evenly_gives_the_exact_shares() {
        let parts = split_basis_points(amount(10_000), &[2_500, 7_500]).unwrap();
        assert_eq!(values(&parts), [2_500, 7_500]);
    }

    #[test]
    fn the_leftover_units_go_to_the_largest_remainders() {
        // 100 by 1/3 each: 33.33 each, one unit left, to the first (a tie).
        let parts = split_basis_points(amount(100), &[3_334, 3_333, 3_333]).unwrap();
        assert_eq!(values(&parts), [34, 33, 33]);
        // 10 by 15% / 85%: 1.5 and 8.5, one unit left, tie: the first.
        let parts = split_basis_points(amount(10), &[1_500, 8_500]).unwrap();
        assert_eq!(values(&parts), [2, 8]);
        // 7 by 10% / 30% / 60%: 0.7, 2.1, 4.2; one unit left: the 0.7.
        let parts = split_basis_points(amount(7), &[1_000, 3_000, 6_000]).unwrap();
        assert_eq!(values(&parts), [1, 2, 4]);
    }

    #[test]
    fn ties_go_to_the_earlier_part() {
        let parts = split_by_weights(amount(1), &[1, 1, 1]).unwrap();
        assert_eq!(values(&parts), [1, 0, 0]);
        let parts = split_by_weights(amount(2), &[1, 1, 1]).unwrap();
        assert_eq!(values(&parts), [1, 1, 0]);
    }

    #[test]
    fn shares_that_are_not_the_whole_are_refused() {
        assert_eq!(
            split_basis_points(amount(10), &[5_000, 4_999]),
            Err(SplitError::NotWhole { sum: 9_999 })
        );
        assert_eq!(
            split_basis_points(amount(10), &[]),
            Err(SplitError::Parts(0))
        );
        assert_eq!(
            split_by_weights(amount(10), &[0, 0]),
            Err(SplitError::NoWeight)
        );
    }

    #[test]
    fn the_largest_amount_splits_without_overflow() {
        let parts = split_basis_points(amount(i64::MAX), &[1, 9_999]).unwrap();
        assert_eq!(parts[0].value() + parts[1].value(), i64::MAX, "{parts:?}");
    }

    /// A small deterministic generator, so the property runs the same
    /// cases every time.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn below(&mut self, bound: u64) -> u64 {
            self.next() % bound
        }
    }

    #[test]
    fn the_parts_sum_to_the_whole_and_stay_within_a_unit_of_their_share() {
        let mut rng = Rng(0x5EED_1234_ABCD_0001);
        for _ in 0..20_000 {
            let total = match rng.below(4) {
                0 => rng.below(10) as i64,
                1 => rng.below(1_000_000) as i64,
                2 => (rng.next() >> 1) as i64,
                _ => i64::MAX - rng.below(1_000) as i64,
            };
            let count = 1 + rng.below(12) as usize;
            let mut shares = vec![0_u32; count];
            let mut left = BASIS_POINTS_WHOLE;
            for share in shares.iter_mut().take(count - 1) {
                *share = rng.below(u64::from(left) + 1) as u32;
                left -= *share;
            }
            shares[count - 1] = left;
            let parts = split_basis_points(amount(total), &shares).unwrap();
            let sum: i128 = parts.iter().map(|part| i128::from(part.value())).sum();
            assert_eq!(sum, i128::from(total), "{total} by {shares:?}: {parts:?}");
            for (part, share) in parts.iter().zip(&shares) {
                // |part - total * share / 10,000| < 1, in whole numbers.
                let exact = i128::from(total) * i128::from(*share);
                let given = i128::from(part.value()) * i128::from(BASIS_POINTS_WHOLE);
                assert!(
                    (given - exact).abs() < i128::from(BASIS_POINTS_WHOLE),
                    "{total} by {shares:?}: {parts:?}"
                );
            }
        }
    }
}
