//! `GET /v1/reports/{name}`: a finance report of the calling tenant (the
//! tenant comes from the API key alone), from the read tables once they
//! have reached the report's seq, in JSON, CSV, HTML (downloads) or a
//! readable table.

use super::render::Format;
use super::{online, Point, Report, ReportError, ReportName};
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use commands::http::error::{ApiError, ErrorBody};
use commands::http::extract::{ApiPath, ApiQuery, Seq, Tenant};
use commands::http::read::tenant_read;
use commands::http::AppState;
use serde::Deserialize;
use serde_json::json;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(report))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ReportQuery {
    /// As of this tenant_seq (not with `as_of`, `from` or `to`).
    #[param(inline)]
    pub as_of_seq: Option<Seq>,
    /// As of this time (RFC 3339): what was recorded by then (not with
    /// `from` or `to`). At least 5 s past (422 `report_point_open`).
    #[param(value_type = Option<aggregates::time::BoundedTime>)]
    pub as_of: Option<aggregates::time::BoundedTime>,
    /// The period's start (with `to`), included: opening balances are what
    /// was recorded before it.
    #[param(value_type = Option<aggregates::time::BoundedTime>)]
    pub from: Option<aggregates::time::BoundedTime>,
    /// The period's end (with `from`), not included: the next period
    /// starts there. At least 5 s past (422 `report_point_open`).
    #[param(value_type = Option<aggregates::time::BoundedTime>)]
    pub to: Option<aggregates::time::BoundedTime>,
    /// `json` (default; amounts in minor units), `csv`, `html` (one
    /// self-contained page) or `table`.
    #[param(inline)]
    pub format: Option<Format>,
    /// Days after which a capture or refund in no settlement batch is a
    /// break of class `missing_in_settlement` (payments); default 3.
    #[param(inline)]
    pub settlement_window_days: Option<WindowDays>,
}

/// A settlement window: 0 to 365 days.
#[derive(Debug, Clone, Copy)]
pub struct WindowDays(pub i64);

impl<'de> Deserialize<'de> for WindowDays {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let value = i64::deserialize(deserializer)?;
        if !(0..=super::SETTLEMENT_WINDOW_DAYS_MAX).contains(&value) {
            return Err(serde::de::Error::custom(format!(
                "invalid value: {value}, expected 0 to {} days",
                super::SETTLEMENT_WINDOW_DAYS_MAX
            )));
        }
        Ok(Self(value))
    }
}

impl utoipa::PartialSchema for WindowDays {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        aggregates::schema::integer(0)
            .maximum(Some(super::SETTLEMENT_WINDOW_DAYS_MAX))
            .into()
    }
}

impl ToSchema for WindowDays {}

/// 422: the parameters' combination, which no schema states.
fn bad(code: &'static str, message: String) -> ApiError {
    ApiError::Unprocessable {
        code,
        message,
        details: json!({}),
    }
}

impl ReportQuery {
    fn point(&self) -> Result<Point, ApiError> {
        let point = match (self.as_of_seq, self.as_of, self.from, self.to) {
            (Some(seq), None, None, None) => Point::Seq(seq.0),
            (None, Some(at), None, None) => Point::Time(at.get()),
            (None, None, Some(from), Some(to)) => Point::Period {
                from: from.get(),
                to: to.get(),
            },
            (None, None, None, None) => Point::Head,
            _ => {
                return Err(bad(
                    "invalid_report_point",
                    "give one of as_of_seq, as_of, or from and to together".into(),
                ))
            }
        };
        point
            .check()
            .map_err(|error| bad("invalid_report_point", error.to_string()))
    }
}

fn refused(error: ReportError) -> ApiError {
    match error {
        ReportError::Ahead { asked, head } => ApiError::Unprocessable {
            code: "as_of_seq_ahead",
            message: error.to_string(),
            details: json!({"as_of_seq": asked, "tenant_seq": head}),
        },
        ReportError::Invalid(message) => bad("invalid_report_point", message),
        ReportError::Open { to, closes_at } => ApiError::Unprocessable {
            code: "report_point_open",
            message: error.to_string(),
            details: json!({"to": to, "closes_at": closes_at}),
        },
        ReportError::Database(error) => ApiError::from(error),
        // A stored row or event that does not read back: a defect, logged.
        other => ApiError::Internal(other.to_string()),
    }
}

/// A finance report of the calling tenant: its header (tenant, the
/// tenant_seq it is as of, the chain hash there, the period), its tie-out
/// (each figure beside an independent one, and whether they agree), and
/// its tables. `trial-balance`: per account and asset, opening balance,
/// period debits and credits, closing balance; totals per asset.
/// `payments`: per currency the waterfall (authorized to paid out), the
/// unsettled items with their age, the breaks with their age bucket (an
/// item unsettled past 3 days is one, `missing_in_settlement`); ages are
/// counted to `to` or `as_of` when given, else to the last event's time
/// (`aged_as_of`). The domain reports' figures are cumulative to the
/// period's end.
/// `payroll`: per pay run and payee what it claimed by kind, carried in,
/// net, paid and carried out; per payee accrued, held, payable, in a run,
/// paid, carried. `escrow`: per commitment total, funded, released, refunded, frozen and
/// held, each release and refund with its lineage; totals per currency. The
/// period is of recorded time, so a report of a closed period is the same
/// on any later day. CSV and HTML come as downloads.
#[utoipa::path(
    get,
    path = "/v1/reports/{name}",
    tag = "journal",
    params(("name" = inline(ReportName), Path, description = "The report"), ReportQuery),
    security(("api_key" = [])),
    responses(
        (status = 200, description = "The report; `Ledger-Tie-Out` says `agrees` or `differs`", content(
            (Object = "application/json"),
            (String = "text/csv"),
            (String = "text/html"),
            (String = "text/plain"),
        )),
        (status = 400, description = "An invalid query parameter or name", body = ErrorBody),
        (status = 422, description = "`invalid_report_point`: as_of_seq, as_of, from and to mixed, or a period ending before it starts; `as_of_seq_ahead`: beyond the tenant's last seq (details: as_of_seq, tenant_seq); `report_point_open`: an `as_of` or a period's `to` less than 5 s past (or in the future), which later requests could still be recorded at or before (details: to, closes_at)", body = ErrorBody),
        (status = 503, description = "`projection_lagging`: a read table the report reads did not reach its seq in time; or `database_unavailable`", body = ErrorBody),
    )
)]
async fn report(
    State(app): State<AppState>,
    Tenant(tenant_id): Tenant,
    ApiPath(name): ApiPath<ReportName>,
    ApiQuery(query): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let point = query.point()?.closed(app.bus.now()).map_err(refused)?;
    if point.to().is_some() {
        app.store.settle(tenant_id).await?;
    }
    let format = query.format.unwrap_or(Format::Json);
    let mut reading = projections::read::begin_tenant_read(app.store.pool(), tenant_id).await?;
    let seq = online::seq_of(&mut reading, tenant_id, point)
        .await
        .map_err(refused)?;
    reading.commit().await?;
    // One report of a tenant at a time (they sum the tenant's journal), as
    // replays are bounded.
    let _reporting = app.replays.try_acquire(tenant_id)?;
    // Every read table it reads but the journal's waited for first, then
    // the journal's, which it reads in.
    for projection in name.projections().into_iter().skip(1) {
        tenant_read(&app, tenant_id, projection, Some(Seq(seq)), |_| {
            Box::pin(async { Ok(()) })
        })
        .await?;
    }
    let options = super::Options {
        settlement_window_days: query
            .settlement_window_days
            .map_or(super::payments::SETTLEMENT_WINDOW_DAYS, |days| days.0),
    };
    let (computed, _) = tenant_read(
        &app,
        tenant_id,
        projections::journal::NAME,
        Some(Seq(seq)),
        move |connection| {
            Box::pin(async move {
                Ok(online::report(connection, tenant_id, name, (point, options), seq).await)
            })
        },
    )
    .await?;
    let report = computed.map_err(refused)?;
    Ok(respond(&report, format))
}

fn respond(report: &Report, format: Format) -> Response {
    let body = format.render(report);
    let tie_out = if report.ties_out() {
        "agrees"
    } else {
        "differs"
    };
    let mut response = (
        [
            (header::CONTENT_TYPE, format.content_type().to_string()),
            (
                header::HeaderName::from_static("ledger-tie-out"),
                tie_out.to_string(),
            ),
        ],
        body,
    )
        .into_response();
    if matches!(format, Format::Csv | Format::Html) {
        let file = format!(
            "attachment; filename=\"{}-{}.{}\"",
            report.name.as_str(),
            report.scope.as_of_seq,
            format.extension()
        );
        if let Ok(value) = header::HeaderValue::from_str(&file) {
            response
                .headers_mut()
                .insert(header::CONTENT_DISPOSITION, value);
        }
    }
    response
}
