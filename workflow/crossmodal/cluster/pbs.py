"""PBS Pro (ALCF Polaris) glue for Snakemake's ``cluster-generic`` executor.

Three commands, used by ``profiles/polaris/config.yaml``::

    python -m crossmodal.cluster.pbs submit --rule R --jobid J --runtime MIN --nodes N \
        --gpu G --queue Q JOBSCRIPT           # runs qsub, prints the PBS job id
    python -m crossmodal.cluster.pbs status JOBID   # prints running / success / failed
    qdel JOBID                                       # cancel (no wrapper needed)

``submit`` builds ``qsub -A $CROSSMODAL_PBS_ACCOUNT -q <queue> -l select=<N>:system=polaris
-l place=scatter -l walltime=HH:MM:SS -l filesystems=home:eagle -N <rule> -j oe -o
logs/pbs/<rule>-<jobid>.log -v CROSSMODAL_WALLTIME_S=<s>[,CROSSMODAL_PBS_SETUP=<file>] [-r y]
JOBSCRIPT`` (``--print`` shows it as JSON instead of submitting).  Every Polaris job gets whole
nodes (4 A100 each).  ``-r y`` (rerunnable) is set for the ``preemptable`` queue, so PBS
requeues a preempted job, which then resumes from its checkpoint.  The walltime is the rule's
``runtime`` (minutes) raised to the queues' 5-minute minimum and capped at the queue's maximum; a
capped training job is stopped by its time budget, exits 75 and Snakemake's ``retries``
resubmit it (see ``crossmodal.training``).

PBS does not pass the submitting shell's environment to a job (only ``PBS_O_*`` and ``-v``), so
``$CROSSMODAL_PBS_SETUP`` (the site setup file the job script sources) travels with ``-v``.  A
Snakemake group job (``{rule}`` is ``GROUP``) runs on one node, whatever the summed ``nodes`` of
its members.  When the queue was chosen automatically as ``debug`` and PBS refuses the job for a
per-user/per-project job limit, the job is submitted once more to ``preemptable``.

``status`` asks ``qstat -x -f -F json JOBID`` (falls back to the text ``qstat -x -f`` when the
JSON is unparsable, a known PBS Pro problem with some environment variables) and maps it:

* ``Q``/``H``/``W``/``T``/``R``/``E``/``B``/``S``/``U``/``M`` -> ``running`` (a job
  requeued after preemption is ``Q`` again, with ``run_count`` >= 1, and will rerun);
  a job that PBS held after too many failed start attempts -> ``failed``;
* ``F``/``X`` with ``Exit_status`` 0 -> ``success``; any other exit status -> ``failed``
  (e.g. ``-29`` JOB_EXEC_KILL_WALLTIME, ``271`` = 256 + SIGTERM after preemption or ``qdel``);
* a job id PBS no longer knows -> ``failed`` (never wait forever); a qstat that cannot reach
  the server -> ``running`` (retried at the next status check) with a warning on stderr.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass

ACCOUNT_ENV = "CROSSMODAL_PBS_ACCOUNT"
QUEUE_ENV = "CROSSMODAL_PBS_QUEUE"
FILESYSTEMS_ENV = "CROSSMODAL_PBS_FILESYSTEMS"
DEFAULT_FILESYSTEMS = "home:eagle"  # ALCF: valid names are home and eagle
GPUS_PER_NODE = 4  # Polaris: 4x A100-40GB per node


@dataclass(frozen=True)
class Queue:
    min_nodes: int
    max_nodes: int
    max_minutes: int
    min_minutes: int = 5  # every Polaris queue: "Time Min 5 min"


#: Polaris execution queues (ALCF "Running Jobs on Polaris"; check ``qstat -Qf <queue>``).
#: ``prod`` is a routing queue that only accepts >= 10 nodes.  ``capacity`` limits are the
#: ones ALCF published in 2025 and may change.
POLARIS_QUEUES = {
    "debug": Queue(1, 2, 60),
    "debug-scaling": Queue(1, 10, 60),
    "preemptable": Queue(1, 10, 72 * 60),
    "capacity": Queue(1, 4, 168 * 60),
    "demand": Queue(1, 56, 60),
    "prod": Queue(10, 496, 24 * 60),
}

#: PBS Pro job states that are not final
ACTIVE_STATES = set("QHWTREBSUM")
FINAL_STATES = set("FX")
SETUP_ENV = "CROSSMODAL_PBS_SETUP"
#: qsub's messages when a queue's job-count limit is reached (PBS Pro ``max_queued`` /
#: ``max_run``-style limits), e.g. "would exceed queue debug's per-user limit of jobs in 'Q' state"
_LIMIT_RE = re.compile(r"would exceed|[Mm]aximum number of jobs|limit of jobs")
#: seconds to wait for qstat before answering ``running`` (asked again at the next check)
QSTAT_TIMEOUT_S = 120

_RUNNING, _SUCCESS, _FAILED = "running", "success", "failed"


class PBSError(ValueError):
    """A submission PBS would reject; the message names the rule and the setting."""


def walltime(minutes: float) -> str:
    """Minutes -> ``HH:MM:SS`` (hours may exceed 24)."""
    s = max(60, int(round(float(minutes) * 60)))
    return f"{s // 3600:02d}:{s % 3600 // 60:02d}:{s % 60:02d}"


def choose_queue(nodes: int, minutes: float) -> str:
    """The queue a job of ``nodes`` nodes and ``minutes`` minutes goes to by default:
    ``debug`` when it fits (<= 2 nodes, <= 1 h), ``prod`` from 10 nodes, else ``preemptable``."""
    if nodes >= 10:
        return "prod"
    if nodes <= 2 and minutes <= 60:
        return "debug"
    return "preemptable"


def qsub_args(jobscript: str, *, rule: str, jobid: str | int, runtime: float, nodes: int = 1,
              gpu: int = 0, queue: str = "", account: str | None = None, filesystems: str | None = None,
              logdir: str = "logs/pbs", env: dict | None = None) -> tuple[list[str], list[str]]:
    """The ``qsub`` argument list for one Snakemake job, and warnings to show.

    ``queue`` empty or ``auto``: ``$CROSSMODAL_PBS_QUEUE`` if set, else :func:`choose_queue`.
    ``account``: else ``$CROSSMODAL_PBS_ACCOUNT`` (required).
    """
    env = os.environ if env is None else env
    warnings: list[str] = []
    nodes = max(1, int(nodes))
    if rule == "GROUP":
        # Snakemake sums ``nodes`` (and ``gpu``) over the members of a group job, but the group
        # runs on the PBS job's first node only: asking for more nodes would leave them idle.
        if nodes > 1:
            warnings.append(f"group job {jobid}: its members' nodes add up to {nodes}; a group "
                            f"runs on one node, requesting 1")
        nodes = 1
        if int(gpu) > GPUS_PER_NODE:
            raise PBSError(f"group job {jobid}: its members ask for {gpu} GPUs at once, more than "
                           f"the {GPUS_PER_NODE} of the one node a group runs on -- use fewer "
                           f"--group-components")
    if int(gpu) > GPUS_PER_NODE * nodes:
        raise PBSError(f"rule {rule}: {gpu} GPUs do not fit on {nodes} node(s) of "
                       f"{GPUS_PER_NODE}; one PBS job per rule runs on one node -- use "
                       f"profiles/polaris-allocation for multi-node training")
    account = account or env.get(ACCOUNT_ENV)
    if not account:
        raise PBSError(f"rule {rule}: no PBS account; export {ACCOUNT_ENV}=<your ALCF project>")
    queue = (queue or "").strip("'\" ")
    if queue in ("", "auto"):
        queue = env.get(QUEUE_ENV) or choose_queue(nodes, float(runtime))
    q = POLARIS_QUEUES.get(queue)
    if q is None:
        warnings.append(f"rule {rule}: queue {queue!r} is not a known Polaris queue "
                        f"({', '.join(POLARIS_QUEUES)}); submitting as asked")
    else:
        if not q.min_nodes <= nodes <= q.max_nodes:
            raise PBSError(f"rule {rule}: queue {queue} takes {q.min_nodes}-{q.max_nodes} nodes, "
                           f"the job asks for {nodes} (prod needs >= 10 nodes; use preemptable, "
                           f"debug or capacity for fewer)")
        if float(runtime) > q.max_minutes:
            warnings.append(f"rule {rule}: runtime {float(runtime):.0f} min exceeds the "
                            f"{queue} maximum of {q.max_minutes} min; requesting "
                            f"{walltime(q.max_minutes)} -- a training job stops at its time "
                            f"budget with a checkpoint and Snakemake's retries resume it")
            runtime = q.max_minutes
        if float(runtime) < q.min_minutes:
            runtime = q.min_minutes  # PBS refuses a walltime under the queue minimum
    name = re.sub(r"[^A-Za-z0-9_.-]", "_", f"smk.{rule}")[:230]
    args = ["qsub", "-A", account, "-q", queue,
            "-l", f"select={nodes}:system=polaris", "-l", "place=scatter",
            "-l", f"walltime={walltime(runtime)}",
            "-l", f"filesystems={filesystems or env.get(FILESYSTEMS_ENV) or DEFAULT_FILESYSTEMS}",
            "-N", name, "-j", "oe", "-o", f"{logdir}/{rule}-{jobid}.log",
            "-v", ",".join(_job_variables(rule, runtime, env))]
    if queue == "preemptable":
        args += ["-r", "y"]
    args.append(jobscript)
    return args, warnings


def _job_variables(rule: str, runtime: float, env) -> list[str]:
    """``-v`` list: the walltime for the training time budget and, when set, the site setup
    file (PBS does not export the submitting environment to the job)."""
    out = [f"CROSSMODAL_WALLTIME_S={int(float(runtime) * 60)}"]
    setup = env.get(SETUP_ENV)
    if setup:
        setup = os.path.abspath(os.path.expanduser(setup))
        if "," in setup or "'" in setup or '"' in setup:
            raise PBSError(f"rule {rule}: {SETUP_ENV}={setup!r}: qsub -v cannot pass a path "
                           f"with commas or quotes; move the file")
        out.append(f"{SETUP_ENV}={setup}")
    return out


def is_limit_rejection(stderr: str) -> bool:
    """True when qsub refused a job because a queue's job-count limit is reached."""
    return bool(_LIMIT_RE.search(stderr or ""))


# ------------------------------------------------------------------ status
def parse_qstat_text(text: str) -> dict[str, dict[str, str]]:
    """Parse ``qstat -x -f`` text into ``{job id: {attribute: value}}``.

    Handles PBS's line wrapping (continuation lines start with a tab)."""
    jobs: dict[str, dict[str, str]] = {}
    cur: dict[str, str] | None = None
    key = None
    for line in text.splitlines():
        if line.startswith("Job Id:"):
            cur = jobs.setdefault(line.split(":", 1)[1].strip(), {})
            key = None
        elif cur is not None and line.startswith("\t") and key is not None:
            cur[key] += line[1:].rstrip("\r")
        elif cur is not None and " = " in line and line.startswith("    "):
            key, val = line.strip().split(" = ", 1)
            cur[key] = val
        elif not line.strip():
            key = None
    return jobs


def parse_qstat_json(text: str) -> dict[str, dict[str, str]]:
    """Parse ``qstat -x -f -F json`` into the same flat form as :func:`parse_qstat_text`."""
    data = json.loads(text)
    out: dict[str, dict[str, str]] = {}
    for jid, attrs in (data.get("Jobs") or {}).items():
        flat: dict[str, str] = {}
        for k, v in attrs.items():
            if isinstance(v, dict):
                for k2, v2 in v.items():
                    flat[f"{k}.{k2}"] = str(v2)
            else:
                flat[k] = str(v)
        out[jid] = flat
    return out


def job_status(attrs: dict[str, str]) -> str:
    """``running`` / ``success`` / ``failed`` for one job's attributes."""
    state = attrs.get("job_state", "")
    if state in FINAL_STATES:
        try:
            code = int(attrs.get("Exit_status", "1"))
        except ValueError:
            code = 1
        return _SUCCESS if code == 0 else _FAILED
    if state == "H" and "too many failed attempts" in attrs.get("comment", ""):
        return _FAILED
    if state in ACTIVE_STATES:
        return _RUNNING
    return _FAILED


def explain(attrs: dict[str, str]) -> str:
    """A one-line reason for the log (exit status, PBS comment)."""
    code = attrs.get("Exit_status")
    why = {"-29": "killed at walltime", "-27": "killed: memory limit"}.get(str(code), "")
    if code and code.lstrip("-").isdigit() and int(code) > 256:
        sig = int(code) - 256
        why = f"killed by signal {sig} ({'preempted or qdel' if sig == 15 else 'signal'})"
    return (f"state={attrs.get('job_state')} exit={code} {why} "
            f"run_count={attrs.get('run_count', '?')} comment={attrs.get('comment', '')!r}").strip()


def _find(jobs: dict[str, dict], jobid: str) -> dict | None:
    if jobid in jobs:
        return jobs[jobid]
    short = jobid.split(".")[0]
    for k, v in jobs.items():
        if k.split(".")[0] == short:
            return v
    return None


def query_status(jobid: str, qstat: str | None = None) -> tuple[str, str]:
    """Run qstat for ``jobid``; return (status, explanation)."""
    qstat = qstat or os.environ.get("CROSSMODAL_QSTAT") or shutil.which("qstat") or "qstat"
    try:
        p = subprocess.run([qstat, "-x", "-f", "-F", "json", jobid], capture_output=True,
                           text=True, timeout=QSTAT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return _RUNNING, f"qstat failed (no answer in {QSTAT_TIMEOUT_S} s); will ask again"
    if p.returncode != 0:
        err = (p.stderr or p.stdout).strip()
        if "Unknown Job Id" in err or "Job has finished" in err:
            return _FAILED, f"PBS does not know job {jobid} ({err})"
        return _RUNNING, f"qstat failed ({err}); will ask again"
    try:
        jobs = parse_qstat_json(p.stdout)
    except (json.JSONDecodeError, AttributeError):
        try:
            t = subprocess.run([qstat, "-x", "-f", jobid], capture_output=True, text=True,
                               timeout=QSTAT_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return _RUNNING, f"qstat failed (no answer in {QSTAT_TIMEOUT_S} s); will ask again"
        if t.returncode != 0:
            return _RUNNING, f"qstat failed ({t.stderr.strip()}); will ask again"
        jobs = parse_qstat_text(t.stdout)
    attrs = _find(jobs, jobid)
    if attrs is None:
        return _FAILED, f"job {jobid} not in qstat output"
    return job_status(attrs), explain(attrs)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m crossmodal.cluster.pbs", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("submit", help="qsub one Snakemake job script; print the job id")
    s.add_argument("--rule", required=True)
    s.add_argument("--jobid", required=True)
    s.add_argument("--runtime", type=float, required=True, help="minutes")
    s.add_argument("--nodes", type=int, default=1)
    s.add_argument("--gpu", type=int, default=0)
    s.add_argument("--queue", default="")
    s.add_argument("--logdir", default="logs/pbs")
    s.add_argument("--print", action="store_true", help="print the qsub argv as JSON, do not submit")
    s.add_argument("jobscript")
    st = sub.add_parser("status", help="print running / success / failed for a PBS job id")
    st.add_argument("jobid")
    a = p.parse_args(argv)
    if a.cmd == "submit":
        try:
            args, warnings = qsub_args(a.jobscript, rule=a.rule, jobid=a.jobid, runtime=a.runtime,
                                       nodes=a.nodes, gpu=a.gpu, queue=a.queue,
                                       logdir=a.logdir)
        except PBSError as e:
            print(f"crossmodal.cluster.pbs: {e}", file=sys.stderr)
            return 2
        for w in warnings:
            print(f"crossmodal.cluster.pbs: warning: {w}", file=sys.stderr)
        if a.print:
            print(json.dumps(args))
            return 0
        os.makedirs(a.logdir, exist_ok=True)
        qsub = os.environ.get("CROSSMODAL_QSUB") or "qsub"
        args[0] = qsub
        r = subprocess.run(args, capture_output=True, text=True)
        auto = (a.queue or "").strip("'\" ") in ("", "auto") and not os.environ.get(QUEUE_ENV)
        if (r.returncode != 0 and auto and args[args.index("-q") + 1] == "debug"
                and is_limit_rejection(r.stderr + r.stdout)):
            # the debug queue's job limits are small; the job fits preemptable (<= 1 h, <= 2 nodes)
            print(f"crossmodal.cluster.pbs: warning: debug refused rule {a.rule} "
                  f"({r.stderr.strip()}); submitting it to preemptable", file=sys.stderr)
            args, _ = qsub_args(a.jobscript, rule=a.rule, jobid=a.jobid, runtime=a.runtime,
                                nodes=a.nodes, gpu=a.gpu, queue="preemptable", logdir=a.logdir)
            args[0] = qsub
            r = subprocess.run(args, capture_output=True, text=True)
        if r.returncode != 0:
            print(f"crossmodal.cluster.pbs: qsub failed ({r.returncode}): {r.stderr.strip()}",
                  file=sys.stderr)
            return r.returncode
        print(r.stdout.strip().splitlines()[-1])
        return 0
    status, why = query_status(a.jobid)
    print(status)
    if status != _RUNNING or "failed" in why:
        print(f"crossmodal.cluster.pbs: job {a.jobid}: {why}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
