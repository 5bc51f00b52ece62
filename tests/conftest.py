"""Shared fixtures.  The toy workflow runs once per test session (``toy_run``) in a
temporary working directory; end-to-end tests of every stage assert on its outputs."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
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
    cmd = [str(BIN / "snakemake"), *args, "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--cores", str(cores),
           "--configfile", str(configfile or REPO / "config" / "config.yaml")]
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


@pytest.fixture(scope="session")
def toy_run(tmp_path_factory) -> Path:
    """The default (toy) config run end to end once; returns its working directory.

    ``CROSSMODAL_TOY_RUN=<dir>`` reuses a working directory instead (e.g. one `make run` made):
    Snakemake brings it up to date first, so the tests still see what the current tree builds."""
    reuse = os.environ.get("CROSSMODAL_TOY_RUN")
    wd = Path(reuse) if reuse else tmp_path_factory.mktemp("toy_run")
    run_snakemake(wd, "all")
    return wd
