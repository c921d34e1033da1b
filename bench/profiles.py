"""CPU profiles of the stack's processes while the bench loads them: py-spy samples each role
(a process and its children) from outside, so nothing in the product is instrumented for it.

Only threads holding the GIL are sampled (`--gil`): a thread waiting on a socket (PostgreSQL,
Redis, SMTP) releases it, so the samples are Python CPU time, not wall time. A role's file is
read once (`stacks`); the functions below take what it read: `collapsed` for the saved stacks
(speedscope.app and flamegraph.pl read them), `flame_svg` draws them, `top_frames` names the
functions that cost the most.
"""

import gzip
import html
import re
import shutil
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

RATE_HZ = 200
_LINE_NUMBER = re.compile(r":\d+\)$")  # "fn (orders/views.py:42)" -> "fn (orders/views.py)"


def py_spy() -> str | None:
    """The py-spy next to this interpreter (requirements/bench.txt), else one on PATH."""
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def record(pids: dict[str, int], seconds: float, out: Path) -> dict[str, subprocess.Popen[bytes]]:
    """Start one py-spy per role (name -> pid of its root process) for `seconds`."""
    exe = py_spy()
    if exe is None:
        return {}
    out.mkdir(parents=True, exist_ok=True)
    running = {}
    for role, pid in pids.items():
        running[role] = subprocess.Popen(
            [
                exe, "record", "--pid", str(pid), "--subprocesses", "--gil", "--nonblocking",
                "--rate", str(RATE_HZ), "--duration", str(int(seconds)), "--format", "raw",
                "--output", str(out / f"{slug(role)}.txt"),
            ],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
    return running


Stacks = Counter[tuple[str, ...]]  # frames, outermost first -> samples


def collect(running: dict[str, subprocess.Popen[bytes]], out: Path) -> dict[str, Stacks | str]:
    """Wait for each py-spy; role -> its stacks, or why there are none."""
    found: dict[str, Stacks | str] = {}
    for role, proc in running.items():
        _, err = proc.communicate(timeout=120)
        path = out / f"{slug(role)}.txt"
        ok = proc.returncode == 0 and path.exists() and path.stat().st_size
        found[role] = stacks(path) if ok else f"no profile: {err.decode(errors='replace').strip()[-200:]}"
    return found


def stacks(path: Path) -> Stacks:
    """Collapsed stacks (`frame;frame;... count`), the process line and line numbers dropped so
    that the children of a role (gunicorn workers, pool children) add up."""
    counts: Stacks = Counter()
    text = gzip.decompress(path.read_bytes()).decode() if path.suffix == ".gz" else path.read_text()
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():  # not a stack line
            continue
        counts[tuple(_LINE_NUMBER.sub(")", f) for f in stack.split(";")[1:])] += int(n)
    return counts


def collapsed(counts: Stacks) -> str:
    """The role's stacks merged across its processes, in the collapsed format (what is saved
    with the report: smaller than py-spy's raw output, which repeats each stack per process)."""
    return "".join(f"{';'.join(frames)} {n}\n" for frames, n in sorted(counts.items()))


def top_frames(counts: Stacks, n: int = 8) -> list[tuple[str, float]]:
    """The `n` functions with the most samples of their own (self time), as % of the role's."""
    total = sum(counts.values()) or 1
    own: Counter[str] = Counter()
    for frames, count in counts.items():
        if frames:
            own[frames[-1]] += count
    return [(frame, count / total * 100) for frame, count in own.most_common(n)]


def cpu_ms(counts: Stacks) -> float:
    """CPU-ms the role's sampled threads spent holding the GIL."""
    return sum(counts.values()) / RATE_HZ * 1000


@dataclass
class Frame:
    samples: int = 0
    children: dict[str, "Frame"] = field(default_factory=dict)


def flame_svg(counts: Stacks, title: str, width: int = 1200) -> str:
    """A flame graph of the collapsed stacks: one box per frame, as wide as its samples; hover
    a box for its function and share."""
    total = sum(counts.values()) or 1
    root = Frame()
    for frames, count in counts.items():
        node = root
        for name in frames:
            node = node.children.setdefault(name, Frame())
            node.samples += count
    boxes: list[tuple[float, int, float, str, float]] = []  # x, depth, width, frame, share

    def place(node: Frame, x: float, depth: int) -> None:
        for name, child in sorted(node.children.items()):
            w = child.samples / total * width
            if w >= 0.5:  # narrower than a pixel: not drawn
                boxes.append((x, depth, w, name, child.samples / total * 100))
                place(child, x, depth + 1)
            x += w

    place(root, 0.0, 0)
    row = 16
    height = (max((b[1] for b in boxes), default=0) + 2) * row + 24
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            'font-family="monospace" font-size="11">'
        ),
        f'<text x="4" y="14">{html.escape(title)} ({total} samples at {RATE_HZ} Hz)</text>',
    ]
    for x, depth, w, name, share in boxes:
        y = height - (depth + 1) * row
        hue = 20 + zlib.crc32(name.encode()) % 40  # warm colours, stable from run to run
        label = html.escape(name[: int(w / 7)]) if w > 40 else ""
        parts.append(
            f'<g><title>{html.escape(name)}: {share:.1f} %</title><rect x="{x:.1f}" y="{y}" '
            f'width="{w:.1f}" height="{row - 1}" fill="hsl({hue},80%,60%)"/>'
            f'<text x="{x + 2:.1f}" y="{y + 12}">{label}</text></g>'
        )
    return "\n".join([*parts, "</svg>"])


def slug(role: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in role.split(" (")[0]).strip("-")


def saved_name(stem: str, role: str) -> str:
    """A role's profile files next to report `stem`: `<name>.svg` and `<name>.txt.gz`."""
    return f"{stem}-profile-{slug(role)}"


def report_section(p: dict[str, Any], table: Callable[[list[list[str]]], str], stem: str) -> list[str]:
    if not p.get("roles"):
        return []
    parts = [
        f"### Where the CPU goes: py-spy profiles at {p['rate']:.0f} orders/s",
        "",
        (
            f"A separate pass of {p['seconds']} s, not measured above (the sampler costs CPU too). py-spy "
            f"samples each role's processes at {RATE_HZ} Hz, threads holding the GIL only, so "
            "waiting on PostgreSQL, Redis or SMTP is not counted. PostgreSQL and Redis are not Python and "
            "are not profiled. Each flame graph (SVG) and its collapsed stacks (gzipped; for "
            "speedscope.app or flamegraph.pl) are saved next to this report. Self time, the functions that cost most:"
        ),
        "",
    ]
    for role, found in p["roles"].items():
        if "error" in found:
            parts += [f"* {role}: {found['error']}", ""]
            continue
        name = saved_name(stem, role)
        parts += [
            (
                f"**{role}**: {found['gil_ms_per_order']:.1f} ms with the GIL per order; "
                f"[flame graph]({name}.svg), [stacks]({name}.txt.gz)"
            ),
            "",
            table(
                [["function (self time)", "% of samples"]] + [[f"`{f}`", f"{s:.1f}"] for f, s in found["top"]]
            ),
            "",
        ]
    return parts


def inclusive_share(counts: Stacks, *functions: str) -> float:
    """% of the role's samples with any of `functions` (a frame name's start) on the stack:
    a sample with two of them, one calling the other, counts once."""
    hit = sum(n for frames, n in counts.items() if any(f.startswith(functions) for f in frames))
    return hit / (sum(counts.values()) or 1) * 100


def share_table(results: Path, runs: dict[str, str], rows: list[tuple[str, str, list[str]]]) -> str:
    """For docs: each (what, role file slug, functions) row's inclusive share of its role's
    samples in each run's saved stacks (`saved_name`)."""
    lines = ["| what | role | " + " | ".join(f"{label} % of samples" for label in runs) + " |"]
    lines.append("|---|---|" + "---|" * len(runs))
    for what, role, functions in rows:
        shares = []
        for stem in runs.values():
            counts = stacks(results / f"{saved_name(stem, role)}.txt.gz")
            shares.append(inclusive_share(counts, *functions))
        lines.append(f"| {what} | {role} | " + " | ".join(f"{s:.1f}" for s in shares) + " |")
    return "\n".join(lines)
