//! A journal entry as an aggregate (its id the entry id): recorded once with
//! its effective time and reference, and reversed at most once, by an entry
//! that is its exact mirror. Nothing is edited: a correction is a reversal.

use super::{JournalEntry, JournalError, Posting, Side};
use crate::decide::{handle_by_deciding, Decide, Rejection, RejectionKind};
use crate::ids::EntryId;
use chrono::{DateTime, Utc};
use cqrs_es::event_sink::EventSink;
use cqrs_es::{Aggregate, DomainEvent};
use serde::{Deserialize, Serialize};

/// Aggregate type of journal entries; the aggregate id is the entry id.
pub const ENTRY_AGGREGATE: &str = "entry";

/// Longest entry reference, in characters.
pub const ENTRY_REFERENCE_LENGTH_MAX: usize = 200;

impl JournalEntry {
    /// The exact mirror: every posting on the other side.
    pub fn mirror(&self) -> Result<JournalEntry, JournalError> {
        JournalEntry::new(
            self.postings()
                .iter()
                .map(|posting| Posting {
                    side: match posting.side {
                        Side::Debit => Side::Credit,
                        Side::Credit => Side::Debit,
                    },
                    ..posting.clone()
                })
                .collect(),
        )
    }
}

/// A recorded entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recorded {
    pub entry: JournalEntry,
    pub effective_at: DateTime<Utc>,
    pub reference: Option<String>,
    /// The entry this one reverses.
    pub reverses: Option<EntryId>,
    /// The kind of the request that recorded it (since rules 7; none
    /// before): the journal reverses only its own entries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub recorded_by: Option<String>,
}

/// An entry's state.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub recorded: Option<Recorded>,
    /// The entry that reversed this one.
    pub reversed_by: Option<EntryId>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum EntryCommand {
    Record(Recorded),
    /// Marks the entry reversed by `by` (whose record is the mirror).
    Reverse {
        by: EntryId,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EntryEvent {
    EntryRecorded(Recorded),
    EntryReversed { by: EntryId },
}

impl DomainEvent for EntryEvent {
    fn event_type(&self) -> String {
        match self {
            Self::EntryRecorded(_) => "EntryRecorded",
            Self::EntryReversed { .. } => "EntryReversed",
        }
        .to_string()
    }

    fn event_version(&self) -> String {
        "1".to_string()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("the entry exists already")]
    Exists,
    #[error("no such entry")]
    Unknown,
    #[error("the entry was reversed already, by {by}")]
    AlreadyReversed { by: EntryId },
    #[error("reference: {0}")]
    InvalidReference(crate::text::TextError),
    #[error(transparent)]
    TimeOutOfRange(#[from] crate::time::TimeOutOfRange),
}

impl Rejection for EntryError {
    fn kind(&self) -> RejectionKind {
        match self {
            Self::Unknown => RejectionKind::NotFound,
            Self::InvalidReference(_) | Self::TimeOutOfRange(_) => RejectionKind::Invalid,
            _ => RejectionKind::RuleBroken,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            Self::Exists => "entry_exists",
            Self::Unknown => "unknown_entry",
            Self::AlreadyReversed { .. } => "entry_already_reversed",
            Self::InvalidReference(_) => "invalid_reference",
            Self::TimeOutOfRange(_) => "time_out_of_range",
        }
    }

    fn details(&self) -> serde_json::Value {
        match self {
            Self::AlreadyReversed { by } => serde_json::json!({ "reversed_by": by }),
            Self::TimeOutOfRange(error) => serde_json::json!({ "field": error.field }),
            _ => serde_json::Value::Null,
        }
    }
}

impl Aggregate for EntryRecord {
    const TYPE: &'static str = ENTRY_AGGREGATE;
    type Command = EntryCommand;
    type Event = EntryEvent;
    type Error = EntryError;
    type Services = ();

    async fn handle(
        &mut self,
        command: EntryCommand,
        _: &(),
        sink: &EventSink<Self>,
    ) -> Result<(), EntryError> {
        handle_by_deciding(self, command, sink).await
    }

    fn apply(&mut self, event: EntryEvent) {
        match event {
            EntryEvent::EntryRecorded(recorded) => self.recorded = Some(recorded),
            EntryEvent::EntryReversed { by } => self.reversed_by = Some(by),
        }
    }
}

impl Decide for EntryRecord {
    fn decide(&self, command: EntryCommand) -> Result<Vec<EntryEvent>, EntryError> {
        match command {
            EntryCommand::Record(recorded) => {
                if self.recorded.is_some() {
                    return Err(EntryError::Exists);
                }
                // What storage needs, whatever the request came from.
                if let Some(reference) = &recorded.reference {
                    crate::text::check_storable(reference, ENTRY_REFERENCE_LENGTH_MAX)
                        .map_err(EntryError::InvalidReference)?;
                }
                crate::time::check("effective_at", recorded.effective_at)?;
                Ok(vec![EntryEvent::EntryRecorded(recorded)])
            }
            EntryCommand::Reverse { by } => {
                if self.recorded.is_none() {
                    return Err(EntryError::Unknown);
                }
                match self.reversed_by {
                    Some(by) => Err(EntryError::AlreadyReversed { by }),
                    None => Ok(vec![EntryEvent::EntryReversed { by }]),
                }
            }
        }
    }

    fn journal_entry(event: &EntryEvent) -> Option<&JournalEntry> {
        match event {
            EntryEvent::EntryRecorded(recorded) => Some(&recorded.entry),
            EntryEvent::EntryReversed { .. } => None,
        }
    }

    fn journal_reference(event: &EntryEvent) -> Option<&str> {
        match event {
            EntryEvent::EntryRecorded(recorded) => recorded.reference.as_deref(),
            EntryEvent::EntryReversed { .. } => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::journal::{Account, AccountType};
    use crate::money::{Amount, Asset};
    use chrono::TimeZone;
    use cqrs_es::test::TestFramework;

    type Given = TestFramework<EntryRecord>;

    fn id(n: u128) -> EntryId {
        EntryId::from_uuid(uuid::Uuid::from_u128(n))
    }

    fn sale() -> JournalEntry {
        let usd = Asset::new("USD", 2).unwrap();
        JournalEntry::new(vec![
            Posting::debit(
                Account::new("cash", AccountType::Asset),
                usd.clone(),
                Amount::new(700).unwrap(),
            ),
            Posting::credit(
                Account::new("revenue", AccountType::Revenue),
                usd.clone(),
                Amount::new(600).unwrap(),
            ),
            Posting::credit(
                Account::new("tax_payable", AccountType::Liability),
                usd,
                Amount::new(100).unwrap(),
            ),
        ])
        .unwrap()
    }

    fn recorded(entry: JournalEntry, reverses: Option<EntryId>) -> Recorded {
        Recorded {
            entry,
            effective_at: Utc.with_ymd_and_hms(2026, 3, 1, 9, 0, 0).unwrap(),
            reference: Some("invoice-7".into()),
            reverses,
            recorded_by: None,
        }
    }

    #[test]
    fn the_mirror_swaps_every_side_and_keeps_everything_else() {
        let mirror = sale().mirror().unwrap();
        let sides: Vec<(&str, Side, i64)> = mirror
            .postings()
            .iter()
            .map(|p| (p.account.code.as_str(), p.side, p.amount.value()))
            .collect();
        assert_eq!(
            sides,
            [
                ("cash", Side::Credit, 700),
                ("revenue", Side::Debit, 600),
                ("tax_payable", Side::Debit, 100),
            ]
        );
        assert_eq!(mirror.mirror().unwrap(), sale());
    }

    #[test]
    fn an_entry_is_recorded_once() {
        Given::with(())
            .given_no_previous_events()
            .when(EntryCommand::Record(recorded(sale(), None)))
            .then_expect_events(vec![EntryEvent::EntryRecorded(recorded(sale(), None))]);
        Given::with(())
            .given(vec![EntryEvent::EntryRecorded(recorded(sale(), None))])
            .when(EntryCommand::Record(recorded(sale(), None)))
            .then_expect_error(EntryError::Exists);
    }

    #[test]
    fn what_storage_cannot_hold_is_refused_whatever_the_request_came_from() {
        let mut nul = recorded(sale(), None);
        nul.reference = Some("a\u{0}b".into());
        Given::with(())
            .given_no_previous_events()
            .when(EntryCommand::Record(nul))
            .then_expect_error(EntryError::InvalidReference(
                crate::text::TextError::ControlCharacter {
                    code_point: 0,
                    index: 1,
                },
            ));
        let mut long = recorded(sale(), None);
        long.reference = Some("x".repeat(201));
        Given::with(())
            .given_no_previous_events()
            .when(EntryCommand::Record(long))
            .then_expect_error(EntryError::InvalidReference(
                crate::text::TextError::TooLong { max_chars: 200 },
            ));
        let mut far = recorded(sale(), None);
        far.effective_at = crate::time::STORABLE_MIN - chrono::Duration::days(1);
        Given::with(())
            .given_no_previous_events()
            .when(EntryCommand::Record(far))
            .then_expect_error(EntryError::TimeOutOfRange(crate::time::TimeOutOfRange {
                field: "effective_at",
            }));
    }

    #[test]
    fn an_entry_is_reversed_at_most_once() {
        Given::with(())
            .given(vec![EntryEvent::EntryRecorded(recorded(sale(), None))])
            .when(EntryCommand::Reverse { by: id(2) })
            .then_expect_events(vec![EntryEvent::EntryReversed { by: id(2) }]);
        Given::with(())
            .given(vec![
                EntryEvent::EntryRecorded(recorded(sale(), None)),
                EntryEvent::EntryReversed { by: id(2) },
            ])
            .when(EntryCommand::Reverse { by: id(3) })
            .then_expect_error(EntryError::AlreadyReversed { by: id(2) });
        Given::with(())
            .given_no_previous_events()
            .when(EntryCommand::Reverse { by: id(3) })
            .then_expect_error(EntryError::Unknown);
    }

    #[test]
    fn a_recorded_entry_posts_to_the_journal_and_its_reversal_mark_does_not() {
        let event = EntryEvent::EntryRecorded(recorded(sale(), None));
        assert_eq!(EntryRecord::journal_entry(&event), Some(&sale()));
        assert_eq!(
            EntryRecord::journal_entry(&EntryEvent::EntryReversed { by: id(2) }),
            None
        );
    }
}
