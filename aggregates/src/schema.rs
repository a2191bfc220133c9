//! The OpenAPI schemas of the types that parse client input, declared beside
//! the parsing (an amount's bounds, an account's pattern, a text's length),
//! so that the document states exactly what is accepted.

use crate::ids::{GrantId, TenantId};
use crate::journal::account::AccountCode;
use crate::money::{Amount, Asset, Total};
use crate::quota::QuotaAccount;
use crate::text::Text;
use crate::time::BoundedTime;
use std::borrow::Cow;
use utoipa::openapi::schema::{
    KnownFormat, ObjectBuilder, OneOfBuilder, Schema, SchemaFormat, Type,
};
use utoipa::openapi::RefOr;
use utoipa::{PartialSchema, ToSchema};

/// The pattern of a client's text: no control character (Unicode Cc).
pub const TEXT_PATTERN: &str = r"^[^\u0000-\u001F\u007F-\u009F]*$";

/// The pattern of a quota account (what [`QuotaAccount::parse`] accepts).
pub const QUOTA_ACCOUNT_PATTERN: &str = r"^[A-Za-z0-9_.-]{1,64}$";

/// A 64-bit integer of at least `minimum`.
pub fn integer(minimum: i64) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::Integer)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
        .minimum(Some(minimum))
        .maximum(Some(i64::MAX))
}

/// Text of 1 to `max_chars` characters matching `pattern`.
pub fn text(max_chars: usize, pattern: &str) -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .min_length(Some(1))
        .max_length(Some(max_chars))
        .pattern(Some(pattern))
}

/// `schema`, or `null`.
pub fn nullable(schema: RefOr<Schema>) -> RefOr<Schema> {
    OneOfBuilder::new()
        .item(ObjectBuilder::new().schema_type(Type::Null))
        .item(schema)
        .into()
}

fn uuid() -> ObjectBuilder {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .format(Some(SchemaFormat::KnownFormat(KnownFormat::Uuid)))
}

impl PartialSchema for Amount {
    fn schema() -> RefOr<Schema> {
        integer(0)
            .description(Some("An amount in minor units, a non-negative integer"))
            .into()
    }
}

impl ToSchema for Amount {}

impl PartialSchema for Total {
    fn schema() -> RefOr<Schema> {
        OneOfBuilder::new()
            .item(integer(0))
            .item(
                ObjectBuilder::new()
                    .schema_type(Type::String)
                    .pattern(Some("^[0-9]{19,39}$")),
            )
            .description(Some(
                "A total in minor units: a non-negative integer while it fits 64 bits, \
                 else its digits as a string",
            ))
            .into()
    }
}

impl ToSchema for Total {}

impl<const MAX: usize> PartialSchema for Text<MAX> {
    fn schema() -> RefOr<Schema> {
        text(MAX, TEXT_PATTERN).into()
    }
}

impl<const MAX: usize> ToSchema for Text<MAX> {
    fn name() -> Cow<'static, str> {
        Cow::Owned(format!("Text{MAX}"))
    }
}

impl PartialSchema for QuotaAccount {
    fn schema() -> RefOr<Schema> {
        text(64, QUOTA_ACCOUNT_PATTERN)
            .description(Some(
                "A quota account of the tenant (an end user, a project): 1-64 of A-Z, a-z, 0-9, _, . and -",
            ))
            .into()
    }
}

impl ToSchema for QuotaAccount {}

/// The years a client's time may name (1970 to 9999, see
/// [`crate::time::TIME_MIN`]).
pub const TIME_YEAR_PATTERN: &str = r"^(19[7-9][0-9]|[2-9][0-9]{3})-";

impl PartialSchema for BoundedTime {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .format(Some(SchemaFormat::KnownFormat(KnownFormat::DateTime)))
            .pattern(Some(TIME_YEAR_PATTERN))
            .description(Some(
                "RFC 3339, 1970-01-01T00:00:00Z to 9999-12-31T23:59:59.999999Z",
            ))
            .into()
    }
}

impl ToSchema for BoundedTime {}

/// The pattern of an account code (what [`AccountCode::parse`] accepts).
pub const ACCOUNT_CODE_PATTERN: &str = r"^[A-Za-z0-9_.:@/-]{1,200}$";

impl PartialSchema for AccountCode {
    fn schema() -> RefOr<Schema> {
        text(200, ACCOUNT_CODE_PATTERN)
            .description(Some(
                "An account code: 1-200 of A-Z, a-z, 0-9, _, ., :, @, / and -",
            ))
            .into()
    }
}

impl ToSchema for AccountCode {}

/// The pattern of an asset (what [`Asset`] parses): a code of 1-12 of
/// A-Z, 0-9 and _ starting with a letter, `/`, a scale of 0 to 18.
pub const ASSET_PATTERN: &str = r"^[A-Z][A-Z0-9_]{0,11}/([0-9]|1[0-8])$";

impl PartialSchema for Asset {
    fn schema() -> RefOr<Schema> {
        text(15, ASSET_PATTERN)
            .description(Some("An asset and its scale: USD/2, JPY/0"))
            .into()
    }
}

impl ToSchema for Asset {}

impl PartialSchema for GrantId {
    fn schema() -> RefOr<Schema> {
        uuid().into()
    }
}

impl ToSchema for GrantId {}

impl PartialSchema for TenantId {
    fn schema() -> RefOr<Schema> {
        uuid().into()
    }
}

impl ToSchema for TenantId {}

impl PartialSchema for crate::ids::EntryId {
    fn schema() -> RefOr<Schema> {
        uuid().into()
    }
}

impl ToSchema for crate::ids::EntryId {}

impl PartialSchema for crate::ids::HoldId {
    fn schema() -> RefOr<Schema> {
        uuid().into()
    }
}

impl ToSchema for crate::ids::HoldId {}

impl PartialSchema for crate::text::Name {
    fn schema() -> RefOr<Schema> {
        text(64, crate::text::NAME_PATTERN)
            .description(Some(
                "A name another system gives: 1-64 of A-Za-z0-9_.- starting with a letter or digit",
            ))
            .into()
    }
}

impl ToSchema for crate::text::Name {}

/// The ids a payment hands out, each a UUID.
macro_rules! uuid_schemas {
    ($($id:ty),*) => {$(
        impl PartialSchema for $id {
            fn schema() -> RefOr<Schema> {
                uuid().into()
            }
        }

        impl ToSchema for $id {}
    )*};
}

uuid_schemas!(
    crate::ids::PaymentId,
    crate::ids::TenderId,
    crate::ids::CaptureId,
    crate::ids::RefundId,
    crate::ids::DisputeId,
    crate::ids::CommitmentId,
    crate::ids::DepositId,
    crate::ids::TransferId,
    crate::ids::ClaimId,
    crate::ids::LineId,
    crate::ids::PayRunId
);

/// A currency of [`crate::money::CURRENCIES`].
pub struct Currency;

impl PartialSchema for Currency {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(crate::money::CURRENCIES.iter().map(|(code, _)| *code)))
            .description(Some(
                "An ISO 4217 currency; amounts are in its minor units (USD, EUR: cents; JPY: yen)",
            ))
            .into()
    }
}

impl ToSchema for Currency {}
