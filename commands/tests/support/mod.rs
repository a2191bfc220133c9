//! A small test-only domain: counters with a limit, and requests on them.

#![allow(dead_code)]

pub mod app;

use aggregates::{handle_by_deciding, Decide, Rejection, RejectionKind};
use commands::{Decider, Refusal, Reply, Request, Target};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// A counter that refuses to pass its limit (default 10).
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Counter {
    pub total: i64,
    pub limit: Option<i64>,
}

impl Counter {
    pub fn limit(&self) -> i64 {
        self.limit.unwrap_or(10)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum CounterCommand {
    Add { amount: i64 },
    RaiseLimit { to: i64 },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CounterEvent {
    Added { amount: i64 },
    LimitRaised { to: i64 },
}

impl DomainEvent for CounterEvent {
    fn event_type(&self) -> String {
        match self {
            Self::Added { .. } => "CounterAdded".into(),
            Self::LimitRaised { .. } => "CounterLimitRaised".into(),
        }
    }
    fn event_version(&self) -> String {
        "1".into()
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CounterError {
    #[error("amount must be positive")]
    NotPositive,
    #[error("adding {amount} would pass the limit; {available} left")]
    OverLimit { amount: i64, available: i64 },
}

impl Rejection for CounterError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::NotPositive => RejectionKind::Invalid,
            Self::OverLimit { .. } => RejectionKind::QuotaExceeded,
        }
    }
    fn code(&self) -> &'static str {
        match self {
            Self::NotPositive => "invalid_amount",
            Self::OverLimit { .. } => "over_limit",
        }
    }
    fn details(&self) -> serde_json::Value {
        match self {
            Self::NotPositive => serde_json::Value::Null,
            Self::OverLimit { available, .. } => json!({ "available": available }),
        }
    }
}

impl Aggregate for Counter {
    const TYPE: &'static str = "counter";
    type Command = CounterCommand;
    type Event = CounterEvent;
    type Error = CounterError;
    type Services = ();

    async fn handle(
        &mut self,
        command: CounterCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CounterError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: CounterEvent) {
        match event {
            CounterEvent::Added { amount } => self.total += amount,
            CounterEvent::LimitRaised { to } => self.limit = Some(to),
        }
    }
}

impl Decide for Counter {
    fn decide(&self, command: CounterCommand) -> Result<Vec<CounterEvent>, CounterError> {
        match command {
            CounterCommand::Add { amount } => {
                if amount <= 0 {
                    return Err(CounterError::NotPositive);
                }
                let available = self.limit() - self.total;
                if amount > available {
                    return Err(CounterError::OverLimit { amount, available });
                }
                Ok(vec![CounterEvent::Added { amount }])
            }
            CounterCommand::RaiseLimit { to } => Ok(vec![CounterEvent::LimitRaised { to }]),
        }
    }
}

/// Adds to one counter.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddToCounter {
    pub counter: String,
    pub amount: i64,
}

impl Request for AddToCounter {
    const KIND: &'static str = "add_to_counter";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Counter>(&self.counter)]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        decider.execute::<Counter>(
            &self.counter,
            CounterCommand::Add {
                amount: self.amount,
            },
        )?;
        let total = decider.state::<Counter>(&self.counter)?.total;
        Reply::ok(&self.counter, &json!({ "total": total }))
    }
}

/// Raises one counter's limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RaiseLimit {
    pub counter: String,
    pub to: i64,
}

impl Request for RaiseLimit {
    const KIND: &'static str = "raise_limit";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Counter>(&self.counter)]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        decider.execute::<Counter>(&self.counter, CounterCommand::RaiseLimit { to: self.to })?;
        Reply::ok(&self.counter, &json!({ "limit": self.to }))
    }
}

/// Adds the same amount to two counters, atomically.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AddToBoth {
    pub first: String,
    pub second: String,
    pub amount: i64,
}

impl Request for AddToBoth {
    const KIND: &'static str = "add_to_both";

    fn targets(&self) -> Vec<Target> {
        vec![
            Target::of::<Counter>(&self.first),
            Target::of::<Counter>(&self.second),
        ]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        decider.execute::<Counter>(
            &self.first,
            CounterCommand::Add {
                amount: self.amount,
            },
        )?;
        decider.execute::<Counter>(
            &self.second,
            CounterCommand::Add {
                amount: self.amount,
            },
        )?;
        Reply::created(&self.first, &json!({}))
    }
}

/// Reads a counter through a request that touches it without events; used to
/// observe the pipeline's view of state.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ReadCounter {
    pub counter: String,
    pub nonce: String,
}

impl Request for ReadCounter {
    const KIND: &'static str = "read_counter";

    fn targets(&self) -> Vec<Target> {
        vec![Target::of::<Counter>(&self.counter)]
    }

    fn decide(&self, decider: &mut Decider<'_>) -> Result<Reply, Refusal> {
        let counter = decider.state::<Counter>(&self.counter)?;
        Reply::ok(
            &self.counter,
            &json!({ "total": counter.total, "limit": counter.limit() }),
        )
    }
}
