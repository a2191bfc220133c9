//! One scale per asset code in a tenant: the first use of a code fixes its
//! scale, and `USD/3` is refused where `USD/2` is in use.
//!
//! An asset code is an aggregate (its id the code); a request that moves an
//! asset names it among its targets, so two requests cannot fix two scales.

use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::money::Asset;
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Aggregate type of asset codes; the aggregate id is the code.
pub const ASSET_AGGREGATE: &str = "asset";

/// An asset code's scale in a tenant, once fixed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AssetScale {
    pub asset: Option<Asset>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum AssetCommand {
    /// Uses `asset`: fixes its scale the first time, checks it after.
    Use { asset: Asset },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssetEvent {
    AssetScaleFixed { asset: Asset },
}

impl DomainEvent for AssetEvent {
    fn event_type(&self) -> String {
        match self {
            Self::AssetScaleFixed { .. } => "AssetScaleFixed".to_string(),
        }
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AssetError {
    #[error("{code} has scale {scale} in this tenant; {asked} is refused")]
    OtherScale {
        code: String,
        scale: u8,
        asked: String,
    },
    #[error("{code} is a currency of scale {scale} (ISO 4217 minor unit), as every domain posts it; {asked} is refused")]
    CurrencyScale {
        code: String,
        scale: u8,
        asked: String,
    },
}

/// Refused (`asset_scale_mismatch`) when `asset` is a currency of
/// [`crate::money::CURRENCIES`] at another scale than its minor unit. The
/// first use of a code fixes its scale in the tenant, and payments,
/// escrow and compensation post every currency at its minor unit: a
/// journal entry fixing `USD/3` would refuse all of them in USD after it.
pub fn currency_scale(asset: &Asset) -> Result<(), AssetError> {
    match crate::money::currency(asset.code()) {
        Some(currency) if currency.scale() != asset.scale() => Err(AssetError::CurrencyScale {
            code: currency.code().to_string(),
            scale: currency.scale(),
            asked: asset.to_string(),
        }),
        _ => Ok(()),
    }
}

impl Rejection for AssetError {
    fn kind(&self) -> RejectionKind {
        RejectionKind::RuleBroken
    }

    fn code(&self) -> &'static str {
        "asset_scale_mismatch"
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::OtherScale { code, scale, asked }
            | Self::CurrencyScale { code, scale, asked } => {
                serde_json::json!({"code": code, "scale": scale, "asked": asked})
            }
        }
    }
}

impl Aggregate for AssetScale {
    const TYPE: &'static str = ASSET_AGGREGATE;
    type Command = AssetCommand;
    type Event = AssetEvent;
    type Error = AssetError;
    type Services = ();

    async fn handle(
        &mut self,
        command: AssetCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), AssetError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: AssetEvent) {
        match event {
            AssetEvent::AssetScaleFixed { asset } => self.asset = Some(asset),
        }
    }
}

/// The scale a domain fixes for a code in every tenant (the quota units,
/// `SEATS/0`, `RUNS/0`, `CREDITS/0`, which the quota domain posts without
/// naming their asset aggregate), if any.
pub fn fixed_scale(code: &str) -> Option<u8> {
    crate::quota::QuotaType::ALL
        .into_iter()
        .map(crate::quota::QuotaType::asset)
        .find(|asset| asset.code() == code)
        .map(|asset| asset.scale())
}

impl Decide for AssetScale {
    fn decide(&self, command: AssetCommand) -> Result<Vec<AssetEvent>, AssetError> {
        let AssetCommand::Use { asset } = command;
        if let Some(scale) = fixed_scale(asset.code()).filter(|scale| *scale != asset.scale()) {
            return Err(AssetError::OtherScale {
                code: asset.code().to_string(),
                scale,
                asked: asset.to_string(),
            });
        }
        match &self.asset {
            None => Ok(vec![AssetEvent::AssetScaleFixed { asset }]),
            Some(fixed) if *fixed == asset => Ok(Vec::new()),
            Some(fixed) => Err(AssetError::OtherScale {
                code: fixed.code().to_string(),
                scale: fixed.scale(),
                asked: asset.to_string(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<AssetScale>;

    fn usd(scale: u8) -> Asset {
        Asset::new("USD", scale).unwrap()
    }

    #[test]
    fn the_first_use_fixes_the_scale_and_later_uses_at_it_are_nothing() {
        Given::with(())
            .given_no_previous_events()
            .when(AssetCommand::Use { asset: usd(2) })
            .then_expect_events(vec![AssetEvent::AssetScaleFixed { asset: usd(2) }]);
        Given::with(())
            .given(vec![AssetEvent::AssetScaleFixed { asset: usd(2) }])
            .when(AssetCommand::Use { asset: usd(2) })
            .then_expect_events(vec![]);
    }

    #[test]
    fn the_quota_units_keep_their_scale_in_every_tenant() {
        Given::with(())
            .given_no_previous_events()
            .when(AssetCommand::Use {
                asset: Asset::new("CREDITS", 2).unwrap(),
            })
            .then_expect_error(AssetError::OtherScale {
                code: "CREDITS".into(),
                scale: 0,
                asked: "CREDITS/2".into(),
            });
        Given::with(())
            .given_no_previous_events()
            .when(AssetCommand::Use {
                asset: Asset::new("CREDITS", 0).unwrap(),
            })
            .then_expect_events(vec![AssetEvent::AssetScaleFixed {
                asset: Asset::new("CREDITS", 0).unwrap(),
            }]);
    }

    #[test]
    fn a_currency_is_taken_at_its_minor_unit_only() {
        assert_eq!(currency_scale(&usd(2)), Ok(()));
        assert_eq!(currency_scale(&Asset::new("JPY", 0).unwrap()), Ok(()));
        assert_eq!(currency_scale(&Asset::new("POINTS", 3).unwrap()), Ok(()));
        let error = currency_scale(&usd(3)).unwrap_err();
        assert_eq!(
            error,
            AssetError::CurrencyScale {
                code: "USD".into(),
                scale: 2,
                asked: "USD/3".into(),
            }
        );
        assert_eq!(error.code(), "asset_scale_mismatch");
        assert_eq!(
            error.details(),
            serde_json::json!({"code": "USD", "scale": 2, "asked": "USD/3"})
        );
        assert_eq!(
            error.to_string(),
            "USD is a currency of scale 2 (ISO 4217 minor unit), as every domain posts it; USD/3 is refused"
        );
        assert_eq!(
            currency_scale(&Asset::new("JPY", 2).unwrap())
                .unwrap_err()
                .code(),
            "asset_scale_mismatch"
        );
    }

    #[test]
    fn another_scale_of_the_same_code_is_refused() {
        Given::with(())
            .given(vec![AssetEvent::AssetScaleFixed { asset: usd(2) }])
            .when(AssetCommand::Use { asset: usd(3) })
            .then_expect_error(AssetError::OtherScale {
                code: "USD".into(),
                scale: 2,
                asked: "USD/3".into(),
            });
        let error = AssetError::OtherScale {
            code: "USD".into(),
            scale: 2,
            asked: "USD/3".into(),
        };
        assert_eq!(error.code(), "asset_scale_mismatch");
        assert_eq!(
            error.to_string(),
            "USD has scale 2 in this tenant; USD/3 is refused"
        );
    }
}
