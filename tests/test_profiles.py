"""The Snakemake profiles in profiles/: every key is an option Snakemake 9 (with the installed
executor plugins) accepts, each profile loads in a dry run, and the Polaris allocation job
script starts Snakemake the documented way."""
from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import yaml

from conftest import BIN, REPO

PROFILES = ["polaris", "polaris-allocation", "slurm", "local"]


@pytest.fixture(scope="module")
def snakemake_options() -> set[str]:
    out = subprocess.run([str(BIN / "snakemake"), "--help"], capture_output=True, text=True,
                         timeout=120).stdout
    return set(re.findall(r"--([a-z0-9][a-z0-9-]+)", out))


@pytest.mark.parametrize("name", PROFILES)
def test_profile_keys_are_snakemake_options_and_documented(name, snakemake_options):
    d = REPO / "profiles" / name
    cfg = yaml.safe_load((d / "config.yaml").read_text())
    unknown = sorted(k for k in cfg if k not in snakemake_options)
    assert not unknown, f"profiles/{name}/config.yaml: unknown options {unknown}"
    readme = (d / "README.md").read_text()
    assert len(readme) > 500 and "snakemake --profile" in readme.replace("\\\n", "")


def test_training_retries_and_cluster_specific_settings():
    load = {n: yaml.safe_load((REPO / "profiles" / n / "config.yaml").read_text()) for n in PROFILES}
    for n, cfg in load.items():
        assert cfg.get("retries", 0) >= 2, f"{n}: preempted training needs retries to resume"
        assert cfg.get("rerun-incomplete") is True, n
    assert load["slurm"]["slurm-status-command"] == "squeue"  # works without slurmdbd
    assert load["slurm"]["default-resources"]["slurm_partition"] == "$CROSSMODAL_SLURM_PARTITION"
    pol = load["polaris"]
    assert pol["cluster-generic-cancel-cmd"] == "qdel"
    assert pol["cluster-generic-status-cmd"] == "python -m crossmodal.cluster.pbs status"
    assert (REPO / "profiles" / "polaris" / pol["jobscript"]).is_file()
    assert load["polaris-allocation"]["executor"] == "local"


@pytest.mark.parametrize("name", ["polaris", "slurm", "local"])
def test_profile_loads_in_a_dry_run(name, tmp_path):
    env = dict(os.environ, PATH=f"{BIN}:{os.environ.get('PATH', '')}",
               CROSSMODAL_SLURM_PARTITION="debug", CROSSMODAL_PBS_ACCOUNT="x")
    for name_ in ("config", "resources"):  # read relative to the working directory
        (tmp_path / name_).symlink_to(REPO / name_, target_is_directory=True)
    p = subprocess.run([str(BIN / "snakemake"), "--snakefile", str(REPO / "tests/slurm/Snakefile"),
                        "--profile", str(REPO / "profiles" / name), "--directory", str(tmp_path),
                        "--configfile", str(REPO / "config/config.yaml"), "--dry-run",
                        "results/cluster_check/fail_check.json"],
                       capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stdout[-2000:] + p.stderr[-3000:]
    assert "train_cluster_check" in p.stdout + p.stderr


def test_allocation_script_unlocks_then_runs_snakemake_with_node_gpus(tmp_path):
    """Run profiles/polaris-allocation/allocation.pbs as PBS would (a fake snakemake records
    its arguments; PBS itself is not installable here)."""
    work = tmp_path / "repo"
    (work / ".venv" / "bin").mkdir(parents=True)
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "snakemake").write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/calls\n'
                                    f'echo "END=$CROSSMODAL_JOB_END SLOTS=$CROSSMODAL_GPU_SLOTS EVERY=$CROSSMODAL_CHECKPOINT_EVERY_S" >> {tmp_path}/calls\n')
    (fake / "snakemake").chmod(0o755)
    (work / ".venv" / "bin" / "activate").write_text(f'export PATH="{fake}:$PATH"\n'
                                                     f'echo activate >> {tmp_path}/order\n')
    setup = tmp_path / "setup.sh"  # e.g. `module load conda`, which prepends conda's bin/
    setup.write_text(f'echo setup >> {tmp_path}/order\n')
    nodefile = tmp_path / "nodefile"
    nodefile.write_text("x3005c0s13b0n0\nx3005c0s13b0n0\nx3005c0s19b1n0\n")
    env = dict(os.environ, PBS_O_WORKDIR=str(work), PBS_NODEFILE=str(nodefile),
               PBS_JOBID="4183399.polaris-pbs-01", CROSSMODAL_ARGS="--configfile config/x.yaml",
               CROSSMODAL_WALLTIME_S="3600", CROSSMODAL_PBS_SETUP=str(setup))
    p = subprocess.run(["bash", str(REPO / "profiles/polaris-allocation/allocation.pbs")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[0] == "--profile profiles/polaris-allocation --unlock --configfile config/x.yaml"
    assert calls[2] == ("--profile profiles/polaris-allocation --resources gpu=4 nodes=2 "
                        "--configfile config/x.yaml")
    end, slots, every = calls[3].split()
    assert abs(int(end[4:]) - (time.time() + 3600)) < 60 and slots == "SLOTS=4" and every == "EVERY=1800"
    # site setup before the venv, so the venv's snakemake/python come first on PATH
    assert (tmp_path / "order").read_text().split() == ["setup", "activate"]
    head = (REPO / "profiles/polaris-allocation/allocation.pbs").read_text()
    for directive in ("select=", "filesystems=home:eagle", "-q preemptable", "-r y"):
        assert directive in head
    # without CROSSMODAL_WALLTIME_S the job's own walltime (qstat -f) sets the training budget
    (fake / "qstat").write_text('#!/bin/bash\necho "Job Id: $2"\necho "    Resource_List.walltime = 02:30:00"\n')
    (fake / "qstat").chmod(0o755)
    (tmp_path / "calls").unlink()
    env.pop("CROSSMODAL_WALLTIME_S")
    p = subprocess.run(["bash", str(REPO / "profiles/polaris-allocation/allocation.pbs")],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    end = (tmp_path / "calls").read_text().splitlines()[3].split()[0]
    assert abs(int(end[4:]) - (time.time() + 9000)) < 60, p.stderr


def test_multi_node_launch_runs_one_accelerate_launcher_per_node():
    from crossmodal import training

    cmd = training.mpi_launch_command(["-m", "crossmodal", "train_cdm"], 4, ["n0", "n1"],
                                      python="py")
    assert cmd[:7] == ["mpiexec", "-n", "2", "--ppn", "1", "--hosts", "n0,n1"]
    import json

    spec = json.loads(cmd[-1])
    rank1 = training._rank_launch_command(spec, {"PMI_RANK": "1"})
    assert rank1[rank1.index("--num_processes") + 1] == "8"
    assert rank1[rank1.index("--machine_rank") + 1] == "1"
    assert rank1[rank1.index("--main_process_ip") + 1] == "n0"
    with pytest.raises(RuntimeError, match="PBS_NODEFILE"):
        training.node_hosts(2, env={})



# ------------------------------------------------ resources of the training rules
def _training_rules() -> dict[str, str]:
    """``{rule: body}`` of every training rule (``train_*`` / ``pretrain_*``) in workflow/rules."""
    out = {}
    for smk in sorted((REPO / "workflow" / "rules").glob("*.smk")):
        text = smk.read_text()
        for m in re.finditer(r"^rule ((?:pre)?train_\w+):\n((?:[ \t]+.*\n|\n)*)", text, re.M):
            out[m.group(1)] = m.group(2)
    return out


# Rules still lacking cluster resources (owned by the paper engineers; issue 9 asks each
# training rule to declare them).  Remove a name once its rule is fixed.
_RESOURCES_TODO: set[str] = set()


@pytest.mark.parametrize("rule", [
    pytest.param(r, marks=pytest.mark.xfail(reason="rule owner to add resources (issue 9)",
                                            strict=False) if r in _RESOURCES_TODO else ())
    for r in sorted(_training_rules())])
def test_training_rule_declares_cluster_resources(rule):
    """Profiles turn gpu/runtime/mem_mb/threads into qsub/sbatch requests; a training rule
    without them would get a 1-hour, GPU-less job."""
    body = _training_rules()[rule]
    res = re.search(r"^    resources:\n((?:        .*\n)*)", body, re.M)
    keys = set(re.findall(r"^        (\w+)\s*=", res.group(1), re.M)) if res else set()
    missing = sorted({"gpu", "runtime", "mem_mb"} - keys)
    assert not missing, f"rule {rule}: resources {missing} missing"
    assert re.search(r"^    threads:", body, re.M), f"rule {rule}: threads missing"
    assert re.search(r"^    retries:", body, re.M), f"rule {rule}: retries missing (resume)"
