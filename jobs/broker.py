"""Broker topology: Redis (default) or RabbitMQ, chosen by CELERY_BROKER_URL.

Redis: one list per queue; a message a dead worker held comes back after the
visibility timeout, and our reaper re-publishes it long before that.

RabbitMQ: quorum queues (replicated, durable) with a delivery limit and a dead-letter
exchange. A message delivered more than BROKER_DELIVERY_LIMIT times (it keeps killing
its worker before our own poison check can run) is moved by RabbitMQ itself to
`taskyard.dead-letters`, where `manage.py consume_dead_letters` records a DeadLetter row.
Publishes use publisher confirms, so the relay marks a row sent only once RabbitMQ has it.

Imported by the settings: no Django imports here.
"""

import contextlib
from typing import Any

from kombu import Exchange
from kombu import Queue as KombuQueue
from kombu.exceptions import ChannelError

from jobs.queues import Queue

DEAD_LETTER_EXCHANGE = "taskyard.dead"
DEAD_LETTER_QUEUE = "taskyard.dead-letters"


def is_amqp(url: str) -> bool:
    return url.split(":", 1)[0] in {"amqp", "amqps", "pyamqp"}


def task_queues(url: str, *, delivery_limit: int) -> list[KombuQueue]:
    if not is_amqp(url):
        return [KombuQueue(q.value, Exchange(q.value), routing_key=q.value) for q in Queue]
    arguments = {
        "x-queue-type": "quorum",
        "x-delivery-limit": delivery_limit,
        "x-dead-letter-exchange": DEAD_LETTER_EXCHANGE,
        "x-dead-letter-strategy": "at-least-once",  # the dead-lettered copy is confirmed, not fire-and-forget
        "x-overflow": "reject-publish",  # required by at-least-once dead-lettering
    }
    return [
        KombuQueue(
            q.value,
            Exchange(q.value, type="direct", durable=True),
            routing_key=q.value,
            queue_arguments=arguments,
        )
        for q in Queue
    ]


def dead_letter_queue() -> KombuQueue:
    return KombuQueue(
        DEAD_LETTER_QUEUE,
        Exchange(DEAD_LETTER_EXCHANGE, type="fanout", durable=True),
        queue_arguments={"x-queue-type": "quorum"},
    )


def transport_options(url: str, *, visibility_timeout: int) -> dict[str, Any]:
    if is_amqp(url):
        return {"confirm_publish": True}
    return {
        "visibility_timeout": visibility_timeout,  # must exceed the longest hard time limit
        "socket_connect_timeout": 5,  # fail fast when the broker is down; callers back off
        "health_check_interval": 10,  # notice a dead broker connection before using it
    }


def queue_depths(queues: set[str]) -> dict[str, int]:
    """Ready messages per queue, from the broker (works for Redis and RabbitMQ)."""
    from jobs.app import celery_app  # late: settings import this module

    depths: dict[str, int] = {}
    with celery_app().connection_for_read() as conn:
        for queue in queues:
            channel: Any = conn.channel()
            try:
                depths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except ChannelError:
                depths[queue] = 0  # no such queue (Redis drops empty lists): nothing waiting in it
            finally:
                with contextlib.suppress(Exception):
                    channel.close()
    return depths


def check_connection() -> None:
    """Readiness: the broker accepts a connection within two seconds (core/health.py)."""
    from jobs.app import celery_app  # late: settings import this module

    with celery_app().connection_for_write() as conn:
        conn.ensure_connection(max_retries=1, timeout=2)
