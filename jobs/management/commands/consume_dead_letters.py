"""python manage.py consume_dead_letters: record what RabbitMQ dead-lettered (RabbitMQ only).

Messages that hit a quorum queue's delivery limit go to the `taskyard.dead` exchange;
this process turns each into a DeadLetter row (reviewed and replayed in the admin like
any other) and acks it only after the row is committed. With Redis as the broker there
is nothing to consume and it says so.
"""

import logging
import signal
import sys
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand
from kombu import Message

from jobs.app import celery_app
from jobs.broker import dead_letter_queue, is_amqp
from jobs.dead_letters import broker_dead_letter_record

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Record messages RabbitMQ dead-lettered after their delivery limit as DeadLetter rows."

    def handle(self, *args: Any, **options: Any) -> None:
        if not is_amqp(settings.CELERY_BROKER_URL):
            self.stderr.write("the broker is not RabbitMQ: nothing to consume")
            sys.exit(0)
        stop = {"now": False}
        signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
        signal.signal(signal.SIGINT, lambda *_: stop.update(now=True))

        def handle_message(body: Any, message: Message) -> None:
            broker_dead_letter_record(headers=dict(message.headers or {}), body=body)
            message.ack()  # only after the row is committed: a crash here redelivers it

        with celery_app().connection_for_read() as conn:
            queue = dead_letter_queue()(conn.default_channel)
            queue.declare()
            with conn.Consumer([queue], callbacks=[handle_message], accept=["json"]):
                logger.info("consuming dead letters from %s", queue.name)
                self.stdout.write(f"consuming dead letters from {queue.name}")
                while not stop["now"]:
                    try:
                        conn.drain_events(timeout=1)
                    except TimeoutError:  # socket.timeout is TimeoutError: no message this second
                        continue
