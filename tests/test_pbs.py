"""PBS Pro (Polaris) submission and status without a PBS server: the qsub command line the
profile's submit command builds, and the status command on qstat samples (tests/fixtures/pbs,
see its README for where they come from)."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO
from crossmodal.cluster import pbs

FIX = REPO / "tests" / "fixtures" / "pbs"
ENV = {"CROSSMODAL_PBS_ACCOUNT": "CrossModalProj"}
EXPECTED = {"queued": "running", "running": "running", "requeued": "running",
            "finished": "success", "failed": "failed", "walltime": "failed",
            "preempted": "failed", "held": "failed"}


def _opt(args, flag, value_prefix=""):
    """All values given to ``flag`` (e.g. every ``-l``)."""
    return [args[i + 1] for i, a in enumerate(args[:-1])
            if a == flag and args[i + 1].startswith(value_prefix)]


def test_qsub_line_for_a_gpu_training_job_on_preemptable():
    args, warnings = pbs.qsub_args("/w/.snakemake/tmp.x/snakejob.train_vae.7.sh",
                                   rule="train_vae", jobid=7, runtime=600, gpu=4, env=ENV)
    assert args[0] == "qsub" and args[-1].endswith("snakejob.train_vae.7.sh")
    assert _opt(args, "-A") == ["CrossModalProj"]
    assert _opt(args, "-q") == ["preemptable"]  # 10 h does not fit debug (1 h)
    assert set(_opt(args, "-l")) == {"select=1:system=polaris", "place=scatter",
                                     "walltime=10:00:00", "filesystems=home:eagle"}
    assert _opt(args, "-r") == ["y"]  # preemptable jobs are rerunnable
    assert _opt(args, "-o") == ["logs/pbs/train_vae-7.log"] and _opt(args, "-j") == ["oe"]
    assert _opt(args, "-v") == ["CROSSMODAL_WALLTIME_S=36000"]
    assert warnings == []


def test_short_small_job_goes_to_debug_without_rerun_flag():
    args, _ = pbs.qsub_args("js.sh", rule="tile_slide", jobid=3, runtime=20, env=ENV)
    assert _opt(args, "-q") == ["debug"] and "-r" not in args
    assert _opt(args, "-l", "walltime") == ["walltime=00:20:00"]


def test_queue_from_environment_and_runtime_capped_at_queue_maximum_with_warning():
    env = dict(ENV, CROSSMODAL_PBS_QUEUE="preemptable")
    args, warnings = pbs.qsub_args("js.sh", rule="train_cdm", jobid=1, runtime=8 * 24 * 60,
                                   gpu=4, env=env)
    assert _opt(args, "-l", "walltime") == ["walltime=72:00:00"]
    assert len(warnings) == 1 and "train_cdm" in warnings[0] and "retries" in warnings[0]


def test_prod_needs_ten_nodes_and_multi_node_gpu_jobs_are_refused():
    with pytest.raises(pbs.PBSError, match="prod takes 10-496 nodes.*asks for 1"):
        pbs.qsub_args("js.sh", rule="train_vae", jobid=1, runtime=60, queue="prod", env=ENV)
    with pytest.raises(pbs.PBSError, match="8 GPUs.*polaris-allocation"):
        pbs.qsub_args("js.sh", rule="train_cdm", jobid=1, runtime=60, gpu=8, env=ENV)


def test_missing_account_is_a_clear_error():
    with pytest.raises(pbs.PBSError, match="CROSSMODAL_PBS_ACCOUNT"):
        pbs.qsub_args("js.sh", rule="train_vae", jobid=1, runtime=60, env={})


def test_runtime_under_the_queue_minimum_is_raised_to_five_minutes():
    """Every Polaris queue has "Time Min 5 min"; qsub refuses a shorter walltime."""
    args, warnings = pbs.qsub_args("js.sh", rule="fail_cluster_check", jobid=2, runtime=1, env=ENV)
    assert _opt(args, "-q") == ["debug"] and warnings == []
    assert _opt(args, "-l", "walltime") == ["walltime=00:05:00"]
    assert _opt(args, "-v") == ["CROSSMODAL_WALLTIME_S=300"]  # the job's time budget matches


def test_group_job_gets_one_node_whatever_its_members_add_up_to():
    """Snakemake sums ``nodes`` over a group's members (``{rule}`` is GROUP); the group runs on
    one node, so 32 tile jobs grouped must not ask for 32 nodes (in ``prod``)."""
    args, warnings = pbs.qsub_args("js.sh", rule="GROUP", jobid="6a8a40bd", runtime=30, nodes=32,
                                   env=ENV)
    assert _opt(args, "-l", "select") == ["select=1:system=polaris"]
    assert _opt(args, "-q") == ["debug"]
    assert len(warnings) == 1 and "add up to 32" in warnings[0]
    with pytest.raises(pbs.PBSError, match="8 GPUs.*group-components"):
        pbs.qsub_args("js.sh", rule="GROUP", jobid="x", runtime=30, nodes=8, gpu=8, env=ENV)


def test_site_setup_file_travels_with_qsub_v(tmp_path, monkeypatch):
    """PBS does not export the submitting environment to the job: the setup file the job
    script sources must be named in -v (as an absolute path)."""
    monkeypatch.chdir(tmp_path)
    env = dict(ENV, CROSSMODAL_PBS_SETUP="site/polaris.sh")
    args, _ = pbs.qsub_args("js.sh", rule="train_vae", jobid=7, runtime=600, gpu=1, env=env)
    assert _opt(args, "-v") == [
        f"CROSSMODAL_WALLTIME_S=36000,CROSSMODAL_PBS_SETUP={tmp_path}/site/polaris.sh"]
    with pytest.raises(pbs.PBSError, match="commas"):
        pbs.qsub_args("js.sh", rule="r", jobid=1, runtime=60,
                      env=dict(ENV, CROSSMODAL_PBS_SETUP="/a,b/setup.sh"))


def test_limit_rejection_from_debug_is_resubmitted_to_preemptable(tmp_path):
    """qsub refuses a job over a queue's job-count limit; an automatically routed debug job is
    then submitted to preemptable, an explicitly chosen queue is not changed."""
    qsub = tmp_path / "qsub"
    qsub.write_text(f'#!/bin/bash\necho "$@" >> {tmp_path}/qsub.calls\n'
                    'case " $* " in *" -q debug "*)\n'
                    '  echo "qsub: would exceed queue debug\'s per-user limit of jobs in \'Q\' state" >&2\n'
                    '  exit 38;; esac\n'
                    'echo 4183399.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov\n')
    qsub.chmod(0o755)
    env = dict(os.environ, **ENV, CROSSMODAL_QSUB=str(qsub))
    env.pop("CROSSMODAL_PBS_QUEUE", None)
    cmd = [sys.executable, "-m", "crossmodal.cluster.pbs", "submit", "--rule", "tile_slide",
           "--jobid", "3", "--runtime", "20", "--logdir", str(tmp_path / "logs"), "js.sh"]
    p = subprocess.run(cmd + ["--queue", "auto"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "4183399.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov\n"
    assert "submitting it to preemptable" in p.stderr
    calls = [c.split() for c in (tmp_path / "qsub.calls").read_text().splitlines()]
    assert [_opt(c, "-q") for c in calls] == [["debug"], ["preemptable"]]
    assert _opt(calls[1], "-r") == ["y"]
    (tmp_path / "qsub.calls").unlink()
    p = subprocess.run(cmd + ["--queue", "debug"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert p.returncode == 38 and "per-user limit" in p.stderr
    assert len((tmp_path / "qsub.calls").read_text().splitlines()) == 1


def test_walltime_format():
    assert pbs.walltime(90) == "01:30:00"
    assert pbs.walltime(0.2) == "00:01:00"  # PBS minimum we request
    assert pbs.walltime(72 * 60) == "72:00:00"


@pytest.mark.parametrize("case", sorted(EXPECTED))
def test_status_from_text_and_json_samples(case):
    text = pbs.parse_qstat_text((FIX / f"qstat_{case}.txt").read_text())
    js = pbs.parse_qstat_json((FIX / f"qstat_{case}.json").read_text())
    (jid, attrs), = text.items()
    assert list(js) == [jid]
    for key in ("job_state", "Exit_status", "comment", "Resource_List.walltime", "Error_Path"):
        assert attrs.get(key) == js[jid].get(key), key  # wrapped lines re-joined
    assert pbs.job_status(attrs) == pbs.job_status(js[jid]) == EXPECTED[case]


def test_explanations_name_walltime_and_preemption():
    wall = pbs.parse_qstat_json((FIX / "qstat_walltime.json").read_text())
    pre = pbs.parse_qstat_json((FIX / "qstat_preempted.json").read_text())
    assert "walltime" in pbs.explain(next(iter(wall.values())))
    assert "signal 15" in pbs.explain(next(iter(pre.values())))


# ----------------------------------------------------------- the commands the profile runs
def _fake_qstat(tmp_path: Path, case: str | None, *, json_broken=False, error=None) -> Path:
    """A ``qstat`` that prints a sample (records its arguments) -- PBS itself is not installable."""
    q = tmp_path / "qstat"
    fix_json = FIX / f"qstat_{case}.json" if case else None
    fix_txt = FIX / f"qstat_{case}.txt" if case else None
    body = f'echo "$@" >> {tmp_path}/qstat.calls\n'
    if error:
        body += f'echo "{error}" >&2; exit 35\n'
    elif json_broken:
        body += (f'case " $* " in *" -F json "*) echo "{{\\"Jobs\\": {{broken"; exit 0;; esac\n'
                 f'cat {fix_txt}\n')
    else:
        body += f'case " $* " in *" -F json "*) cat {fix_json};; *) cat {fix_txt};; esac\n'
    q.write_text("#!/bin/bash\n" + body)
    q.chmod(0o755)
    return q


def _status(tmp_path, qstat: Path, jobid="4183305.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"):
    env = dict(os.environ, CROSSMODAL_QSTAT=str(qstat))
    return subprocess.run([sys.executable, "-m", "crossmodal.cluster.pbs", "status", jobid],
                          capture_output=True, text=True, env=env, timeout=60)


def test_status_command_prints_one_word_and_falls_back_to_text_when_json_is_broken(tmp_path):
    p = _status(tmp_path, _fake_qstat(tmp_path, "walltime"))
    assert p.returncode == 0 and p.stdout == "failed\n"
    assert "killed at walltime" in p.stderr
    assert "-x -f -F json 4183305" in (tmp_path / "qstat.calls").read_text()
    (tmp_path / "qstat.calls").unlink()
    p = _status(tmp_path, _fake_qstat(tmp_path, "finished", json_broken=True),
                jobid="4183303.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov")
    assert p.stdout == "success\n"
    calls = (tmp_path / "qstat.calls").read_text().splitlines()
    assert calls == ["-x -f -F json 4183303.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov",
                     "-x -f 4183303.polaris-pbs-01.hsn.cm.polaris.alcf.anl.gov"]


def test_qstat_that_hangs_reads_running(tmp_path, monkeypatch):
    """A PBS server that does not answer must not stall Snakemake's status loop."""
    q = tmp_path / "qstat"
    q.write_text("#!/bin/bash\nexec sleep 30\n")
    q.chmod(0o755)
    monkeypatch.setattr(pbs, "QSTAT_TIMEOUT_S", 1)
    status, why = pbs.query_status("4183305.polaris-pbs-01", qstat=str(q))
    assert status == "running" and "will ask again" in why


def test_unknown_job_reads_failed_and_unreachable_server_reads_running(tmp_path):
    p = _status(tmp_path, _fake_qstat(tmp_path, None, error="qstat: Unknown Job Id 99.polaris"))
    assert p.stdout == "failed\n"
    p = _status(tmp_path, _fake_qstat(tmp_path, None,
                                      error="Connection refused\nqstat: cannot connect to server"))
    assert p.stdout == "running\n" and "will ask again" in p.stderr


def test_submit_command_from_the_profile_prints_the_qsub_line(tmp_path):
    import yaml

    prof = yaml.safe_load((REPO / "profiles" / "polaris" / "config.yaml").read_text())
    cmd = prof["cluster-generic-submit-cmd"].format_map(_Fmt(
        rule="train_vae", jobid="7", resources=_NS(runtime=600, nodes=1, gpu=4, pbs_queue="auto")))
    env = dict(os.environ, **ENV)
    env.pop("CROSSMODAL_PBS_QUEUE", None)
    argv = cmd.split()
    assert argv[:4] == ["python", "-m", "crossmodal.cluster.pbs", "submit"]
    p = subprocess.run([sys.executable, *argv[1:], "--print", "/w/snakejob.train_vae.7.sh"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 0, p.stderr
    args = json.loads(p.stdout)
    assert "select=1:system=polaris" in args and "filesystems=home:eagle" in args
    assert _opt(args, "-q") == ["preemptable"] and args[-1] == "/w/snakejob.train_vae.7.sh"
    # a job the queue cannot take: non-zero exit and the reason on stderr (Snakemake shows it)
    p = subprocess.run([sys.executable, *argv[1:], "--print", "--queue", "prod", "js.sh"],
                       capture_output=True, text=True, env=env, timeout=60)
    assert p.returncode == 2 and "prod takes 10-496 nodes" in p.stderr


def test_profile_job_script_template_formats_and_exports_job_end(tmp_path):
    tmpl = (REPO / "profiles" / "polaris" / "jobscript.sh").read_text()
    script = tmpl.format(properties='{"rule": "x"}', exec_job="echo END=$CROSSMODAL_JOB_END")
    f = tmp_path / "job.sh"
    f.write_text(script)
    env = dict(os.environ, CROSSMODAL_WALLTIME_S="120", PBS_O_WORKDIR=str(tmp_path))
    p = subprocess.run(["bash", str(f)], capture_output=True, text=True, env=env, timeout=30)
    assert p.returncode == 0, p.stderr
    end = int(p.stdout.strip().split("=")[1])
    import time

    assert 0 < end - time.time() <= 120


class _NS:
    def __init__(self, **kw):
        self.__dict__.update(kw)


class _Fmt(dict):
    pass


# ------------------------------------------------ the profile end to end, PBS faked
_FAKE_QSUB = r'''#!/bin/bash
# fake qsub: record the arguments, run the job script in the background as PBS would: in a
# clean environment holding only HOME, a system PATH, PBS_O_WORKDIR, PBS_JOBID and the -v
# variables (PBS does not export the submitting shell's environment), print the job id
D=__D__
echo "$@" >> "$D/qsub.calls"
n=$(( $(cat "$D/counter" 2>/dev/null || echo 0) + 1 )); echo $n > "$D/counter"
id="$n.fake-pbs"
vars=()
while [ $# -gt 1 ]; do
  [ "$1" = -v ] && IFS=, read -r -a list <<< "$2" && vars+=("${list[@]}")
  shift
done
cp "$1" "$D/job$n.sh"
( env -i HOME="$HOME" PATH=/usr/local/bin:/usr/bin:/bin PBS_O_WORKDIR="$PWD" PBS_JOBID="$id" \
    "${vars[@]}" bash "$D/job$n.sh" > "$D/job$n.out" 2>&1; echo $? > "$D/job$n.rc.tmp"
  mv "$D/job$n.rc.tmp" "$D/job$n.rc" ) < /dev/null > /dev/null 2>&1 &
echo "$id"
'''
_FAKE_QSTAT = r'''#!/bin/bash
# fake `qstat -x -f -F json ID`: R while the job script runs, then F with its exit status
D=__D__
id="${@: -1}"; n=${id%%.*}
if [ -f "$D/job$n.rc" ]; then
  echo "{\"Jobs\": {\"$id\": {\"job_state\": \"F\", \"Exit_status\": $(cat "$D/job$n.rc")}}}"
else
  echo "{\"Jobs\": {\"$id\": {\"job_state\": \"R\"}}}"
fi
'''


def test_polaris_profile_submits_runs_and_reports_a_failed_job_through_fake_pbs(tmp_path):
    """``snakemake --profile profiles/polaris`` with qsub/qstat replaced by fakes that run the
    generated job script locally: the training rule is submitted with the PBS resource syntax
    and succeeds, the rule failing on purpose is read back as failed through the status
    command, and Snakemake reports it."""
    fake = tmp_path / "pbs"
    fake.mkdir()
    for name, body in (("qsub", _FAKE_QSUB), ("qstat", _FAKE_QSTAT),
                       ("qdel", "#!/bin/bash\nexit 0\n")):
        (fake / name).write_text(body.replace("__D__", str(fake)))
        (fake / name).chmod(0o755)
    wd = tmp_path / "run"
    wd.mkdir()
    for name in ("config", "resources"):
        (wd / name).symlink_to(REPO / name, target_is_directory=True)
    (tmp_path / "fail.yaml").write_text("cluster:\n  check_fail: true\n  check_steps: 10\n")
    setup = tmp_path / "site-setup.sh"  # what a user puts `module load ...` and proxies in
    setup.write_text('echo "site setup sourced on $(hostname)" >&2\nexport SITE_SETUP_DONE=1\n')
    env = dict(os.environ, **ENV, PATH=f"{fake}:{Path(sys.executable).parent}:{os.environ['PATH']}",
               CROSSMODAL_PBS_SETUP=str(setup))
    env.pop("CROSSMODAL_PBS_QUEUE", None)
    env.pop("CROSSMODAL_QSTAT", None)
    env.pop("CROSSMODAL_QSUB", None)
    p = subprocess.run(
        [str(Path(sys.executable).parent / "snakemake"), "--snakefile",
         str(REPO / "tests/slurm/Snakefile"), "--profile", str(REPO / "profiles/polaris"),
         "--directory", str(wd), "--retries", "0", "--max-status-checks-per-second", "2",
         "results/cluster_check/fail_check.json",
         "--configfile", str(REPO / "config/config.yaml"), str(tmp_path / "fail.yaml"),
         "--config", "device=cpu"],
        capture_output=True, text=True, env=env, timeout=600)
    out = p.stdout + p.stderr
    assert p.returncode != 0 and "Error in rule fail_cluster_check" in out, out[-4000:]
    calls = (fake / "qsub.calls").read_text().splitlines()
    assert len(calls) == 2, calls
    train = calls[0].split()
    assert _opt(train, "-A") == ["CrossModalProj"] and _opt(train, "-q") == ["debug"]
    assert {"select=1:system=polaris", "walltime=00:10:00", "filesystems=home:eagle",
            "place=scatter"} <= set(_opt(train, "-l"))
    assert _opt(train, "-N") == ["smk.train_cluster_check"] and "-r" not in train
    assert _opt(train, "-v") == [f"CROSSMODAL_WALLTIME_S=600,CROSSMODAL_PBS_SETUP={setup}"]
    # the job ran in PBS's clean environment and still found the site setup file
    assert "site setup sourced" in (fake / "job1.out").read_text()
    # the generated job script: our template around Snakemake's job command
    script = (fake / "job1.sh").read_text()
    assert "crossmodal: PBS job" in script and "CROSSMODAL_JOB_END" in script
    assert "train_cluster_check" in script
    assert (fake / "job1.rc").read_text().strip() == "0"
    assert (fake / "job2.rc").read_text().strip() != "0"
    done = json.loads((wd / "results/cluster_check/train.json").read_text())
    assert done["finished"] and done["steps"] == 10
    assert "failing on purpose" in (wd / "logs/fail_cluster_check/all.log").read_text()
    assert not (wd / "results/cluster_check/fail_check.json").exists()
