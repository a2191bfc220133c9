//! A gift card (its id the card's code): sold once in one currency, loaded
//! again later. What it holds is the journal account `gift_cards:<code>`
//! (a liability that never goes below zero); the card keeps what was sold
//! and loaded onto it, and refuses a redemption past its balance with its
//! own error before the account's flag would.

use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::money::{Amount, AmountError, Asset};
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// Aggregate type of gift cards; the aggregate id is the card's code.
pub const GIFT_CARD_AGGREGATE: &str = "gift_card";

/// A gift card's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GiftCard {
    /// `None` before it is sold.
    pub asset: Option<Asset>,
    /// Sold and loaded onto it, in total.
    pub loaded: Amount,
    pub issued_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum GiftCardCommand {
    Issue {
        asset: Asset,
        amount: Amount,
        at: DateTime<Utc>,
    },
    Load {
        amount: Amount,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum GiftCardEvent {
    GiftCardIssued {
        asset: Asset,
        amount: Amount,
        at: DateTime<Utc>,
    },
    GiftCardLoaded {
        amount: Amount,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for GiftCardEvent {
    fn event_type(&self) -> String {
        match self {
            Self::GiftCardIssued { .. } => "GiftCardIssued",
            Self::GiftCardLoaded { .. } => "GiftCardLoaded",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GiftCardError {
    #[error("the gift card exists already")]
    Exists,
    #[error("no such gift card")]
    Unknown,
    #[error("a gift card is sold and loaded for a positive amount")]
    NonPositive,
    #[error("the gift card is in {card}, not {asked}")]
    CurrencyMismatch { card: Asset, asked: Asset },
    #[error("the gift card holds {balance}: {asked} cannot be drawn")]
    Insufficient { balance: i128, asked: Amount },
    #[error(transparent)]
    Amount(#[from] AmountError),
}

impl Rejection for GiftCardError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::Unknown => RejectionKind::NotFound,
            Self::NonPositive => RejectionKind::Invalid,
            _ => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Exists => "gift_card_exists",
            Self::Unknown => "unknown_gift_card",
            Self::NonPositive => "invalid_amount",
            Self::CurrencyMismatch { .. } => "gift_card_currency_mismatch",
            Self::Insufficient { .. } => "gift_card_insufficient",
            Self::Amount(_) => "amount_overflow",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::CurrencyMismatch { card, asked } => json!({"card": card, "asked": asked}),
            Self::Insufficient { balance, asked } => {
                json!({"balance": balance.to_string(), "asked": asked})
            }
            _ => serde_json::Value::Null,
        }
    }
}

impl GiftCard {
    /// The card's currency, checked against `asset`: the card must exist
    /// and be in `asset`.
    pub fn in_currency(&self, asset: &Asset) -> Result<(), GiftCardError> {
        let card = self.asset.as_ref().ok_or(GiftCardError::Unknown)?;
        if card != asset {
            return Err(GiftCardError::CurrencyMismatch {
                card: card.clone(),
                asked: asset.clone(),
            });
        }
        Ok(())
    }
}

impl Aggregate for GiftCard {
    const TYPE: &'static str = GIFT_CARD_AGGREGATE;
    type Command = GiftCardCommand;
    type Event = GiftCardEvent;
    type Error = GiftCardError;
    type Services = ();

    async fn handle(
        &mut self,
        command: GiftCardCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), GiftCardError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: GiftCardEvent) {
        match event {
            GiftCardEvent::GiftCardIssued { asset, amount, at } => {
                self.asset = Some(asset);
                self.loaded = amount;
                self.issued_at = Some(at);
            }
            GiftCardEvent::GiftCardLoaded { amount, .. } => {
                self.loaded = self.loaded.checked_add(amount).unwrap_or(self.loaded);
            }
        }
    }
}

impl Decide for GiftCard {
    fn decide(&self, command: GiftCardCommand) -> Result<Vec<GiftCardEvent>, GiftCardError> {
        match command {
            GiftCardCommand::Issue { asset, amount, at } => {
                if self.asset.is_some() {
                    return Err(GiftCardError::Exists);
                }
                if amount.is_zero() {
                    return Err(GiftCardError::NonPositive);
                }
                Ok(vec![GiftCardEvent::GiftCardIssued { asset, amount, at }])
            }
            GiftCardCommand::Load { amount, at } => {
                if self.asset.is_none() {
                    return Err(GiftCardError::Unknown);
                }
                if amount.is_zero() {
                    return Err(GiftCardError::NonPositive);
                }
                self.loaded.checked_add(amount)?;
                Ok(vec![GiftCardEvent::GiftCardLoaded { amount, at }])
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<GiftCard>;

    fn at(hour: u32) -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 3, 1, hour, 0, 0).unwrap()
    }

    fn cents(value: i64) -> Amount {
        Amount::new(value).unwrap()
    }

    fn usd() -> Asset {
        Asset::new("USD", 2).unwrap()
    }

    fn issued() -> GiftCardEvent {
        GiftCardEvent::GiftCardIssued {
            asset: usd(),
            amount: cents(5_000),
            at: at(1),
        }
    }

    #[test]
    fn a_gift_card_is_sold_once_for_a_positive_amount() {
        let issue = |amount| GiftCardCommand::Issue {
            asset: usd(),
            amount: cents(amount),
            at: at(1),
        };
        Given::with(())
            .given_no_previous_events()
            .when(issue(5_000))
            .then_expect_events(vec![issued()]);
        Given::with(())
            .given(vec![issued()])
            .when(issue(5_000))
            .then_expect_error(GiftCardError::Exists);
        Given::with(())
            .given_no_previous_events()
            .when(issue(0))
            .then_expect_error(GiftCardError::NonPositive);
    }

    #[test]
    fn a_sold_card_loads_again_and_an_unknown_one_does_not() {
        let load = |amount| GiftCardCommand::Load {
            amount: cents(amount),
            at: at(2),
        };
        Given::with(())
            .given(vec![issued()])
            .when(load(1_000))
            .then_expect_events(vec![GiftCardEvent::GiftCardLoaded {
                amount: cents(1_000),
                at: at(2),
            }]);
        Given::with(())
            .given(vec![issued()])
            .when(load(0))
            .then_expect_error(GiftCardError::NonPositive);
        Given::with(())
            .given_no_previous_events()
            .when(load(1_000))
            .then_expect_error(GiftCardError::Unknown);
    }

    #[test]
    fn a_card_is_used_in_its_own_currency_only() {
        let mut card = GiftCard::default();
        assert_eq!(card.in_currency(&usd()), Err(GiftCardError::Unknown));
        card.apply(issued());
        assert_eq!(card.in_currency(&usd()), Ok(()));
        let eur = Asset::new("EUR", 2).unwrap();
        assert_eq!(
            card.in_currency(&eur),
            Err(GiftCardError::CurrencyMismatch {
                card: usd(),
                asked: eur
            })
        );
    }
}
