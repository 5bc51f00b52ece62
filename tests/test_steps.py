"""The step registry, its command line, atomic outputs and the run-time summary."""
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from crossmodal import steps
from crossmodal.fileio import atomic_path, write_json

REPO = Path(__file__).resolve().parents[1]


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.txt"
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            Path(tmp).write_text("partial")
            raise RuntimeError("killed")
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_atomic_dir_replaces_whole(tmp_path):
    target = tmp_path / "db"
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "a").write_text("1")
    with atomic_path(target, is_dir=True) as tmp:
        (tmp / "b").write_text("2")
    assert sorted(p.name for p in target.iterdir()) == ["b"]


def test_unknown_step_lists_known():
    with pytest.raises(KeyError, match="unknown step 'nope'"):
        steps.get("nope")


def test_cli_runs_a_step(tmp_path):
    bench = tmp_path / "benchmarks" / "tile_slide"
    bench.mkdir(parents=True)
    for i, s in enumerate([1.5, 2.5]):
        (bench / f"S{i}.tsv").write_text("s\th:m:s\tmax_rss\n%.2f\t0:00:01\t100\n" % s)
    out = tmp_path / "r"
    p = subprocess.run([sys.executable, "-m", "crossmodal", "summarise_runtimes",
                        "--output", f"table={out}/t.tsv", "--output", f"figure={out}/f.png",
                        "--params", '{"benchmarks": "%s"}' % (tmp_path / "benchmarks")],
                       capture_output=True, text=True, cwd=tmp_path)
    assert p.returncode == 0, p.stderr
    t = pd.read_csv(out / "t.tsv", sep="\t")
    assert t.loc[0, "rule"] == "tile_slide" and t.loc[0, "jobs"] == 2 and t.loc[0, "total_s"] == 4.0
    assert (out / "f.png").stat().st_size > 0 and (out / "f.pdf").exists()


def test_cli_list_shows_steps():
    p = subprocess.run([sys.executable, "-m", "crossmodal", "--list"], capture_output=True, text=True)
    assert p.returncode == 0 and "summarise_runtimes" in p.stdout


def test_write_json_numpy(tmp_path):
    import numpy as np

    write_json(tmp_path / "a.json", {"n": np.int64(3), "x": np.float32(0.5), "a": np.arange(2)})
    assert (tmp_path / "a.json").read_text().count("\n") > 1
