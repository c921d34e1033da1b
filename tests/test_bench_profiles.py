"""The benchmark's profile reader and flame graph (bench/profiles.py), on a made-up py-spy file."""

import re
from pathlib import Path

from bench import profiles

RAW = """\
process 101:"gunicorn: worker";main (app.py:3);view (orders/api.py:10);serialize (rest/s.py:7) 6
process 102:"gunicorn: worker";main (app.py:3);view (orders/api.py:12);serialize (rest/s.py:9) 2
process 102:"gunicorn: worker";main (app.py:3);view (orders/api.py:12);query (db.py:40) 2
not a stack line
"""


def write(tmp_path: Path) -> Path:
    path = tmp_path / "web.txt"
    path.write_text(RAW)
    return path


def test_stacks_of_a_roles_processes_add_up_without_line_numbers(tmp_path: Path):
    counts = profiles.stacks(write(tmp_path))
    assert counts[("main (app.py)", "view (orders/api.py)", "serialize (rest/s.py)")] == 8
    assert sum(counts.values()) == 10
    assert profiles.cpu_ms(counts) == 10 / profiles.RATE_HZ * 1000


def test_top_frames_are_self_time_shares(tmp_path: Path):
    assert profiles.top_frames(profiles.stacks(write(tmp_path)), 2) == [
        ("serialize (rest/s.py)", 80.0),
        ("query (db.py)", 20.0),
    ]


def test_an_inclusive_share_counts_a_sample_once_whatever_of_its_functions_it_holds(tmp_path: Path):
    counts = profiles.stacks(write(tmp_path))
    assert profiles.inclusive_share(counts, "serialize (") == 80.0
    assert profiles.inclusive_share(counts, "view (", "serialize (") == 100.0  # view calls serialize
    assert profiles.inclusive_share(counts, "serialize (", "query (") == 100.0


def test_the_flame_graph_draws_each_frame_as_wide_as_its_samples(tmp_path: Path):
    counts = profiles.stacks(write(tmp_path))
    svg = profiles.flame_svg(counts, "web", width=1000)
    widths = {
        name: float(width)
        for name, width in re.findall(r"<title>([^<]+): [\d.]+ %</title><rect [^>]*width=\"([\d.]+)\"", svg)
    }
    assert widths == {
        "main (app.py)": 1000.0,
        "view (orders/api.py)": 1000.0,
        "serialize (rest/s.py)": 800.0,
        "query (db.py)": 200.0,
    }
    collapsed = profiles.collapsed(counts)
    assert "main (app.py);view (orders/api.py);serialize (rest/s.py) 8\n" in collapsed
