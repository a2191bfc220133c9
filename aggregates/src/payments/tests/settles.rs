//! Settling: each capture, refund, dispute and won dispute's reversal is
//! settled by one batch, once; a settled refund can no longer fail.

use super::*;
use crate::payments::settlement::Item;

fn settle(item: Item, batch: &str) -> PaymentCommand {
    PaymentCommand::Settle {
        item,
        batch: batch.into(),
        at: at(9),
    }
}

fn settled(item: Item, batch: &str) -> PaymentEvent {
    PaymentEvent::ItemSettled {
        item,
        batch: batch.into(),
        at: at(9),
    }
}

fn capture_item() -> Item {
    Item::Capture {
        capture_id: capture_id(1),
    }
}

fn history() -> Vec<PaymentEvent> {
    vec![
        created(),
        authorized(1, 10_000),
        captured(1, 1, 10_000, 0),
        PaymentEvent::Refunded {
            refund_id: refund_id(1),
            amount: cents(1_000),
            parts: vec![RefundPart {
                tender_id: tender_id(1),
                amount: cents(1_000),
            }],
            reference: None,
            reason: None,
            at: at(4),
        },
        PaymentEvent::DisputeOpened {
            dispute_id: dispute_id(1),
            tender_id: tender_id(1),
            capture_id: capture_id(1),
            amount: cents(2_000),
            fee: cents(1_500),
            reference: None,
            reason: None,
            at: at(5),
        },
    ]
}

#[test]
fn each_item_is_settled_once() {
    let items = [
        capture_item(),
        Item::Refund {
            refund_id: refund_id(1),
        },
        Item::Dispute {
            dispute_id: dispute_id(1),
        },
    ];
    for item in items {
        Given::with(())
            .given(history())
            .when(settle(item, "stripe:b_1"))
            .then_expect_events(vec![settled(item, "stripe:b_1")]);
        let mut after = history();
        after.push(settled(item, "stripe:b_1"));
        Given::with(())
            .given(after)
            .when(settle(item, "stripe:b_2"))
            .then_expect_error(PaymentError::AlreadySettled {
                batch: "stripe:b_1".into(),
            });
    }
}

#[test]
fn a_settled_refund_cannot_fail_and_a_failed_one_is_not_settled() {
    let refund = Item::Refund {
        refund_id: refund_id(1),
    };
    let mut after = history();
    after.push(settled(refund, "stripe:b_1"));
    assert_eq!(
        state(after.clone()).refund(refund_id(1)).unwrap().state,
        RefundState::Settled
    );
    Given::with(())
        .given(after)
        .when(PaymentCommand::FailRefund {
            refund_id: refund_id(1),
            reason: None,
            at: at(10),
        })
        .then_expect_error(PaymentError::RefundNotPending { state: "settled" });
    let mut failed = history();
    failed.push(PaymentEvent::RefundFailed {
        refund_id: refund_id(1),
        reason: None,
        at: at(6),
    });
    Given::with(())
        .given(failed)
        .when(settle(refund, "stripe:b_1"))
        .then_expect_error(PaymentError::RefundNotPending { state: "failed" });
}

#[test]
fn only_a_won_dispute_has_a_reversal_to_settle() {
    let reversal = Item::DisputeReversal {
        dispute_id: dispute_id(1),
    };
    Given::with(())
        .given(history())
        .when(settle(reversal, "stripe:b_1"))
        .then_expect_error(PaymentError::DisputeNotWon);
    let mut won = history();
    won.push(PaymentEvent::DisputeClosed {
        dispute_id: dispute_id(1),
        outcome: DisputeOutcome::Won,
        at: at(7),
    });
    Given::with(())
        .given(won)
        .when(settle(reversal, "stripe:b_1"))
        .then_expect_events(vec![settled(reversal, "stripe:b_1")]);
}

#[test]
fn unknown_items_are_not_settled() {
    let cases = [
        (
            Item::Capture {
                capture_id: capture_id(9),
            },
            PaymentError::UnknownCapture(capture_id(9)),
        ),
        (
            Item::Refund {
                refund_id: refund_id(9),
            },
            PaymentError::UnknownRefund(refund_id(9)),
        ),
        (
            Item::Dispute {
                dispute_id: dispute_id(9),
            },
            PaymentError::UnknownDispute(dispute_id(9)),
        ),
    ];
    for (item, error) in cases {
        Given::with(())
            .given(history())
            .when(settle(item, "stripe:b_1"))
            .then_expect_error(error);
    }
    Given::with(())
        .given_no_previous_events()
        .when(settle(capture_item(), "stripe:b_1"))
        .then_expect_error(PaymentError::Unknown);
}
