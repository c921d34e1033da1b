"""CPU seconds per role (web, relay, workers, PostgreSQL, Redis, ...), read from /proc."""

import os
from pathlib import Path


def cpu_by_role(
    before: dict[int, tuple[str, float]], after: dict[int, tuple[str, float]]
) -> dict[str, float]:
    """CPU seconds per role between two `cpu_seconds` readings, process by process: a process
    that exited in between (a PostgreSQL backend, say) drops out instead of making its role's
    figure negative; one born in between counts from zero."""
    totals: dict[str, float] = {}
    for pid, (role, used) in after.items():
        start = before.get(pid, (role, 0.0))[1]
        totals[role] = totals.get(role, 0.0) + max(0.0, used - start)
    return totals


def cpu_seconds(roots: dict[int, str]) -> dict[int, tuple[str, float]]:
    """CPU seconds each process used so far, with its role: each process counts toward its
    nearest spawned ancestor in `roots` (pid -> role), else PostgreSQL, Redis, this load
    generator or other."""
    tick = os.sysconf("SC_CLK_TCK")
    procs: dict[int, tuple[int, str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        fields = stat[stat.rindex(")") + 2 :].split()
        procs[int(entry.name)] = (int(fields[1]), comm, (int(fields[11]) + int(fields[12])) / tick)
    out: dict[int, tuple[str, float]] = {}
    for pid, (_, comm, used) in procs.items():
        role, cursor = None, pid
        while cursor in procs and role is None:
            role = roots.get(cursor) or ("load generator" if cursor == os.getpid() else None)
            cursor = procs[cursor][0] if cursor != procs[cursor][0] else 0
        if role is None:
            role = (
                "postgresql"
                if comm.startswith("postgres")
                else "redis"
                if comm.startswith("redis")
                else "other"
            )
        out[pid] = (role, used)
    return out
