"""A real single-node SLURM 22.05 (tests/slurm/up.sh) running a slice of the toy DAG through
``snakemake --profile profiles/slurm``: the toy cohort builder (make_toy_cohort), a resumable
training rule (train_cluster_check, crossmodal.training) and a rule that fails on purpose.
Skipped only when slurm-wlm / munge are missing and cannot be installed (not root, no apt):
``make test`` installs them first (Makefile target ``slurm``)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import BIN, REPO

pytestmark = pytest.mark.slurm

SLURM = REPO / "tests" / "slurm"
TARGET = "results/cluster_check/fail_check.json"
TOY = "results/toy/cohort/samples.tsv"  # make_toy_cohort: a rule of the real toy DAG


@pytest.fixture(scope="session")
def slurm_env():
    """Start the daemons; yield the environment that reaches them; stop them by PID."""
    d = Path(tempfile.mkdtemp(prefix="crossmodal-slurm-"))
    env = dict(os.environ, SLURM_DIR=str(d))
    p = subprocess.run(["bash", str(SLURM / "up.sh")], env=env, capture_output=True, text=True,
                       timeout=600)
    try:
        if p.returncode == 3:
            pytest.skip(f"SLURM not available: {p.stderr.strip()}")
        assert p.returncode == 0, f"tests/slurm/up.sh failed:\n{p.stdout}\n{p.stderr}"
        yield dict(os.environ, SLURM_CONF=str(d / "slurm.conf"), CROSSMODAL_SLURM_PARTITION="debug",
                   PATH=f"{BIN}:{os.environ.get('PATH', '')}")
    finally:
        subprocess.run(["bash", str(SLURM / "down.sh")], env=env, timeout=120)
        shutil.rmtree(d, ignore_errors=True)


def _snakemake_cmd(wd: Path, *, configfiles=(), extra=()) -> list[str]:
    # the workflow reads config/ and resources/ relative to its working directory
    wd.mkdir(parents=True, exist_ok=True)
    for name in ("config", "resources"):
        if not (wd / name).exists():
            (wd / name).symlink_to(REPO / name, target_is_directory=True)
    return [str(BIN / "snakemake"), "--snakefile", str(SLURM / "Snakefile"),
            "--profile", str(REPO / "profiles" / "slurm"), "--directory", str(wd), "--jobs", "4",
            # poll squeue every few seconds (the profile's interval suits a real cluster)
            "--slurm-init-seconds-before-status-checks", "2",
            *extra, TARGET, TOY,
            "--configfile", str(REPO / "config" / "config.yaml"), *map(str, configfiles),
            "--config", "device=cpu"]


def _scancel_all(env):
    subprocess.run(["scancel", "--user", os.environ.get("USER", "root")], env=env,
                   capture_output=True)


def _snakemake(wd: Path, env: dict, *, configfiles=(), extra=(), timeout=600):
    try:
        # subprocess.run sends SIGKILL on timeout (Snakemake's SLURM executor may hang on SIGTERM)
        return subprocess.run(_snakemake_cmd(wd, configfiles=configfiles, extra=extra),
                              capture_output=True, text=True, timeout=timeout, env=env)
    finally:
        _scancel_all(env)


def _snakemake_preempting_training(wd: Path, env: dict, *, configfiles=(), extra=(),
                                   timeout=600) -> tuple[int, str]:
    """Run Snakemake; once the training job has saved its step-10 checkpoint, send its SLURM
    job SIGTERM as SLURM does at the walltime or on preemption (``scancel --signal=TERM``)."""
    ckpt = wd / "results/cluster_check/checkpoints/step-000000010"
    p = subprocess.Popen(_snakemake_cmd(wd, configfiles=configfiles, extra=extra), env=env,
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        t0 = time.monotonic()
        while not ckpt.is_dir():
            assert p.poll() is None and time.monotonic() - t0 < timeout, "training never started"
            time.sleep(0.2)
        q = subprocess.run(["squeue", "-h", "-o", "%i %k"], env=env, capture_output=True,
                           text=True, check=True).stdout.split("\n")
        ids = [line.split()[0] for line in q if line.endswith(" rule_train_cluster_check")]
        assert len(ids) == 1, q
        subprocess.run(["scancel", "--signal=TERM", ids[0]], env=env, check=True)
        out = p.communicate(timeout=max(1.0, timeout - (time.monotonic() - t0)))[0]
        return p.returncode, out
    finally:
        if p.poll() is None:
            p.kill()  # SIGKILL: the SLURM executor may hang on SIGTERM
            p.communicate()
        _scancel_all(env)


def test_slurm_profile_runs_training_reports_failure_and_rerun_completes(tmp_path, slurm_env):
    wd = tmp_path / "run"
    # 1) toy cohort + training rule (preempted once, SIGTERM) + a rule failing on purpose
    #    (--retries 0 for it; the training rule declares its own retries)
    failing = tmp_path / "fail.yaml"
    failing.write_text("cluster:\n  check_fail: true\n  check_step_delay_s: 0.4\n")
    rc, out = _snakemake_preempting_training(wd, slurm_env, configfiles=[failing],
                                             extra=["--retries", "0"])
    assert rc != 0, out[-3000:]
    assert "Error in rule fail_cluster_check" in out, out[-3000:]
    assert "failing on purpose" in (wd / "logs/fail_cluster_check/all.log").read_text()
    assert not (wd / TARGET).exists()
    # the toy-DAG rule and the training rule ran as SLURM jobs and finished
    assert out.count("has been submitted with SLURM jobid") >= 3, out[-3000:]
    samples = (wd / TOY).read_text().splitlines()
    assert samples[0].split("\t")[:2] == ["patient", "sample"] and len(samples) > 10, samples[:3]
    # the training job saved a checkpoint on SIGTERM, exited 75, and its retry resumed from it
    train = json.loads((wd / "results/cluster_check/train.json").read_text())
    assert train["finished"] and train["steps"] == 40 and train["last_checkpoint"] == 40
    assert 10 <= train["resumed_from"] < 40, train
    assert [(x["step"], x["reason"]) for x in train["stops"]] == [(train["resumed_from"], "SIGTERM")]
    tlog = (wd / "logs/train_cluster_check/all.log").read_text()  # the retry's log
    assert f"resumed from results/cluster_check/checkpoints/step-{train['resumed_from']:09d}" in tlog
    assert (wd / "results/cluster_check/model.pt").stat().st_size > 0
    assert list((wd / "results/cluster_check/checkpoints").glob("step-*"))
    mtime = (wd / "results/cluster_check/train.json").stat().st_mtime_ns

    # 2) rerun without the failure (same training params, else Snakemake would retrain):
    #    only the failed rule runs, the workflow completes
    fixed = tmp_path / "fixed.yaml"
    fixed.write_text("cluster:\n  check_step_delay_s: 0.4\n")
    p = _snakemake(wd, slurm_env, configfiles=[fixed])
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-3000:]
    assert json.loads((wd / TARGET).read_text())["ok"] is True
    assert (wd / "results/cluster_check/train.json").stat().st_mtime_ns == mtime
    ran = out.split("Job stats:")[-1].split("total")[0]
    assert "fail_cluster_check" in ran
    assert "train_cluster_check" not in ran and "make_toy_cohort" not in ran
