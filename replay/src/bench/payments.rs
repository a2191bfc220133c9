//! The `payments` workload: card payments through the command pipeline,
//! with the projection workers running. Each payment's intent is created
//! first (not measured); then the clients authorize and capture them (the
//! measured command pair: a card tender reserving the amount on the
//! processor's receivable, and a final capture posting it); then each
//! tenant's captures are settled in processor batches (every capture a
//! line, all tenants' batches at once), measured apart as lines/s.

use super::{cpu_now, key, wait_for_catch_up, BenchConfig, BenchError, CpuUse, Measured};
use aggregates::ids::{CaptureId, PaymentId, TenderId};
use aggregates::money::{Amount, Asset};
use aggregates::payments::settlement::{Line, LineType, LINES_MAX};
use aggregates::payments::{CaptureMode, IntentTerms, TenderMethod, TenderSource};
use aggregates::{EntryId, TenantId};
use commands::requests::payments::{AddTender, CapturePayment, CreatePayment, ImportSettlement};
use commands::server::start_bus;
use commands::{BusConfig, CommandBus, Metrics, Request};
use eventstore::EventStore;
use projections::Workers;
use std::sync::Arc;
use std::time::{Duration, Instant};
use uuid::Uuid;

/// Every payment's amount, in cents.
const AMOUNT: i64 = 1_000;

/// The processor's fee on each capture, in cents.
const FEE: i64 = 30;

const PROCESSOR: &str = "stripe";

/// What the settlement phase did.
pub(super) struct Settled {
    pub lines: usize,
    pub elapsed: Duration,
}

fn usd() -> Result<Asset, BenchError> {
    Asset::new("USD", 2).map_err(|error| BenchError::Setup(error.to_string()))
}

fn cents(value: i64) -> Result<Amount, BenchError> {
    Amount::new(value).map_err(|error| BenchError::Setup(error.to_string()))
}

/// The ids of payment `index`: its own, its tender's and its capture's.
fn ids(index: usize) -> (PaymentId, TenderId, CaptureId) {
    let index = index as u128;
    (
        PaymentId::from_uuid(Uuid::from_u128((1 << 64) | index)),
        TenderId::from_uuid(Uuid::from_u128((2 << 64) | index)),
        CaptureId::from_uuid(Uuid::from_u128((3 << 64) | index)),
    )
}

/// Submits `request` and fails the run unless it is accepted.
async fn accepted<R: Request>(
    bus: &CommandBus,
    tenant: TenantId,
    idempotency_key: String,
    request: R,
) -> Result<(), BenchError> {
    let outcome = bus
        .execute(tenant, key(idempotency_key)?, request)
        .await
        .map_err(|error| BenchError::Command(error.to_string()))?;
    if outcome.accepted() {
        Ok(())
    } else {
        Err(BenchError::Command(outcome.body.to_string()))
    }
}

/// Runs `step` for every payment index below `payments`, spread over
/// `clients` concurrent clients (each every `clients`th index); returns
/// the latencies the steps report, in milliseconds.
async fn each_payment<F, Fut>(
    clients: usize,
    payments: usize,
    step: F,
) -> Result<Vec<f64>, BenchError>
where
    F: Fn(usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<Vec<f64>, BenchError>> + Send,
{
    let mut tasks = Vec::with_capacity(clients);
    for client in 0..clients {
        let step = step.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            let mut index = client;
            while index < payments {
                latencies.extend(step(index).await?);
                index += clients;
            }
            Ok::<_, BenchError>(latencies)
        }));
    }
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(
            task.await
                .map_err(|error| BenchError::Command(error.to_string()))??,
        );
    }
    Ok(latencies)
}

/// Creates payment `index`'s intent (set up, not measured).
async fn create(
    bus: CommandBus,
    tenants: Arc<Vec<TenantId>>,
    index: usize,
) -> Result<Vec<f64>, BenchError> {
    let (payment_id, _, _) = ids(index);
    let request = CreatePayment {
        payment_id,
        terms: IntentTerms {
            amount: cents(AMOUNT)?,
            asset: usd()?,
            capture: CaptureMode::Manual,
            customer: None,
            description: None,
            authorization_ttl_seconds: 86_400,
            payee: None,
        },
    };
    let tenant = tenants[index % tenants.len()];
    accepted(&bus, tenant, format!("pay-{index}"), request).await?;
    Ok(Vec::new())
}

/// Authorizes payment `index` by card and captures it in full: the
/// measured pair; returns each command's latency.
async fn authorize_and_capture(
    bus: CommandBus,
    tenants: Arc<Vec<TenantId>>,
    index: usize,
) -> Result<Vec<f64>, BenchError> {
    let (payment_id, tender_id, capture_id) = ids(index);
    let tenant = tenants[index % tenants.len()];
    let tender = AddTender {
        payment_id,
        tender_id,
        method: TenderMethod::Card,
        source: TenderSource::Processor {
            processor: PROCESSOR.into(),
            reference: format!("ch_{index}"),
        },
        amount: cents(AMOUNT)?,
        asset: usd()?,
    };
    let sent = Instant::now();
    accepted(&bus, tenant, format!("tender-{index}"), tender).await?;
    let authorized = sent.elapsed().as_secs_f64() * 1000.0;
    let capture = CapturePayment {
        payment_id,
        tender_id,
        capture_id,
        amount: cents(AMOUNT)?,
        reference: Some(format!("cap_{index}")),
        last: true,
        processor: PROCESSOR.into(),
        asset: usd()?,
    };
    let sent = Instant::now();
    accepted(&bus, tenant, format!("capture-{index}"), capture).await?;
    Ok(vec![authorized, sent.elapsed().as_secs_f64() * 1000.0])
}

/// Every tenant's captures as settlement batches of at most
/// [`LINES_MAX`] lines, all imported at once; returns the lines.
async fn settle(
    bus: &CommandBus,
    tenants: &[TenantId],
    payments: usize,
) -> Result<usize, BenchError> {
    let mut batches = Vec::new();
    for (tenant_index, tenant) in tenants.iter().enumerate() {
        let mine: Vec<usize> = (tenant_index..payments).step_by(tenants.len()).collect();
        for (number, chunk) in mine.chunks(LINES_MAX).enumerate() {
            let lines = chunk
                .iter()
                .map(|index| Line {
                    line_type: LineType::Capture,
                    reference: format!("cap_{index}"),
                    gross: AMOUNT,
                    fee: FEE,
                    net: AMOUNT - FEE,
                })
                .collect();
            let request = ImportSettlement {
                processor: PROCESSOR.into(),
                batch_id: format!("b_{number}"),
                asset: usd()?,
                settled_at: chrono::Utc::now(),
                lines,
                payments: chunk.iter().map(|index| Some(ids(*index).0)).collect(),
                entry_id: EntryId::from_uuid(Uuid::from_u128(
                    (4 << 64) | ((tenant_index as u128) << 32) | number as u128,
                )),
            };
            let bus = bus.clone();
            let tenant = *tenant;
            batches.push(tokio::spawn(async move {
                accepted(&bus, tenant, format!("settle-{number}"), request).await
            }));
        }
    }
    for batch in batches {
        batch
            .await
            .map_err(|error| BenchError::Command(error.to_string()))??;
    }
    Ok(payments)
}

/// Runs the workload in process; returns what the command phase measured
/// and what the settlement phase did.
pub(super) async fn run_in_process(
    store: &EventStore,
    config: &BenchConfig,
) -> Result<(Measured, Settled), BenchError> {
    let metrics = Arc::new(Metrics::default());
    let bus = start_bus(
        store,
        BusConfig {
            shards: config.shards,
            pipeline_depth: config.pipeline_depth,
            ..BusConfig::default()
        },
        metrics.clone(),
    );
    let mut tenants = Vec::with_capacity(config.tenants);
    for index in 0..config.tenants {
        let tenant = store
            .create_tenant(&format!("bench-{index}"))
            .await
            .map_err(|error| BenchError::Setup(error.to_string()))?;
        tenants.push(tenant.tenant_id);
    }
    let tenants = Arc::new(tenants);
    // Each payment is a pair of measured commands.
    let payments = config.commands / 2;
    let workers = Workers::start(store, commands::domains::projections(), Vec::new());
    let (setup_bus, setup_tenants) = (bus.clone(), tenants.clone());
    each_payment(config.clients, payments, move |index| {
        create(setup_bus.clone(), setup_tenants.clone(), index)
    })
    .await?;
    // The intents' events are projected before the clock starts: only the
    // measured pairs' work is measured.
    wait_for_catch_up(store, Instant::now()).await?;
    let appends_started = metrics.append_totals();
    let cpu_started: CpuUse = cpu_now(None);
    let started = Instant::now();
    let (pair_bus, pair_tenants) = (bus.clone(), tenants.clone());
    let latencies = each_payment(config.clients, payments, move |index| {
        authorize_and_capture(pair_bus.clone(), pair_tenants.clone(), index)
    })
    .await?;
    let elapsed = started.elapsed();
    let cpu = cpu_now(None).since(cpu_started);
    let appends = metrics.append_totals().since(appends_started);
    let catch_up = wait_for_catch_up(store, Instant::now()).await?;
    let settling = Instant::now();
    let lines = settle(&bus, &tenants, payments).await?;
    let settled = Settled {
        lines,
        elapsed: settling.elapsed(),
    };
    wait_for_catch_up(store, Instant::now()).await?;
    bus.shutdown().await;
    workers.stop().await;
    Ok((
        Measured {
            latencies,
            elapsed,
            catch_up,
            rss_mb: super::peak_rss_mb(None),
            cpu,
            appends: Some(appends),
        },
        settled,
    ))
}
