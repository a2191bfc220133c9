//! Escrow requests for the history of every request kind: a commitment
//! funded in parts, a milestone submitted, accepted in part and its rest
//! timed out, claims split and refunded, a cancel, and a second commitment
//! expired.

use super::Ledger;
use aggregates::escrow::{Allocation, ClaimOutcome, CommitmentTerms, Direction, MilestoneTerms};
use aggregates::ids::{ClaimId, CommitmentId, DepositId, TransferId};
use aggregates::{Amount, Asset};
use chrono::{DateTime, Duration, Utc};
use commands::requests::escrow::{
    CancelCommitment, ClaimMilestone, CreateCommitment, DepositFunds, ExpireCommitment, Parties,
    ReleaseMilestone, ResolveClaim, SubmitMilestone, TimeOutMilestone,
};

pub(super) fn terms(expires_at: Option<DateTime<Utc>>) -> CommitmentTerms {
    let milestone = |id: &str, amount: i64, on_timeout| MilestoneTerms {
        milestone_id: id.into(),
        amount: Amount::new(amount).unwrap(),
        due_at: None,
        inspection_seconds: 3_600,
        on_timeout,
    };
    CommitmentTerms {
        payer: "buyer-1".into(),
        payee: "seller-9".into(),
        asset: Asset::new("USD", 2).unwrap(),
        allocation: Allocation::Lifo,
        milestones: vec![
            milestone("m1", 30_000, Direction::Release),
            milestone("m2", 20_000, Direction::Refund),
        ],
        expires_at,
    }
}

/// Every escrow request kind, in tenant 0 at `now` (and after).
pub(super) async fn escrow_requests(ledger: &Ledger, now: DateTime<Utc>) {
    let id = |n: u128| uuid::Uuid::from_u128(0xE5C0_0000 + n);
    let cents = |value: i64| Amount::new(value).unwrap();
    let commitment = CommitmentId::from_uuid(id(1));
    let parties = Parties::of(&terms(None));
    ledger
        .run(
            0,
            "escrow-create",
            CreateCommitment {
                commitment_id: commitment,
                terms: terms(None),
            },
        )
        .await;
    for (n, amount) in [(1, 20_000), (2, 15_000), (3, 15_000)] {
        ledger
            .run(
                0,
                &format!("escrow-deposit-{n}"),
                DepositFunds {
                    commitment_id: commitment,
                    deposit_id: DepositId::from_uuid(id(10 + n)),
                    amount: cents(amount),
                    reference: Some(format!("wire-{n}")),
                    parties: parties.clone(),
                },
            )
            .await;
    }
    let submit = |milestone: &str| SubmitMilestone {
        commitment_id: commitment,
        milestone_id: milestone.into(),
        parties: parties.clone(),
    };
    ledger.run(0, "escrow-submit-m1", submit("m1")).await;
    ledger
        .run(
            0,
            "escrow-accept",
            ReleaseMilestone {
                commitment_id: commitment,
                milestone_id: "m1".into(),
                transfer_id: TransferId::from_uuid(id(20)),
                amount: Some(cents(10_000)),
                accepted: true,
                parties: parties.clone(),
            },
        )
        .await;
    let claim = |n: u128, milestone: &str, amount: i64, rejection| ClaimMilestone {
        commitment_id: commitment,
        claim_id: ClaimId::from_uuid(id(30 + n)),
        milestone_id: milestone.into(),
        amount: cents(amount),
        reason: Some("damaged".into()),
        rejection,
        parties: parties.clone(),
    };
    ledger
        .run(0, "escrow-claim-1", claim(1, "m1", 5_001, false))
        .await;
    let resolve = |n: u128, outcome| ResolveClaim {
        commitment_id: commitment,
        claim_id: ClaimId::from_uuid(id(30 + n)),
        outcome,
        release_id: TransferId::from_uuid(id(40 + n)),
        refund_id: TransferId::from_uuid(id(50 + n)),
        parties: parties.clone(),
    };
    ledger
        .run(
            0,
            "escrow-split",
            resolve(1, ClaimOutcome::Split { payee_bps: 6_000 }),
        )
        .await;
    // m1's window, open over the rest of the partial acceptance, times
    // out to a release of it.
    ledger.set_clock(now + Duration::hours(2));
    ledger
        .run(
            0,
            "escrow-timeout",
            TimeOutMilestone {
                commitment_id: commitment,
                milestone_id: "m1".into(),
                window: 1,
                transfer_id: TransferId::from_uuid(id(60)),
                parties: parties.clone(),
                due_at: Some(now + Duration::hours(1)),
            },
        )
        .await;
    ledger
        .run(0, "escrow-claim-2", claim(2, "m2", 1_000, false))
        .await;
    ledger
        .run(
            0,
            "escrow-cancel",
            CancelCommitment {
                commitment_id: commitment,
                transfer_id: TransferId::from_uuid(id(70)),
                parties: parties.clone(),
            },
        )
        .await;
    ledger
        .run(0, "escrow-refund-claim", resolve(2, ClaimOutcome::Refund))
        .await;

    // A second commitment: its m1's window ends an hour before the expiry,
    // which times it out first.
    let expiring = CommitmentId::from_uuid(id(2));
    let expires_at = now + Duration::hours(4);
    ledger
        .run(
            0,
            "escrow-create-2",
            CreateCommitment {
                commitment_id: expiring,
                terms: terms(Some(expires_at)),
            },
        )
        .await;
    ledger
        .run(
            0,
            "escrow-deposit-2-1",
            DepositFunds {
                commitment_id: expiring,
                deposit_id: DepositId::from_uuid(id(80)),
                amount: cents(7_000),
                reference: None,
                parties: parties.clone(),
            },
        )
        .await;
    let submit = SubmitMilestone {
        commitment_id: expiring,
        milestone_id: "m1".into(),
        parties: parties.clone(),
    };
    ledger.run(0, "escrow-submit-2-m1", submit).await;
    ledger.set_clock(expires_at + Duration::minutes(1));
    let expire = ExpireCommitment::new(
        (expiring, TransferId::from_uuid(id(90))),
        parties,
        &terms(Some(expires_at)).milestones,
        expires_at,
    );
    let expired = ledger.run(0, "escrow-expire", expire).await;
    let transfer = &expired.body["transfers"][0];
    assert_eq!(
        (
            &expired.body["status"],
            &transfer["direction"],
            &transfer["amount"]
        ),
        (
            &serde_json::json!("expired"),
            &serde_json::json!("release"),
            &serde_json::json!(7_000)
        ),
        "{}",
        expired.body
    );
}

#[tokio::test]
async fn a_release_whose_lineage_was_rewritten_is_found_at_its_seq() {
    // Proves: a release's lineage rewritten behind the triggers (20000 +
    // 5000 from the first two deposits made 19000 + 6000: the same total,
    // the chain recomputed) is found by deciding the recorded release
    // again: one finding at the release's seq, on the commitment, naming
    // the lineage.
    use super::findings_of;
    let ledger = Ledger::new().await;
    let id = |n: u128| uuid::Uuid::from_u128(0xE5C1_0000 + n);
    let commitment = CommitmentId::from_uuid(id(1));
    let parties = Parties::of(&terms(None));
    ledger
        .run(
            0,
            "create",
            CreateCommitment {
                commitment_id: commitment,
                terms: terms(None),
            },
        )
        .await;
    for (n, amount) in [(1, 20_000), (2, 15_000)] {
        let deposit = DepositFunds {
            commitment_id: commitment,
            deposit_id: DepositId::from_uuid(id(10 + n)),
            amount: Amount::new(amount).unwrap(),
            reference: None,
            parties: parties.clone(),
        };
        ledger.run(0, &format!("deposit-{n}"), deposit).await;
    }
    let release = ReleaseMilestone {
        commitment_id: commitment,
        milestone_id: "m1".into(),
        transfer_id: TransferId::from_uuid(id(20)),
        amount: Some(Amount::new(25_000).unwrap()),
        accepted: false,
        parties,
    };
    ledger.run(0, "release", release).await;
    let seq = ledger
        .events(0)
        .await
        .iter()
        .find(|event| event.event_type == "Transferred")
        .unwrap()
        .tenant_seq;
    ledger
        .edit_payload(0, seq, Some("Transferred"), |payload| {
            let lineage = &mut payload["Transferred"]["lineage"];
            assert_eq!(lineage.as_array().unwrap().len(), 2, "{lineage}");
            lineage[0]["amount"] = serde_json::json!(19_000);
            lineage[1]["amount"] = serde_json::json!(6_000);
        })
        .await;
    ledger.rechain(0).await;
    let report = ledger.verify().await;
    let findings = findings_of(&report, ledger.tenants[0]);
    let finding = super::first_replay_at(&findings, seq, "commitment", &commitment.to_string());
    assert!(finding.message.contains("lineage"), "{findings:?}");
    assert!(!report.ok);
}

/// A commitment released whole in tenant 0 (m1, then m2, whose release
/// completes it): the seq of its `CommitmentCompleted` and of the request's
/// first event.
async fn completed_by_release(ledger: &Ledger) -> (i64, i64) {
    let id = |n: u128| uuid::Uuid::from_u128(0xE5C2_0000 + n);
    let commitment = CommitmentId::from_uuid(id(1));
    let parties = Parties::of(&terms(None));
    let create = CreateCommitment {
        commitment_id: commitment,
        terms: terms(None),
    };
    ledger.run(0, "create", create).await;
    let deposit = DepositFunds {
        commitment_id: commitment,
        deposit_id: DepositId::from_uuid(id(10)),
        amount: Amount::new(50_000).unwrap(),
        reference: None,
        parties: parties.clone(),
    };
    ledger.run(0, "deposit", deposit).await;
    for (n, milestone, amount) in [(1, "m1", 30_000), (2, "m2", 20_000)] {
        let release = ReleaseMilestone {
            commitment_id: commitment,
            milestone_id: milestone.into(),
            transfer_id: TransferId::from_uuid(id(20 + n)),
            amount: Some(Amount::new(amount).unwrap()),
            accepted: false,
            parties: parties.clone(),
        };
        ledger
            .run(0, &format!("release-{milestone}"), release)
            .await;
    }
    let events = ledger.events(0).await;
    let completed = events
        .iter()
        .find(|event| event.event_type == "CommitmentCompleted")
        .expect("the last release completes the commitment")
        .tenant_seq;
    let first = events
        .iter()
        .rev()
        .find(|event| event.event_type == "Transferred")
        .unwrap()
        .tenant_seq;
    (completed, first)
}

#[tokio::test]
async fn a_completion_recorded_under_rules_that_do_not_record_it_or_forged_as_an_expiry_is_found() {
    // Proves: the release that completes a commitment records
    // CommitmentCompleted (rules 9) and verifies clean; the same history
    // with the request's rules rewritten to 8 (the chain recomputed) is
    // found from the completion's seq on (rules 8 decide no such event);
    // and
    // the completion rewritten into an expiry (which would settle the
    // expiry too, and read as expired) is a finding at its seq.
    use super::findings_of;
    use replay::verify::Finding;
    let found_at = |report: &replay::verify::VerifyReport, ledger: &Ledger| -> Vec<i64> {
        findings_of(report, ledger.tenants[0])
            .iter()
            .map(|finding| match finding {
                Finding::Replay { finding, .. } => finding.tenant_seq,
                other => panic!("{other:?}"),
            })
            .collect()
    };
    let ledger = Ledger::new().await;
    let (completed, first) = completed_by_release(&ledger).await;
    assert!(ledger.verify().await.ok);
    ledger.rewrite_rules(0, first, 8).await;
    let report = ledger.verify().await;
    // From the completion on, the request's stored events are one ahead
    // of the decided ones: each is a finding, the first at the completion.
    let last = ledger.events(0).await.last().unwrap().tenant_seq;
    let found = found_at(&report, &ledger);
    assert_eq!(found, (completed..=last).collect::<Vec<_>>());
    let first_finding = &findings_of(&report, ledger.tenants[0])[0];
    assert!(
        first_finding.to_string().contains("CommitmentCompleted"),
        "{first_finding}"
    );

    let forged = Ledger::new().await;
    let (completed, _) = completed_by_release(&forged).await;
    forged
        .edit_payload(0, completed, Some("CommitmentExpired"), |payload| {
            let at = payload["CommitmentCompleted"].take();
            *payload = serde_json::json!({ "CommitmentExpired": at });
        })
        .await;
    forged.rechain(0).await;
    let report = forged.verify().await;
    assert_eq!(found_at(&report, &forged), vec![completed]);
}
