//! Payout plans (versioned, each version immutable), role templates and
//! the tenant's directory of payees (what a pay run goes through).

use super::rules::{check_rules, PlanInEffect, PlanVersion, Rule};
use super::CompensationError;
use crate::decide::{handle_by_deciding, Decide};
use crate::money::Asset;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;

/// Aggregate type of payout plans; the id is the plan id.
pub const PLAN_AGGREGATE: &str = "compensation_plan";
/// Aggregate type of role templates; the id is the role id.
pub const ROLE_AGGREGATE: &str = "compensation_role";
/// Aggregate type of the payee directory; one per tenant, id [`DIRECTORY`].
pub const DIRECTORY_AGGREGATE: &str = "payee_directory";
/// The id of the tenant's payee directory.
pub const DIRECTORY: &str = "payees";
/// Most versions one plan has.
pub const VERSIONS_MAX: usize = 200;

/// A payout plan: its currency and its versions, oldest first.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub asset: Option<Asset>,
    pub versions: Vec<PlanVersion>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum PlanCommand {
    /// Creates the plan (with `asset`) or adds a version, effective on or
    /// after the last one's.
    AddVersion {
        asset: Option<Asset>,
        effective_from: DateTime<Utc>,
        rules: Vec<Rule>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanEvent {
    PlanCreated { asset: Asset, at: DateTime<Utc> },
    VersionAdded(PlanVersion),
}

impl DomainEvent for PlanEvent {
    fn event_type(&self) -> String {
        match self {
            Self::PlanCreated { .. } => "PlanCreated",
            Self::VersionAdded(_) => "VersionAdded",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Plan {
    /// The version in effect at `at`: the last one effective by then (of
    /// two effective from one instant, the later added).
    pub fn in_effect(&self, plan_id: &str, at: DateTime<Utc>) -> Option<PlanInEffect> {
        let version = self
            .versions
            .iter()
            .rev()
            .find(|version| version.effective_from <= at)?;
        Some(PlanInEffect {
            plan_id: plan_id.to_string(),
            asset: self.asset.clone()?,
            version: version.clone(),
        })
    }
}

impl Aggregate for Plan {
    const TYPE: &'static str = PLAN_AGGREGATE;
    type Command = PlanCommand;
    type Event = PlanEvent;
    type Error = CompensationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: PlanCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CompensationError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: PlanEvent) {
        match event {
            PlanEvent::PlanCreated { asset, .. } => self.asset = Some(asset),
            PlanEvent::VersionAdded(version) => self.versions.push(version),
        }
    }
}

impl Decide for Plan {
    fn decide(&self, command: PlanCommand) -> Result<Vec<PlanEvent>, CompensationError> {
        let PlanCommand::AddVersion {
            asset,
            effective_from,
            rules,
            at,
        } = command;
        check_rules(&rules)?;
        let mut events = Vec::new();
        match (&self.asset, asset) {
            (None, Some(asset)) => events.push(PlanEvent::PlanCreated { asset, at }),
            (None, None) => return Err(CompensationError::UnknownPlan),
            (Some(_), Some(_)) => return Err(CompensationError::Exists),
            (Some(_), None) => {}
        }
        if let Some(last) = self.versions.last() {
            if effective_from < last.effective_from {
                return Err(CompensationError::VersionBeforeLast {
                    last: last.effective_from,
                    asked: effective_from,
                });
            }
        }
        if self.versions.len() >= VERSIONS_MAX {
            return Err(CompensationError::InvalidRules(
                "a plan has at most 200 versions".into(),
            ));
        }
        let version = u32::try_from(self.versions.len() + 1).unwrap_or(u32::MAX);
        events.push(PlanEvent::VersionAdded(PlanVersion {
            version,
            effective_from,
            rules,
            added_at: at,
        }));
        Ok(events)
    }
}

/// A role template: a name and the default plan of its assignments.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Role {
    pub name: Option<String>,
    pub plan_id: Option<String>,
    pub created_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum RoleCommand {
    Create {
        name: String,
        plan_id: Option<String>,
        at: DateTime<Utc>,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RoleEvent {
    RoleCreated {
        name: String,
        plan_id: Option<String>,
        at: DateTime<Utc>,
    },
}

impl DomainEvent for RoleEvent {
    fn event_type(&self) -> String {
        "RoleCreated".to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Aggregate for Role {
    const TYPE: &'static str = ROLE_AGGREGATE;
    type Command = RoleCommand;
    type Event = RoleEvent;
    type Error = CompensationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: RoleCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CompensationError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: RoleEvent) {
        let RoleEvent::RoleCreated { name, plan_id, at } = event;
        self.name = Some(name);
        self.plan_id = plan_id;
        self.created_at = Some(at);
    }
}

impl Decide for Role {
    fn decide(&self, command: RoleCommand) -> Result<Vec<RoleEvent>, CompensationError> {
        let RoleCommand::Create { name, plan_id, at } = command;
        if self.name.is_some() {
            return Err(CompensationError::Exists);
        }
        Ok(vec![RoleEvent::RoleCreated { name, plan_id, at }])
    }
}

/// Every payee of the tenant, so a pay run goes through each.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Directory {
    pub payees: BTreeSet<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum DirectoryCommand {
    List { payee_id: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirectoryEvent {
    PayeeListed { payee_id: String },
}

impl DomainEvent for DirectoryEvent {
    fn event_type(&self) -> String {
        "PayeeListed".to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

impl Aggregate for Directory {
    const TYPE: &'static str = DIRECTORY_AGGREGATE;
    type Command = DirectoryCommand;
    type Event = DirectoryEvent;
    type Error = CompensationError;
    type Services = ();

    async fn handle(
        &mut self,
        command: DirectoryCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), CompensationError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: DirectoryEvent) {
        let DirectoryEvent::PayeeListed { payee_id } = event;
        self.payees.insert(payee_id);
    }
}

impl Decide for Directory {
    fn decide(&self, command: DirectoryCommand) -> Result<Vec<DirectoryEvent>, CompensationError> {
        let DirectoryCommand::List { payee_id } = command;
        if self.payees.contains(&payee_id) {
            return Err(CompensationError::Exists);
        }
        Ok(vec![DirectoryEvent::PayeeListed { payee_id }])
    }
}
