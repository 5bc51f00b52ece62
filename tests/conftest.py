"""Shared fixtures.  The toy workflow runs once per test session (``toy_run``) in a
temporary working directory; end-to-end tests of every stage assert on its outputs.

The toy run is the longest part of the suite (about 15 of its 25 minutes on 2 cores), so it starts
in the background as soon as collection has finished, when a selected test needs it, and the
tests that need it run last: the others (many of which wait on subprocesses: the SLURM cluster,
the fake PBS, dry runs) run meanwhile.  ``CROSSMODAL_TOY_RUN_FOREGROUND=1`` runs it inside the
first test that needs it instead, as before."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
# Snakemake's default job-rate limiter (100/1s) re-runs the scheduling round every second while
# jobs wait for cores, and each waiting round arms another one-second timer; with hundreds of
# ready jobs on 2 cores its main process then burns a core-fraction of its own. Measured on the
# toy cohort + tiling (243 jobs, 2 cores): main process 45 s CPU / 191 s by default, 14 s / 154 s
# with these (the greedy scheduler also skips the ILP solver). The Makefile's `make run` uses them.
SCHEDULER_ARGS = ("--scheduler", "greedy", "--max-jobs-per-timespan", "1000/10s")
sys.path.insert(0, str(REPO / "workflow"))


def run_snakemake(workdir, *args, configfile=None, config: dict | None = None, cores=2,
                  check=True, timeout=1800, env=None) -> subprocess.CompletedProcess:
    """Run the repository's workflow with ``workdir`` as working directory."""
    import json

    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    # the workflow reads config/ and resources/ relative to the working directory, as a
    # user's checkout does; link them so a temporary working directory behaves the same
    for name in ("config", "resources"):
        link = workdir / name
        if not link.exists():
            link.symlink_to(REPO / name, target_is_directory=True)
    # targets and flags first: --configfile and --config take one or more values
    files = configfile if isinstance(configfile, (list, tuple)) else [configfile or REPO / "config" / "config.yaml"]
    cmd = [str(BIN / "snakemake"), *args, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--cores", str(cores), *SCHEDULER_ARGS,
           "--configfile", *map(str, files)]
    if config:
        cmd += ["--config"] + [f"{k}={json.dumps(v)}" for k, v in config.items()]
    e = dict(os.environ)
    e["PATH"] = f"{BIN}:{e.get('PATH', '')}"
    if env:
        e.update(env)
    p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=e)
    if check and p.returncode != 0:
        raise AssertionError(f"snakemake {' '.join(args)} failed ({p.returncode}):\n"
                             f"{p.stdout[-4000:]}\n{p.stderr[-8000:]}")
    return p


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


TOY_TIMEOUT_S = 1800


def _toy_workdir(factory) -> Path:
    reuse = os.environ.get("CROSSMODAL_TOY_RUN")
    return Path(reuse) if reuse else factory.mktemp("toy_run")


class _BackgroundToyRun:
    """``snakemake all`` on the toy config in a subprocess, its output in ``<workdir>/toy_run.log``."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.log = workdir / "toy_run.log"
        workdir.mkdir(parents=True, exist_ok=True)
        for name in ("config", "resources"):
            link = workdir / name
            if not link.exists():
                link.symlink_to(REPO / name, target_is_directory=True)
        cmd = [str(BIN / "snakemake"), "all", "--snakefile", str(REPO / "Snakefile"),
               "--directory", str(workdir), "--cores", "2", *SCHEDULER_ARGS,
               "--configfile", str(REPO / "config" / "config.yaml")]
        env = dict(os.environ)
        env["PATH"] = f"{BIN}:{env.get('PATH', '')}"
        self.started = time.monotonic()
        with open(self.log, "w") as fh:  # a file, not a pipe: a full pipe would stall Snakemake
            self.proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env,
                                         start_new_session=True)

    def wait(self) -> Path:
        left = TOY_TIMEOUT_S - (time.monotonic() - self.started)
        try:
            rc = self.proc.wait(timeout=max(left, 1))
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"toy run exceeded {TOY_TIMEOUT_S} s; log: {self.log}") from None
        if rc != 0:
            raise AssertionError(f"snakemake all (toy run in {self.workdir}) failed ({rc}):\n"
                                 f"{self.log.read_text()[-8000:]}")
        return self.workdir

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)  # Snakemake stops its jobs and exits
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


_BACKGROUND: dict[str, _BackgroundToyRun] = {}


def _needs_toy_run(item) -> bool:
    return "toy_run" in getattr(item, "fixturenames", ())


def _foreground() -> bool:
    return os.environ.get("CROSSMODAL_TOY_RUN_FOREGROUND", "") not in ("", "0")


@pytest.hookimpl(trylast=True)  # after -k / -m deselection
def pytest_collection_modifyitems(session, config, items):
    """Tests that need the toy run go last (stable order otherwise), so the rest run meanwhile."""
    if not _foreground():
        items[:] = [i for i in items if not _needs_toy_run(i)] + [i for i in items if _needs_toy_run(i)]


def pytest_collection_finish(session):
    if _foreground() or session.config.option.collectonly or not any(map(_needs_toy_run, session.items)):
        return
    _BACKGROUND["run"] = _BackgroundToyRun(_toy_workdir(session.config._tmp_path_factory))


def pytest_sessionfinish(session, exitstatus):
    run = _BACKGROUND.pop("run", None)
    if run is not None:
        run.stop()  # e.g. after Ctrl-C or -x before the first toy test


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> Path:
    """The default (toy) config run end to end once; returns its working directory.

    ``CROSSMODAL_TOY_RUN=<dir>`` reuses a working directory instead (e.g. one `make run` made):
    Snakemake brings it up to date first, so the tests still see what the current tree builds."""
    run = _BACKGROUND.get("run")
    if run is not None:
        return run.wait()
    wd = _toy_workdir(tmp_path_factory)
    run_snakemake(wd, "all", timeout=TOY_TIMEOUT_S)
    return wd
