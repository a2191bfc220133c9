//! Assets and amounts: integers in minor units, checked arithmetic, no floats.

use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::fmt;
use std::sync::Arc;

/// Most decimal places an asset may have.
pub const ASSET_SCALE_MAX: u8 = 18;

/// The longest spelling of an asset: a code of 12, `/`, a scale of 2 digits.
const ASSET_TEXT_BYTES_MAX: usize = 15;

/// A unit of account with a fixed scale: `USD/2` (cents), `JPY/0`,
/// `CREDITS/0`. Amounts of an asset are integers of its minor unit.
#[derive(Clone, PartialEq, Eq, Hash, Deserialize)]
#[serde(try_from = "String")]
pub struct Asset {
    /// `CODE/SCALE`, its one spelling: written once and shared by every
    /// posting, balance and event that names the asset (a clone copies no
    /// text).
    text: Arc<str>,
    /// The length of the code, before the `/`.
    code_len: u8,
    scale: u8,
}

/// Why a text is not an asset.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid asset {0:?}: expected CODE/SCALE, e.g. USD/2 (code 1-12 of A-Z, 0-9, _; scale 0-18)"
)]
pub struct InvalidAsset(pub String);

impl Asset {
    /// `code` (1-12 of `A-Z0-9_`, starting with a letter) with `scale` decimals.
    pub fn new(code: &str, scale: u8) -> Result<Self, InvalidAsset> {
        let valid_code = (1..=12).contains(&code.len())
            && code.starts_with(|c: char| c.is_ascii_uppercase())
            && code
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_');
        let invalid = || InvalidAsset(format!("{code}/{scale}"));
        if !valid_code || scale > ASSET_SCALE_MAX {
            return Err(invalid());
        }
        // Written by hand on the stack, then allocated once: assets are
        // made for every posting read back.
        let mut text = [0u8; ASSET_TEXT_BYTES_MAX];
        let mut len = code.len();
        text[..len].copy_from_slice(code.as_bytes());
        text[len] = b'/';
        len += 1;
        if scale >= 10 {
            text[len] = b'0' + scale / 10;
            len += 1;
        }
        text[len] = b'0' + scale % 10;
        len += 1;
        // ASCII throughout: the code's characters were checked above.
        let text = std::str::from_utf8(&text[..len]).map_err(|_| invalid())?;
        Ok(Self {
            text: Arc::from(text),
            // At most 12, checked above.
            code_len: code.len() as u8,
            scale,
        })
    }

    /// `CODE/SCALE`.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    pub fn code(&self) -> &str {
        &self.text[..usize::from(self.code_len)]
    }

    pub fn scale(&self) -> u8 {
        self.scale
    }
}

/// By code, then by scale (`USD/2` before `USD/10`).
impl Ord for Asset {
    fn cmp(&self, other: &Self) -> Ordering {
        self.code()
            .cmp(other.code())
            .then(self.scale.cmp(&other.scale))
    }
}

impl PartialOrd for Asset {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Debug for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Asset")
            .field("code", &self.code())
            .field("scale", &self.scale)
            .field("text", &self.as_str())
            .finish()
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Serialize for Asset {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.text)
    }
}

impl TryFrom<String> for Asset {
    type Error = InvalidAsset;

    fn try_from(text: String) -> Result<Self, InvalidAsset> {
        let (code, scale) = text
            .split_once('/')
            .ok_or_else(|| InvalidAsset(text.clone()))?;
        // Digits only, no sign, no leading zero: one spelling per scale.
        let canonical = !scale.is_empty()
            && scale.bytes().all(|b| b.is_ascii_digit())
            && (scale == "0" || !scale.starts_with('0'));
        let scale = scale
            .parse::<u8>()
            .ok()
            .filter(|_| canonical)
            .ok_or_else(|| InvalidAsset(text.clone()))?;
        Self::new(code, scale)
    }
}

impl From<Asset> for String {
    fn from(asset: Asset) -> Self {
        asset.text.to_string()
    }
}

/// The currencies a payment, a settlement or a payout may be in, with
/// their minor units (ISO 4217): the asset of a currency is `CODE/units`.
pub const CURRENCIES: &[(&str, u8)] = &[
    ("AUD", 2),
    ("BHD", 3),
    ("BRL", 2),
    ("CAD", 2),
    ("CHF", 2),
    ("CNY", 2),
    ("DKK", 2),
    ("EUR", 2),
    ("GBP", 2),
    ("HKD", 2),
    ("INR", 2),
    ("JPY", 0),
    ("KRW", 0),
    ("KWD", 3),
    ("MXN", 2),
    ("NOK", 2),
    ("NZD", 2),
    ("PLN", 2),
    ("SEK", 2),
    ("SGD", 2),
    ("USD", 2),
    ("ZAR", 2),
];

/// The asset of currency `code` (`USD` is `USD/2`, `JPY` is `JPY/0`), if
/// it is one of [`CURRENCIES`].
pub fn currency(code: &str) -> Option<Asset> {
    CURRENCIES
        .iter()
        .find(|(known, _)| *known == code)
        .and_then(|(code, units)| Asset::new(code, *units).ok())
}

/// A non-negative amount in an asset's minor unit (zero by default).
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize,
)]
#[serde(try_from = "i64", into = "i64")]
pub struct Amount(i64);

/// Arithmetic that would leave the range of amounts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("amount {0} is negative")]
    Negative(i64),
    #[error("amount arithmetic overflowed")]
    Overflow,
}

impl crate::decide::Rejection for AmountError {
    fn kind(&self) -> crate::decide::RejectionKind {
        crate::decide::RejectionKind::RuleBroken
    }

    fn code(&self) -> &'static str {
        "amount_overflow"
    }
}

impl Amount {
    pub const ZERO: Self = Self(0);
    /// The largest amount.
    pub const MAX: Self = Self(i64::MAX);

    /// `value` if it is not negative.
    pub const fn new(value: i64) -> Result<Self, AmountError> {
        if value < 0 {
            Err(AmountError::Negative(value))
        } else {
            Ok(Self(value))
        }
    }

    pub const fn value(self) -> i64 {
        self.0
    }

    pub const fn is_zero(self) -> bool {
        self.0 == 0
    }

    pub fn checked_add(self, other: Self) -> Result<Self, AmountError> {
        self.0
            .checked_add(other.0)
            .map(Self)
            .ok_or(AmountError::Overflow)
    }

    /// `self - other`; negative results are an error, not a wrap.
    pub fn checked_sub(self, other: Self) -> Result<Self, AmountError> {
        match self.0.checked_sub(other.0) {
            Some(value) if value >= 0 => Ok(Self(value)),
            Some(value) => Err(AmountError::Negative(value)),
            None => Err(AmountError::Overflow),
        }
    }
}

impl TryFrom<i64> for Amount {
    type Error = AmountError;

    fn try_from(value: i64) -> Result<Self, AmountError> {
        Self::new(value)
    }
}

impl From<Amount> for i64 {
    fn from(amount: Amount) -> Self {
        amount.0
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A running total of amounts (what an account has had posted, or has
/// pending, in one asset): never negative, and as wide as `i128`, so that
/// no history of postings of `i64` amounts overflows it (an `ETH/18`
/// account passes `i64::MAX` wei after about 9.22 ETH).
///
/// In JSON it is a number while it fits an `i64` (so what was written
/// before it was widened reads the same), else a string of digits.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Total(i128);

impl Total {
    pub const ZERO: Self = Self(0);

    pub const fn value(self) -> i128 {
        self.0
    }

    fn checked(value: Option<i128>) -> Result<Self, AmountError> {
        match value {
            Some(value) if value >= 0 => Ok(Self(value)),
            Some(value) => Err(AmountError::Negative(
                i64::try_from(value).unwrap_or(i64::MIN),
            )),
            None => Err(AmountError::Overflow),
        }
    }

    pub fn checked_add(self, amount: Amount) -> Result<Self, AmountError> {
        Self::checked(self.0.checked_add(i128::from(amount.value())))
    }

    /// `self - amount`; negative results are an error, not a wrap.
    pub fn checked_sub(self, amount: Amount) -> Result<Self, AmountError> {
        Self::checked(self.0.checked_sub(i128::from(amount.value())))
    }

    /// `self + other`.
    pub fn plus(self, other: Self) -> Result<Self, AmountError> {
        Self::checked(self.0.checked_add(other.0))
    }
}

impl From<Amount> for Total {
    fn from(amount: Amount) -> Self {
        Self(i128::from(amount.value()))
    }
}

impl fmt::Display for Total {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl Serialize for Total {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match i64::try_from(self.0) {
            Ok(value) => serializer.serialize_i64(value),
            Err(_) => serializer.serialize_str(&self.0.to_string()),
        }
    }
}

impl<'de> Deserialize<'de> for Total {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Visitor;
        impl serde::de::Visitor<'_> for Visitor {
            type Value = Total;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a non-negative integer, or its digits as a string")
            }

            fn visit_i64<E: serde::de::Error>(self, value: i64) -> Result<Total, E> {
                Total::checked(Some(i128::from(value))).map_err(E::custom)
            }

            fn visit_u64<E: serde::de::Error>(self, value: u64) -> Result<Total, E> {
                Ok(Total(i128::from(value)))
            }

            fn visit_str<E: serde::de::Error>(self, value: &str) -> Result<Total, E> {
                let digits = value.parse::<i128>().map_err(E::custom)?;
                Total::checked(Some(digits)).map_err(E::custom)
            }
        }
        deserializer.deserialize_any(Visitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_total_passes_i64_and_reads_back_from_a_number_or_its_digits() {
        let near = Total::from(Amount::new(i64::MAX).unwrap());
        let past = near.checked_add(Amount::new(1).unwrap()).unwrap();
        assert_eq!(past.value(), i128::from(i64::MAX) + 1);
        assert_eq!(serde_json::to_string(&near).unwrap(), i64::MAX.to_string());
        assert_eq!(
            serde_json::to_string(&past).unwrap(),
            "\"9223372036854775808\""
        );
        for text in ["9223372036854775807", "\"9223372036854775808\"", "0"] {
            let total: Total = serde_json::from_str(text).unwrap();
            assert_eq!(serde_json::to_string(&total).unwrap(), text);
        }
        assert!(serde_json::from_str::<Total>("-1").is_err());
        assert!(serde_json::from_str::<Total>("\"-1\"").is_err());
        assert_eq!(
            Total::ZERO.checked_sub(Amount::new(1).unwrap()),
            Err(AmountError::Negative(-1))
        );
        assert_eq!(past.plus(past).unwrap().value(), 2 * past.value());
    }

    #[test]
    fn assets_parse_from_code_and_scale_and_refuse_anything_else() {
        let usd = Asset::try_from("USD/2".to_string()).unwrap();
        assert_eq!((usd.code(), usd.scale()), ("USD", 2));
        assert_eq!(usd.to_string(), "USD/2");
        assert_eq!(serde_json::to_string(&usd).unwrap(), "\"USD/2\"");
        // Every scale is spelled one way, read back to the same asset.
        for scale in 0..=ASSET_SCALE_MAX {
            let asset = Asset::new("X_1", scale).unwrap();
            assert_eq!(asset.as_str(), format!("X_1/{scale}"));
            assert_eq!(String::from(asset.clone()), format!("X_1/{scale}"));
            assert_eq!(Asset::try_from(asset.to_string()), Ok(asset));
        }
        for bad in [
            "usd/2",
            "USD",
            "USD/19",
            "/2",
            "TOOLONGCODE123/0",
            "1USD/2",
            "US D/2",
        ] {
            assert_eq!(
                Asset::try_from(bad.to_string()),
                Err(InvalidAsset(bad.to_string())),
                "{bad}"
            );
        }
    }

    #[test]
    fn assets_order_by_code_then_scale_and_clones_share_their_text() {
        let asset = |text: &str| Asset::try_from(text.to_string()).unwrap();
        let mut assets = [
            asset("USD/10"),
            asset("AB_/2"),
            asset("USD/2"),
            asset("AB1/0"),
            asset("AB/18"),
        ];
        assets.sort();
        let texts: Vec<&str> = assets.iter().map(Asset::as_str).collect();
        assert_eq!(texts, ["AB/18", "AB1/0", "AB_/2", "USD/2", "USD/10"]);
        let longest = Asset::new("ABCDEFGHIJKL", ASSET_SCALE_MAX).unwrap();
        assert_eq!(longest.as_str(), "ABCDEFGHIJKL/18");
        assert_eq!(longest.code(), "ABCDEFGHIJKL");
        let usd = asset("USD/10");
        assert_eq!(
            format!("{usd:?}"),
            r#"Asset { code: "USD", scale: 10, text: "USD/10" }"#
        );
        let clone = usd.clone();
        assert!(std::ptr::eq(usd.as_str(), clone.as_str()));
        assert_eq!(clone, usd);
    }

    #[test]
    fn amounts_never_go_negative_or_wrap() {
        assert_eq!(Amount::new(-1), Err(AmountError::Negative(-1)));
        let max = Amount::new(i64::MAX).unwrap();
        assert_eq!(
            max.checked_add(Amount::new(1).unwrap()),
            Err(AmountError::Overflow)
        );
        assert_eq!(
            Amount::new(3).unwrap().checked_sub(Amount::new(5).unwrap()),
            Err(AmountError::Negative(-2))
        );
        assert_eq!(
            Amount::new(5).unwrap().checked_sub(Amount::new(3).unwrap()),
            Ok(Amount::new(2).unwrap())
        );
        assert!(serde_json::from_str::<Amount>("-4").is_err());
        assert!(serde_json::from_str::<Amount>("1.5").is_err());
    }
}
