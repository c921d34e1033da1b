"""The end state every chaos scenario asserts, both halves: nothing lost, nothing done twice.

Effects are counted where they land, outside our database: emails at the SMTP sink by
Message-ID, KYC checks at the vendor fake (one check per Idempotency-Key), FX provider calls
at the FX fake. Task bodies are counted separately, from TaskRun: a body that started again
after a takeover (deliveries > 1) shows the effect ledgers held even when a body ran twice.
"""

import email
import email.policy
from collections import Counter
from typing import Any

from jobs.models import DeadLetter, OutboxMessage, TaskRun
from kyc.models import Submission
from notifications.models import EmailAttempt, EmailDelivery
from orders.models import Invoice
from tests.chaos.stack import ChaosStack, Load


def emails(stack: ChaosStack) -> Counter[str]:
    """Raw emails in the sink by Message-ID (a duplicate shows as a count of 2)."""
    ids: Counter[str] = Counter()
    for path in (stack.base / "sink").glob("*.eml"):
        message = email.message_from_bytes(path.read_bytes(), policy=email.policy.default)
        ids[str(message["Message-ID"])] += 1
    return ids


def body_runs() -> dict[str, int]:
    """Task bodies that started more than once (a takeover: the reaper re-published a run whose
    worker died or stalled), and takeovers in all."""
    again = TaskRun.objects.filter(deliveries__gt=1)
    return {
        "task_bodies_run_again": again.count(),
        "takeovers": sum(
            epoch - 1 for epoch in TaskRun.objects.filter(epoch__gt=1).values_list("epoch", flat=True)
        ),
    }


def verify(
    stack: ChaosStack,
    load: Load | None = None,
    *,
    accepted: list[int] | None = None,
    dead_letters_expected: bool = False,
    kills: int = 0,
) -> dict[str, int]:
    """Every accepted order: exactly one confirmation email (by Message-ID) and a READY invoice;
    every accepted KYC submission: decided after exactly one check at the vendor and one result
    email; no email twice, but for a run killed mid-send (at most one per kill of the scenario);
    nothing left running; failures only as DeadLetter rows."""
    accepted = list(accepted if accepted is not None else load.accepted if load else [])
    sent = emails(stack)
    confirmations = {f"<order_confirmation.order-{order}@taskyard.test>" for order in accepted}
    missing = sorted(confirmations - set(sent))
    ready = Invoice.objects.filter(order_id__in=accepted, status=Invoice.Status.READY).count()
    figures: dict[str, int] = {
        "orders_accepted": len(accepted),
        "confirmation_emails": len(confirmations & set(sent)),
        "invoices_ready": ready,
        "emails_at_sink": sum(sent.values()),
        "duplicate_emails": sum(n - 1 for n in sent.values()),
        "dead_letters": DeadLetter.objects.count(),
        "stuck_task_runs": TaskRun.objects.filter(
            state__in=[TaskRun.State.RUNNING, TaskRun.State.LOST]
        ).count(),
        **body_runs(),
    }
    assert not missing, f"{len(missing)} orders have no confirmation email: {missing[:5]}\n" + explain(
        [int(m.split("order-")[1].split("@")[0]) for m in missing[:3]]
    )
    assert ready == len(accepted), (
        f"{len(accepted) - ready} of {len(accepted)} accepted orders have no READY invoice"
    )
    twice = [m for m, n in sent.items() if n > 1]
    window = smtp_window(twice)
    figures["duplicate_emails_in_smtp_window"] = len(window)
    # A duplicate is allowed only where no ledger can hold: a run killed after the SMTP server
    # took the message and before the delivery row recorded it. At most one per kill.
    assert set(twice) == set(window), explain_emails(sorted(set(twice) - set(window)))
    assert len(window) <= kills, (window, kills)
    assert figures["stuck_task_runs"] == 0
    if stack.vendor is not None and load is not None:
        figures.update(_kyc(stack, load, sent))
    if not dead_letters_expected:
        assert figures["dead_letters"] == 0, list(
            DeadLetter.objects.values_list("task_name", "exception_class", "message")[:5]
        )
    return figures


def _kyc(stack: ChaosStack, load: Load, sent: Counter[str]) -> dict[str, int]:
    assert stack.vendor is not None
    stats = stack.vendor.stats()
    submissions = load.kyc_accepted
    undecided = list(
        Submission.objects.filter(pk__in=submissions)
        .exclude(status__in=Submission.FINAL)
        .values_list("pk", "status")[:5]
    )
    result_emails = [m for m in sent if any(f"kyc-{s}" in m for s in submissions)]
    # the vendor fake keeps one check per Idempotency-Key: a second check for a submission would
    # need a second key, so checks == submissions means each submission was checked exactly once
    checked = {key for key in stats["submits_by_key"] if key in set(submissions)}
    assert submissions, "the load posted no KYC submission"
    assert not undecided, f"KYC submissions not decided: {undecided}"
    assert stats["checks"] == len(submissions) == len(checked), (
        stats["checks"],
        len(submissions),
        len(checked),
    )
    assert len(result_emails) == len(submissions)
    return {
        "kyc_accepted": len(submissions),
        "kyc_checks_at_vendor": int(stats["checks"]),
        "kyc_submit_calls": int(stats["submits"]),  # above checks: a body re-sent, the key held
        "kyc_result_emails": len(result_emails),
    }


def smtp_window(message_ids: list[str]) -> list[str]:
    """Of emails the sink got twice, those whose first sender died mid-send: the delivery was
    claimed more often than outcomes were recorded (a claimant that never came back from the
    SMTP conversation), and exactly one send was recorded, by the run that took over."""
    window = []
    for delivery in EmailDelivery.objects.filter(message_id__in=message_ids):
        outcomes = list(EmailAttempt.objects.filter(delivery=delivery).values_list("outcome", flat=True))
        if delivery.attempts > len(outcomes) and outcomes.count(EmailAttempt.Outcome.SENT) == 1:
            window.append(delivery.message_id)
    return window


def explain_emails(message_ids: list[str]) -> str:
    rows = EmailDelivery.objects.filter(message_id__in=message_ids).values(
        "message_id", "status", "attempts", "claimed_by"
    )
    return "emails sent twice, not by a run killed mid-send: " + "; ".join(
        f"{r} outcomes={list(EmailAttempt.objects.filter(delivery__message_id=r['message_id']).values_list('outcome', 'task_id'))}"
        for r in rows
    )


def explain(order_ids: list[int]) -> str:
    """What the records say about the confirmation email of these orders (for a failure message)."""
    lines = []
    for order_id in order_ids:
        for row in OutboxMessage.objects.filter(kwargs__order_id=order_id, task_name__contains="email"):
            run = (
                TaskRun.objects.filter(task_id=row.id)
                .values("state", "deliveries", "worker", "error")
                .first()
            )
            lines.append(
                f"order {order_id}: outbox {row.id} sent_at={row.sent_at} attempts={row.publish_attempts} run={run}"
            )
        delivery = (
            EmailDelivery.objects.filter(ledger_key=f"order:{order_id}").values("status", "attempts").first()
        )
        lines.append(f"order {order_id}: delivery={delivery}")
    return "\n".join(lines)


def figures_of(**values: Any) -> dict[str, Any]:
    """Rounded seconds and lists for the results file."""
    return {
        k: round(v, 1) if isinstance(v, float) else [round(x, 1) for x in v] if isinstance(v, list) else v
        for k, v in values.items()
    }
