"""The transactional outbox: the only way product code enqueues work.

    with transaction.atomic():
        order = Order.objects.create(...)
        outbox.enqueue("orders.send_confirmation_email", kwargs={"order_id": order.id})

`enqueue` only INSERTs a row in the caller's transaction: if the transaction rolls
back, no task ever runs; if it commits, the relay (jobs/relay.py) publishes the row
with the row id as the Celery task id. No broker call happens in the request.

The rows and the relay's wake-up (NOTIFY) are written in one SQL statement; `batch()` collects a transaction's enqueues so they share that one round
trip: measured, this costs the create far less than bulk_create plus a separate
NOTIFY (docs/performance.md).
"""

import functools
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connections, transaction
from django.db.models import Min
from django.utils import timezone
from django.utils.module_loading import autodiscover_modules

from core import request_id
from jobs import tracing
from jobs.app import celery_app
from jobs.errors import EnqueueError
from jobs.execution import HOLD_SQL, REQUEST_ID_HEADER, Superseded, current_fence
from jobs.models import OutboxMessage
from jobs.queues import Queue

NOTIFY_CHANNEL = "taskyard_outbox"
MAX_STRING_LENGTH = 256  # arguments are IDs and small scalars, never documents or PII
_SCALARS = (str, int, float, bool, type(None))


@dataclass(frozen=True)
class Message:
    task_name: str
    queue: str
    args: list[Any]
    kwargs: dict[str, Any]
    headers: dict[str, Any]
    priority: int | None = None
    not_before: datetime | None = None
    dedupe_key: str | None = None
    id: uuid.UUID = field(default_factory=uuid.uuid4)


@dataclass
class _Batch:
    messages: list[Message]
    depth: int  # savepoints open when the batch began: deeper enqueues write at once


_batch: ContextVar[_Batch | None] = ContextVar("outbox_batch", default=None)


def _check_value(value: Any, path: str) -> None:
    if isinstance(value, str) and len(value) > MAX_STRING_LENGTH:
        raise EnqueueError(
            f"{path}: strings longer than {MAX_STRING_LENGTH} characters don't belong in a task"
        )
    if isinstance(value, _SCALARS):
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_value(item, f"{path}[{i}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise EnqueueError(f"{path}: keys must be strings")
            _check_value(item, f"{path}.{key}")
        return
    raise EnqueueError(
        f"{path}: {type(value).__name__} is not a JSON scalar; pass IDs and small values, "
        "and let the task load what it needs"
    )


@functools.cache
def _task_registry() -> Any:
    """Celery's registry with every app's tasks.py imported (web processes don't by default)."""
    autodiscover_modules("tasks")  # not import_default_modules(): it re-runs the system checks
    return celery_app().tasks


def _resolve_queue(task_name: str, queue: str | None) -> str:
    task = _task_registry().get(task_name)
    if task is None:
        raise EnqueueError(f"unknown task {task_name!r}: not registered with the Celery app")
    name = queue or getattr(task, "queue", None) or Queue.DEFAULT.value
    if name not in {q.value for q in Queue}:
        raise EnqueueError(f"unknown queue {name!r}; queues are declared in jobs.queues.Queue")
    return name


def build_message(
    task_name: str,
    *,
    args: list[Any] | tuple[Any, ...] = (),
    kwargs: dict[str, Any] | None = None,
    queue: str | None = None,
    not_before: datetime | None = None,
    priority: int | None = None,
    dedupe_key: str | None = None,
    headers: dict[str, Any] | None = None,
    job_id: uuid.UUID | str | None = None,
) -> Message:
    """Validate an enqueue request; raises EnqueueError with a reason."""
    kwargs = dict(kwargs or {})
    _check_value(list(args), "args")
    _check_value(kwargs, "kwargs")
    try:
        payload = json.dumps([list(args), kwargs], allow_nan=False)
    except (TypeError, ValueError) as exc:  # pragma: no cover - _check_value catches these first
        raise EnqueueError(f"payload is not JSON: {exc}") from exc
    if len(payload.encode()) > settings.OUTBOX_MAX_PAYLOAD_BYTES:
        raise EnqueueError(
            f"payload is {len(payload.encode())} bytes; the limit is {settings.OUTBOX_MAX_PAYLOAD_BYTES} "
            "(IDs and small scalars only)"
        )
    if priority is not None and not (isinstance(priority, int) and 0 <= priority <= 9):
        raise EnqueueError("priority must be an integer from 0 (most urgent) to 9")
    if not_before is not None and timezone.is_naive(not_before):
        raise EnqueueError("not_before must be timezone-aware (UTC)")
    if dedupe_key is not None and not (0 < len(dedupe_key) <= 200):
        raise EnqueueError("dedupe_key must be 1-200 characters")
    message_id = uuid.uuid4()
    merged = {"attempt": 1, "root_id": str(message_id)}
    if cid := request_id.get():
        merged[REQUEST_ID_HEADER] = cid
    if job_id:
        merged["job_id"] = str(job_id)
    merged.update(headers or {})
    merged.update(tracing.enqueue_headers(merged))  # the enqueuing span's context (jobs/tracing.py)
    return Message(
        task_name=task_name,
        queue=_resolve_queue(task_name, queue),
        args=list(args),
        kwargs=kwargs,
        headers=merged,
        priority=priority,
        not_before=not_before,
        dedupe_key=dedupe_key,
        id=message_id,
    )


def enqueue(task_name: str, *, using: str = "default", **options: Any) -> uuid.UUID | None:
    """Add one task to the outbox, in the caller's open transaction.

    Options: args, kwargs, queue, not_before, priority, dedupe_key, headers, job_id.
    Returns the task id, or None when `dedupe_key` matched an existing row (outside
    `batch()`, where the write happens at the end of the block).
    """
    _require_transaction(using)
    message = build_message(task_name, **options)
    buffered = _batch.get()
    # Buffered only at the batch's own level: an enqueue inside a savepoint (a nested atomic
    # block) is written at once, so it rolls back with the savepoint if that rolls back.
    if buffered is not None and len(connections[using].savepoint_ids) == buffered.depth:
        buffered.messages.append(message)
        return message.id
    return message.id if write([message], using=using) else None


@contextmanager
def batch(using: str = "default") -> Iterator[None]:
    """Collect the enqueues of a block and write them in one statement when it ends."""
    if _batch.get() is not None:  # nested: the outermost block writes
        yield
        return
    _require_transaction(using)
    buffered = _Batch([], depth=len(connections[using].savepoint_ids))
    token = _batch.set(buffered)
    try:
        yield
    finally:
        _batch.reset(token)
    if buffered.messages:
        write(buffered.messages, using=using)


def _require_transaction(using: str) -> None:
    if not transaction.get_connection(using).in_atomic_block:
        raise EnqueueError(
            "outbox.enqueue() must run inside transaction.atomic(): the row is the enqueue, "
            "and it must commit or roll back with the data it refers to"
        )


def write(messages: list[Message], *, using: str = "default") -> int:
    """INSERT the rows and NOTIFY the relay, one statement; returns how many were new.

    Inside a running task the rows are fenced (jobs/execution.py): written only while the run
    still holds its task id, in the same statement; a superseded run gets `Superseded`, and its
    transaction (the domain write that came with the enqueue) rolls back.
    """
    connection = connections[using]
    fence = current_fence()
    # Typed placeholders: in the fenced form the rows come from a VALUES list, not the table.
    row = "(%s::uuid, %s, %s, %s::jsonb, %s::jsonb, %s::jsonb, %s::smallint, COALESCE(%s::timestamptz, now()), %s)"
    params: list[Any] = []
    for m in messages:
        params += [
            m.id,
            m.task_name,
            m.queue,
            json.dumps(m.args),
            json.dumps(m.kwargs),
            json.dumps(m.headers),
            m.priority,
            m.not_before,
            m.dedupe_key,
        ]
    values = f"VALUES {', '.join([row] * len(messages))}"
    if fence is None:
        rows, owner = values, "SELECT 1"
    else:
        rows = f"SELECT * FROM ({values}) AS v WHERE EXISTS (SELECT 1 FROM owner)"  # noqa: S608
        owner = HOLD_SQL
        params = [fence.task_id, fence.epoch, *params]
    sql = (
        f"WITH owner AS ({owner}), ins AS ("  # noqa: S608 - only placeholders are interpolated
        " INSERT INTO jobs_outboxmessage"
        " (id, task_name, queue, args, kwargs, headers, priority, not_before, dedupe_key)"
        f" {rows}"
        " ON CONFLICT (dedupe_key) DO NOTHING RETURNING id)"
        " SELECT (SELECT count(*) FROM owner), count(*), pg_notify(%s, '') FROM ins"
    )
    params.append(NOTIFY_CHANNEL)
    with tracing.write_span(messages), connection.cursor() as cursor:
        cursor.execute(sql, params)
        held, inserted, _ = cursor.fetchone() or (0, 0, None)
    if not held:
        raise Superseded(f"task {fence.task_id if fence else '?'} was taken over: its enqueue was refused")
    return int(inserted)


def adopt(
    task_id: str, task_name: str, queue: str, args: list[Any], kwargs: dict[str, Any], headers: dict[str, Any]
) -> None:
    """Give a message that was published around the outbox an outbox row, marked sent, so the
    reaper can re-publish it if the run that holds it dies (jobs/base_task.py)."""
    OutboxMessage.objects.bulk_create(
        [
            OutboxMessage(
                id=task_id,
                task_name=task_name,
                queue=queue,
                args=args,
                kwargs=kwargs,
                headers=headers,
                sent_at=timezone.now(),
            )
        ],
        ignore_conflicts=True,
    )


@dataclass(frozen=True)
class Backlog:
    unsent: int  # rows not yet published (due or not)
    due: int  # of those, due now
    oldest_due_age_seconds: float  # age of the oldest due, unsent row (0 when none)


def backlog() -> Backlog:
    """Outbox backlog figures for metrics and alerts (jobs/task_metrics.py)."""
    now = timezone.now()
    unsent = OutboxMessage.objects.filter(sent_at__isnull=True)
    due = unsent.filter(not_before__lte=now)
    oldest = due.aggregate(oldest=Min("not_before"))["oldest"]
    return Backlog(
        unsent=unsent.count(),
        due=due.count(),
        oldest_due_age_seconds=max((now - oldest).total_seconds(), 0.0) if oldest else 0.0,
    )
