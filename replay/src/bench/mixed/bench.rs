//! `ledger bench --workload mixed`: the mixed flows over HTTP against a
//! `ledger serve` child, every tenant set up first (not measured); then
//! the clients run flows until the commands are done. The run checks its
//! own effects: every flow's events once, and every commission and
//! scheduled release once the process managers and the scheduler caught
//! up.

use super::{expected, set_up_tenant, Kind, Load, Target, SETTLE_EVERY};
use crate::bench::{
    cpu_now, peak_rss_mb, serve_for, wait_for_catch_up, BenchConfig, BenchError, Measured,
    ADMIN_TOKEN,
};
use eventstore::{Database, EventStore};
use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Longest the process managers and the scheduler may take to react to
/// every flow after the last command.
const REACTIONS_BOUND: Duration = Duration::from_secs(120);

/// How often the effects are counted while waiting for the reactions (a
/// count scans the events).
const REACTIONS_POLL: Duration = Duration::from_millis(250);

/// What the mixed run did beyond [`Measured`].
pub struct Mix {
    /// Commands acknowledged.
    pub commands: usize,
    /// Flows run, by kind.
    pub flows: BTreeMap<Kind, usize>,
}

/// Runs the mixed workload over HTTP on `database`.
pub(crate) async fn run_http(
    database: &Database,
    store: &EventStore,
    config: &BenchConfig,
) -> Result<(Measured, Mix), BenchError> {
    let (server, client) = serve_for(database, config)?;
    let mut setting_up = Vec::with_capacity(config.tenants);
    for index in 0..config.tenants {
        let (client, base, accounts) = (client.clone(), server.base.clone(), config.accounts);
        setting_up.push(tokio::spawn(async move {
            set_up_tenant(&client, &base, ADMIN_TOKEN, index, accounts).await
        }));
    }
    let mut keys = Vec::with_capacity(config.tenants);
    for task in setting_up {
        keys.push(
            task.await
                .map_err(|error| BenchError::Setup(error.to_string()))?
                .map_err(|error| BenchError::Setup(error.to_string()))?,
        );
    }
    let load = Arc::new(Load::new(config.commands, SETTLE_EVERY));
    wait_for_catch_up(store, Instant::now()).await?;
    let cpu_started = cpu_now(Some(server.child.id()));
    let started = Instant::now();
    let mut clients = Vec::with_capacity(config.clients);
    for index in 0..config.clients {
        let target = Target {
            client: client.clone(),
            base: server.base.clone(),
            api_key: keys[index % keys.len()].clone(),
        };
        let (load, accounts) = (load.clone(), config.accounts);
        clients.push(tokio::spawn(async move {
            let record = super::Record::default();
            let run =
                super::run_client(target, format!("c{index}"), accounts, &load, &record).await;
            (run, record.latencies_ms())
        }));
    }
    let mut flows = Vec::new();
    let mut latencies = Vec::new();
    for task in clients {
        let (run, measured) = task
            .await
            .map_err(|error| BenchError::Command(error.to_string()))?;
        if let Some(error) = run.ended {
            return Err(BenchError::Command(error.to_string()));
        }
        flows.extend(run.flows);
        latencies.extend(measured);
    }
    let elapsed = started.elapsed();
    let cpu = cpu_now(Some(server.child.id())).since(cpu_started);
    let catch_up = wait_for_catch_up(store, Instant::now()).await?;
    check_effects(store, &flows).await?;
    let rss_mb = peak_rss_mb(Some(server.child.id()));
    drop(server);
    let mut by_kind = BTreeMap::new();
    for flow in &flows {
        *by_kind.entry(flow.kind).or_insert(0) += 1;
    }
    Ok((
        Measured {
            latencies,
            elapsed,
            catch_up,
            rss_mb,
            cpu,
            appends: None,
        },
        Mix {
            commands: load.commands.load(Ordering::SeqCst),
            flows: by_kind,
        },
    ))
}

/// Fails the run unless every flow made its events once, the commissions
/// and timed-out releases included (waited for, bounded), the holds of
/// the commissions aside (they fall due 30 days on); and each commission
/// and each timed-out release came under a key of its own.
async fn check_effects(store: &EventStore, flows: &[super::Flow]) -> Result<(), BenchError> {
    let expected = expected(flows);
    let mut wanted = expected.events.clone();
    wanted.remove("LinePayable");
    wait_for_counts(store, &wanted).await?;
    let escrows = wanted.get("CommitmentCreated").copied().unwrap_or(0);
    for (pattern, event_type, count) in [
        ("pm:commissions:%", "LineAccrued", expected.commissions),
        ("pm:scheduler:%", "InspectionClosed", escrows),
    ] {
        let (events, keys) = super::reactions_under(store, pattern, &[event_type]).await?;
        if (events, keys) != (count, count) {
            return Err(BenchError::Setup(format!(
                "{event_type} under {pattern}: {events} events, {keys} keys, of {count}"
            )));
        }
    }
    Ok(())
}

/// Waits (bounded) until the store holds `wanted` events of each type.
async fn wait_for_counts(
    store: &EventStore,
    wanted: &BTreeMap<&'static str, i64>,
) -> Result<(), BenchError> {
    let started = Instant::now();
    loop {
        let counts = super::event_counts(store).await?;
        let differing: Vec<String> = wanted
            .iter()
            .filter(|(event_type, count)| counts.get(**event_type).copied().unwrap_or(0) != **count)
            .map(|(event_type, count)| {
                format!(
                    "{event_type}: {} of {count}",
                    counts.get(*event_type).copied().unwrap_or(0)
                )
            })
            .collect();
        if differing.is_empty() {
            return Ok(());
        }
        if started.elapsed() > REACTIONS_BOUND {
            return Err(BenchError::Setup(format!(
                "the flows' effects differ after {REACTIONS_BOUND:?}: {}",
                differing.join(", ")
            )));
        }
        tokio::time::sleep(REACTIONS_POLL).await;
    }
}
