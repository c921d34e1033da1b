"""Workers killed or frozen mid-task under load: every task of theirs finishes, each effect once.

Every kill lands while a task runs: the worker's group is frozen (SIGSTOP) until one of its
children holds a running TaskRun, so what ran at the freeze ran at the kill.
"""

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import requests

from jobs.models import ScheduleSlot, TaskRun
from jobs.scheduling.definitions import Schedule
from tests.chaos.conftest import kill_group, kill_main_only, record_result
from tests.chaos.effects import body_runs, figures_of, verify
from tests.chaos.scenario import (
    RATE,
    RECOVERY_LIMIT,
    freeze_mid_task,
    in_flight,
    kill_rounds,
    recovery_seconds,
    wait_for_orders,
)
from tests.chaos.stack import ChaosStack
from tests.harness import Proc, free_port, wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def kill_main(worker: Proc) -> None:
    """SIGKILL the worker's main process alone while its children (frozen mid-task) run tasks."""
    children = kill_main_only(worker)
    for pid in children:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    # Celery's prefork children die with their parent (PR_SET_PDEATHSIG, SIGKILL): none is left
    # running a task whose message nobody will ack
    wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in children), timeout=10)


def test_sigkill_worker_mid_task_group_then_main_process_only_under_load(chaos, user):
    stack = chaos(kyc=True).start(workers=1)
    load = stack.load(user, rate=RATE, kyc_every=5)
    at_kills, recoveries = kill_rounds(stack, load, [kill_group, kill_main])
    load.stop()
    drain = stack.wait_idle()
    figures = verify(stack, load, kills=len(at_kills))
    assert not load.failures, load.failures[:5]
    record_result(
        "worker-kill",
        title="worker `kill -9` mid-task: the group, then the main process only",
        what=f"{RATE:.0f} requests/s (1 in 5 a KYC submission); a task running at each kill: first the whole "
        "worker (main process and pool children) SIGKILLed, then only the next worker's main process "
        "(the kernel ends its children: Celery sets PR_SET_PDEATHSIG); a new worker started each time",
        **figures,
        **figures_of(tasks_running_at_kills=at_kills, recovery_seconds=recoveries, drain_seconds=drain),
    )


STALE = 5.0  # seconds: this scenario's heartbeat stale threshold (env below)


def test_sigstop_worker_past_the_stale_threshold_is_taken_over_and_refused_after(chaos, user):
    # given short thresholds, and a second worker to take over
    stack = chaos(TASKYARD_HEARTBEAT_STALE_SECONDS=str(STALE), TASKYARD_REAPER_INTERVAL_SECONDS="1")
    stack.start(workers=2)
    stopped = stack.workers[0]
    load = stack.load(user, rate=RATE)
    wait_for_orders(load, 15)
    # when the first worker is frozen mid-task past the threshold (below the email claim lease, 30 s)
    running = freeze_mid_task(stopped)
    held = in_flight(stack, stopped) | running
    frozen_at, frozen_wall = time.monotonic(), time.time()
    wait_until(
        lambda: TaskRun.objects.filter(task_id__in=running, epoch__gt=1).count() == len(running),
        timeout=30,
        message="the reaper to hand the frozen runs to the other worker",
    )
    taken_over_after = time.monotonic() - frozen_at
    stopped.signal_group(signal.SIGCONT)
    wait_for_orders(load, 10)
    load.stop()
    finished_after = recovery_seconds(held, frozen_wall, timeout=120)
    drain = stack.wait_idle()
    figures = verify(stack, load)
    # then each frozen run woke up to find its task id taken: its writes were refused
    refused = sum("superseded" in line or "taken over" in line for line in stopped.log().splitlines())
    assert refused >= 1, stopped.log()[-3000:]
    assert figures["takeovers"] >= len(running)
    assert not load.failures, load.failures[:5]
    record_result(
        "worker-sigstop",
        title="worker frozen (SIGSTOP) past the stale threshold",
        what=f"{RATE:.0f} orders/s, two workers, stale threshold {STALE:.0f} s, reaper every 1 s; one worker's "
        "group SIGSTOPped while a task ran until the reaper handed its runs to the other, then SIGCONT",
        **figures,
        **figures_of(
            tasks_running_at_stop=len(running),
            taken_over_seconds=taken_over_after,
            recovery_seconds=finished_after,
            superseded_writes_refused=refused,
            drain_seconds=drain,
        ),
    )


# --- a beat-scheduled task killed mid-run ----------------------------------------------------
EVERY = 4  # seconds between the chaos schedule's slots


def beat_slot_killed_mid_run(chaos, broker_url: str = "") -> dict:
    """A beat on a fast FX schedule; the worker killed while the FX sync runs (the provider
    answers after 1.5 s). The killed slot completes once, every slot runs once."""
    from jobs.management.commands.setup_periodic_tasks import sync_schedules

    schedule = Schedule(
        name="fx-sync-chaos",
        task="fx.sync_rates",
        every_seconds=EVERY,
        kwargs={"schedule": "fx-sync-chaos"},
        description="chaos test only",
        when_missed="chaos test only",
    )
    sync_schedules([schedule])
    stack: ChaosStack = chaos(broker_url)
    fx_port = free_port()
    provider = stack.procs.spawn(
        "fx-provider", [sys.executable, "-m", "fakes.fx_provider", "--port", str(fx_port), "--latency", "1.5"]
    )
    provider.wait_for_log("fx provider:")
    stack.env["FX_PROVIDER_URL"] = f"http://127.0.0.1:{fx_port}"
    stack.start(workers=1)
    beat = stack.procs.beat("beat")
    worker = stack.workers[-1]
    # the sync's slot claimed and its provider call under way
    running = freeze_mid_task(
        worker,
        timeout=4 * EVERY,
        select=lambda ids: {
            str(t)
            for t in ScheduleSlot.objects.filter(
                task_id__in=ids, status=ScheduleSlot.Status.RUNNING
            ).values_list("task_id", flat=True)
        },
    )
    killed_at = time.time()
    kill_group(worker)
    stack.start_worker("after-kill")
    slot = ScheduleSlot.objects.get(task_id__in=running)
    recovery = recovery_seconds(running, killed_at, timeout=90)
    wait_until(
        lambda: ScheduleSlot.objects.filter(pk=slot.pk, status=ScheduleSlot.Status.SUCCEEDED).exists(),
        timeout=60,
        message="the killed slot to complete",
    )
    completed = time.time() - killed_at
    wait_until(
        lambda: (
            ScheduleSlot.objects.filter(schedule=schedule.name, status=ScheduleSlot.Status.SUCCEEDED).count()
            >= 3
        ),
        timeout=60,
        message="two more slots",
    )
    beat.stop()
    stack.wait_idle()
    slots = list(ScheduleSlot.objects.filter(schedule=schedule.name))
    calls = int(requests.get(f"http://127.0.0.1:{fx_port}/stats", timeout=5).json()["calls"])
    succeeded = [s for s in slots if s.status == ScheduleSlot.Status.SUCCEEDED]
    # then the killed slot completed within 60 s, once; every slot's body succeeded once
    assert completed < 60, completed
    assert recovery < RECOVERY_LIMIT * 2
    runs = TaskRun.objects.filter(task_name="fx.sync_rates", state=TaskRun.State.SUCCEEDED)
    assert all(s.task_id for s in succeeded)
    assert {str(s.task_id) for s in succeeded} <= {str(r) for r in runs.values_list("task_id", flat=True)}
    # one provider read per slot, plus at most one for the run killed while its read was in flight
    # (a read has no effect to repeat: the slot ledger is what makes the slot run once)
    assert len(succeeded) == len(slots), [(s.slot_start, s.status) for s in slots]
    assert len(succeeded) <= calls <= len(succeeded) + len(running), (calls, len(succeeded))
    return figures_of(
        **body_runs(),
        slots_run=len(succeeded),
        fx_provider_calls=calls,
        fx_runs_killed_mid_call=len(running),
        slot_completed_after_kill_seconds=completed,
    )


def test_worker_killed_while_running_a_beat_scheduled_task_redis(chaos):
    figures = beat_slot_killed_mid_run(chaos)
    record_result(
        "beat-slot-kill",
        title="worker `kill -9` during a scheduled FX sync (Redis)",
        what=f"beat on a {EVERY} s FX schedule, the provider answering in 1.5 s; the worker group "
        "SIGKILLed while the sync ran, a new worker started",
        **figures,
    )
