"""Walltime-proof, resumable training shared by every paper's training step.

Usage (inside a step function; the same code runs on a laptop CPU, one GPU, or many GPUs
under ``accelerate launch``)::

    from crossmodal import training

    @step("train_toy")
    def train_toy(inputs, outputs, params, *, threads=1, log=None):
        # several GPUs requested by the rule -> re-run this step under `accelerate launch`
        if training.relaunch_under_accelerate("train_toy", inputs, outputs, params, log=log):
            return
        acc = training.make_accelerator(params.get("device", "auto"))
        training.seed_everything(params["seed"])
        model, opt = build(...)
        model, opt = acc.prepare(model, opt)
        objects = {"model": model, "opt": opt, "ema": ema, "gen": data_generator}
        # the with-block puts the previous SIGTERM/SIGUSR1 handlers back however it ends
        with training.ResumableRun(outputs["ckpt_dir"], every_steps=params["checkpoint_every"],
                                   accelerator=acc, meta={"hp": params["hp"]}) as run:
            start = run.restore(objects)              # 0 on a fresh start
            for step in range(start, params["steps"]):
                idx = training.step_batch(step, n=len(ds), batch_size=bs, seed=params["seed"])
                idx = np.array_split(idx, acc.num_processes)[acc.process_index]  # global batch
                ...one optimisation step on ds[idx]...
                run.step_done(step + 1, objects)      # checkpoint every N steps; on SIGTERM/
                                                      # SIGUSR1 (or near time_limit_s): save + exit 75
            run.finish(outputs["done"], {"steps": params["steps"]})

Contract
--------
* ``step`` passed to :meth:`ResumableRun.maybe_save` / :meth:`~ResumableRun.step_done` is the
  number of *completed* optimisation steps; :meth:`~ResumableRun.restore` returns it, so
  ``range(start, total)`` neither repeats nor skips a step.
* Checkpoints are folders ``<ckpt_dir>/step-000000123/`` written into a ``.tmp-`` sibling and
  renamed when complete, so a job killed at any moment (even SIGKILL) leaves either the old
  or the new checkpoint, never a half-written one; the newest ``keep`` are kept.
* Each holds ``state.pt`` (every object's ``state_dict``, the step, ``meta``) and one
  ``rng-rank<r>.pt`` per process (python, numpy, torch CPU and CUDA RNG states).
* **Exit status 75** (``EX_TEMPFAIL``, :data:`EXIT_PREEMPTED`) means "checkpoint saved, stopped
  early because the scheduler asked (SIGTERM / SIGUSR1) or the time budget ran out; rerun me".
  Training rules declare ``retries:`` so Snakemake reruns the job, which resumes.
* SIGTERM is what PBS Pro (``qdel``, walltime, preemption) and SLURM (walltime, ``scancel``,
  preemption) send before SIGKILL.  Their grace period is short (PBS ``kill_delay`` 10 s by
  default, SLURM ``KillWait`` 30 s), so for big models also pass ``time_limit_s`` (the rule's
  ``runtime`` resource) -- the run then stops cleanly ``margin_s`` before the walltime.
* Each checkpoint records the job's input-file fingerprint (:func:`inputs_fingerprint`, set by
  :func:`crossmodal.steps.run`); checkpoints of other inputs are deleted and training restarts,
  so new data never continues (or, after a finished run, silently reuses) old weights.
* Determinism: with a deterministic model and data order (:func:`step_batch`) a killed and
  resumed run ends with the same weights as an uninterrupted one (tested on CPU in
  ``tests/test_training.py``).

Multi-GPU: rules request ``resources: gpu=N`` and pass it as ``params: num_processes``; the
step calls :func:`relaunch_under_accelerate`, which runs ``accelerate launch --num_processes N
-m crossmodal <step> ...`` (see :func:`launch_command`).  Snakemake does not set
``CUDA_VISIBLE_DEVICES``; where jobs share a node (``$CROSSMODAL_GPU_SLOTS``, set by the Polaris
allocation) :func:`claim_gpus` pins each job to GPUs no other job holds; each process picks
``cuda:LOCAL_RANK`` of those through accelerate.  With
``gpu`` 0 or 1 (the toy config on CPU) the step runs in-process: the same code path.
Under ``torchrun``/``accelerate launch`` a stop makes the workers exit 75 but the launcher 1;
:func:`relaunch_under_accelerate` turns that into 75 when it forwarded the stop signal.
"""
from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from crossmodal import fileio

log = logging.getLogger(__name__)

#: exit status of a run that saved a checkpoint and stopped early (sysexits EX_TEMPFAIL)
EXIT_PREEMPTED = 75

#: environment variables holding the job's end time (epoch seconds): set by
#: profiles/polaris/jobscript.sh and profiles/slurm (SLURM_JOB_END_TIME where Slurm sets it)
JOB_END_ENV = ("CROSSMODAL_JOB_END", "SLURM_JOB_END_TIME")

_CKPT_RE = re.compile(r"^step-(\d{9})$")

#: seconds between time-triggered checkpoints (ResumableRun ``every_s``), set by a cluster profile
EVERY_S_ENV = "CROSSMODAL_CHECKPOINT_EVERY_S"

#: fingerprint of the running step's input files (set by :func:`crossmodal.steps.run`, inherited by
#: ``accelerate launch`` workers); a checkpoint written for other inputs is not resumed
INPUTS_ENV = "CROSSMODAL_INPUTS_FINGERPRINT"

#: LMDB's reader lock table: rewritten by readers, not part of a tile set's content
_FINGERPRINT_SKIP = {"lock.mdb"}


def inputs_fingerprint(inputs) -> str:
    """A short hash of the input files' paths, sizes and modification times (directories such as
    tile LMDBs: every file under them but LMDB's ``lock.mdb``; a missing path counts as missing).
    It changes exactly when Snakemake's default mtime trigger would rerun the job, and costs
    one ``stat`` per file, nothing read."""
    import hashlib

    paths: list[str] = []

    def flat(v):
        if isinstance(v, Mapping):
            for x in v.values():
                flat(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                flat(x)
        elif v is not None:
            paths.append(str(v))

    flat(inputs)
    h = hashlib.sha256()
    for p in sorted(set(paths)):
        q = Path(p)
        if q.is_dir():
            for f in sorted(q.rglob("*")):
                if f.is_file() and f.name not in _FINGERPRINT_SKIP:
                    st = f.stat()
                    h.update(f"{p}|{f.relative_to(q)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        elif q.exists():
            st = q.stat()
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        else:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:16]


#: one JSON line per early stop (step, reason, time) in the checkpoint folder; listed as
#: ``stops`` in the finished marker, so a run's preemptions stay visible after its retries
STOPS_FILE = "stops.jsonl"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used for this run; the message names the folder."""


# --------------------------------------------------------------------------------------
# devices and seeds
# --------------------------------------------------------------------------------------
def make_accelerator(device: str = "auto", mixed_precision: str = "auto", **kw):
    """An ``accelerate.Accelerator`` for ``device`` (``auto`` / ``cpu`` / ``cuda``).

    ``mixed_precision="auto"`` picks ``bf16`` on a CUDA device that supports it (A100, H100)
    and ``"no"`` elsewhere.  Under ``accelerate launch`` each process gets ``cuda:LOCAL_RANK``.
    Extra keyword arguments go to ``Accelerator``.
    """
    import torch
    from accelerate import Accelerator

    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda requested but torch sees no CUDA device "
                           "(check the job's GPU request and CUDA_VISIBLE_DEVICES)")
    cpu = device == "cpu" or (device == "auto" and not torch.cuda.is_available())
    if mixed_precision == "auto":
        mixed_precision = "bf16" if (not cpu and torch.cuda.is_bf16_supported()) else "no"
    acc = Accelerator(cpu=cpu, mixed_precision=mixed_precision, **kw)
    log.info("accelerator: device=%s mixed_precision=%s process %d/%d", acc.device,
             acc.mixed_precision, acc.process_index, acc.num_processes)
    return acc


#: GPUs of the node that several jobs of one Snakemake share (profiles/polaris-allocation sets
#: 4); unset = no pinning, as on a per-job cluster profile where the scheduler pins the GPUs
GPU_SLOTS_ENV = "CROSSMODAL_GPU_SLOTS"
_CLAIMED_GPUS: list = []  # the open lock files of this process's GPUs (released at exit)


def claim_gpus(n: int, *, env: dict | None = None, lock_dir=None, wait_s: float = 900,
               poll_s: float = 5) -> list[str] | None:
    """Pin this job (and the processes it launches) to ``n`` GPUs no other job of the node holds.

    Snakemake's local executor counts ``gpu`` resources but does not say which GPU a job gets:
    inside a Polaris allocation four ``gpu=1`` jobs would all train on GPU 0.  With
    ``$CROSSMODAL_GPU_SLOTS`` (the node's GPU count) set, the pool is GPUs ``0..slots-1`` - or
    the ones ``CUDA_VISIBLE_DEVICES`` already lists when a site sets it for the whole job.  Each
    GPU is a lock file ``gpu<id>.lock`` (``fcntl.flock``, held until this process exits, even
    when killed); the first ``n`` free ones are taken and ``CUDA_VISIBLE_DEVICES`` set to them.
    Snakemake never starts more GPU jobs than ``--resources gpu=``, so a GPU frees up within
    ``wait_s`` unless a stray process holds it (then a clear error).  Returns the GPU ids, or
    None when nothing is pinned (no GPU asked for, no slots configured, or the job sees no more
    GPUs than it asked for - e.g. the scheduler pinned it already)."""
    import fcntl
    import tempfile

    env = os.environ if env is None else env
    n = int(n or 0)
    slots = env.get(GPU_SLOTS_ENV)
    if n <= 0 or not slots:
        return None
    try:
        total = int(slots)
    except ValueError:
        raise ValueError(f"${GPU_SLOTS_ENV}={slots!r}: expected the number of GPUs of the node") from None
    visible = env.get("CUDA_VISIBLE_DEVICES")
    pool = [str(i) for i in range(total)] if visible is None else [v.strip() for v in visible.split(",") if v.strip()]
    if visible is not None and len(pool) <= n:
        return None
    if n > len(pool):
        raise ValueError(f"the job asks for {n} GPUs, the node has {total} (${GPU_SLOTS_ENV})")
    root = Path(lock_dir or env.get("CROSSMODAL_GPU_LOCK_DIR") or tempfile.gettempdir())
    folder = root / f"crossmodal-gpus-{os.getuid()}"
    folder.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + float(wait_s)
    while True:
        held = []
        for gid in pool:
            fh = open(folder / f"gpu{gid}.lock", "a")  # noqa: SIM115 - kept open while the job runs
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            held.append((gid, fh))
            if len(held) == n:
                break
        if len(held) == n:
            _CLAIMED_GPUS.extend(fh for _, fh in held)
            ids = [gid for gid, _ in held]
            env["CUDA_VISIBLE_DEVICES"] = ",".join(ids)
            log.info("GPUs %s of %s claimed (CUDA_VISIBLE_DEVICES; locks in %s)", ids, pool, folder)
            return ids
        for _, fh in held:
            fh.close()
        if time.monotonic() >= deadline:
            raise RuntimeError(f"no {n} free GPU(s) of {len(pool)} after {wait_s:.0f} s: another process "
                               f"holds the locks in {folder} (${GPU_SLOTS_ENV}={total})")
        time.sleep(poll_s)


def gpu_request(config: Mapping[str, Any], n: int) -> int:
    """GPUs a rule asks for: ``n``, or 0 when the config pins ``device: cpu`` (toy runs on a
    cluster without GPUs).  Use in rules as ``resources: gpu=gpu_request(config, 4)``."""
    return 0 if config.get("device") == "cpu" else int(n)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices) from ``seed``."""
    import torch

    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def step_batch(step: int, *, n: int, batch_size: int, seed: int) -> np.ndarray:
    """Sample indices for global optimisation step ``step`` (0-based), without state.

    Epoch ``e = step // (n // batch_size)`` uses the permutation drawn from ``(seed, e)``;
    the last incomplete batch of each epoch is dropped.  Because the batch depends only on
    ``step``, a resumed run sees exactly the batches an uninterrupted run would.
    """
    if n < batch_size or batch_size < 1:
        raise ValueError(f"step_batch: need 1 <= batch_size <= n, got batch_size={batch_size}, n={n}")
    per_epoch = n // batch_size
    epoch, k = divmod(int(step), per_epoch)
    perm = np.random.default_rng([int(seed), epoch]).permutation(n)
    return perm[k * batch_size:(k + 1) * batch_size]


# --------------------------------------------------------------------------------------
# RNG state
# --------------------------------------------------------------------------------------
def _rng_state() -> dict:
    import torch

    st = {"python": random.getstate(), "numpy": np.random.get_state(),
          "torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        st["cuda"] = torch.cuda.get_rng_state_all()
    return st


def _set_rng_state(st: dict) -> None:
    import torch

    random.setstate(st["python"])
    np.random.set_state(st["numpy"])
    torch.set_rng_state(st["torch"])
    if "cuda" in st and torch.cuda.is_available():
        n = min(len(st["cuda"]), torch.cuda.device_count())
        for i in range(n):
            torch.cuda.set_rng_state(st["cuda"][i], i)


# --------------------------------------------------------------------------------------
# checkpoints
# --------------------------------------------------------------------------------------
def _fsync_tree(path: Path) -> None:
    for p in sorted(path.rglob("*")):
        if p.is_file():
            with open(p, "rb") as fh:
                os.fsync(fh.fileno())
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class ResumableRun:
    """Checkpoint/resume bookkeeping for one training run (see the module docstring).

    Parameters
    ----------
    ckpt_dir: folder holding this run's checkpoints (created).
    every_steps: save when ``step % every_steps == 0``.
    accelerator: an ``accelerate.Accelerator`` (models are unwrapped before saving; only the
        main process writes model state, every process writes its RNG state).
    keep: how many complete checkpoints to keep (newest first); at least 1.
    meta: JSON-able description of the run (hyperparameters); resuming a checkpoint whose
        ``meta`` differs is an error, so a changed config never silently continues old weights.
    time_limit_s: wall-clock budget of the job (e.g. the rule's ``runtime`` in seconds);
        ``should_stop`` turns true ``margin_s`` before it runs out, or before the job end
        time in ``$CROSSMODAL_JOB_END`` / ``$SLURM_JOB_END_TIME`` if that is earlier.
    handle_signals: install SIGTERM / SIGUSR1 handlers that set ``should_stop``.
    every_s: also save when this many seconds passed since the last save (or the start), at
        the next step: a bound on the work lost to a kill without warning (Polaris'
        ``preemptable`` queue).  Default ``$CROSSMODAL_CHECKPOINT_EVERY_S`` (set by a cluster
        profile), else none: only ``every_steps``.
    inputs: fingerprint of the training data (:func:`inputs_fingerprint`), stored with each
        checkpoint.  Default ``$CROSSMODAL_INPUTS_FINGERPRINT``, which :func:`crossmodal.steps.run`
        sets for the step it runs.  Checkpoints written for other inputs (Snakemake reran the job
        because its inputs changed) are deleted and training starts over, instead of resuming -
        or, for a finished run, reusing - weights trained on the old data.
    """

    def __init__(self, ckpt_dir, *, every_steps: int, accelerator=None, keep: int = 2,
                 meta: Mapping[str, Any] | None = None, time_limit_s: float | None = None,
                 margin_s: float = 300.0, handle_signals: bool = True, every_s: float | None = None,
                 inputs: str | None = None):
        if int(every_steps) < 1:
            raise ValueError(f"every_steps must be >= 1, got {every_steps}")
        if int(keep) < 1:
            raise ValueError(f"keep must be >= 1, got {keep}")
        self.ckpt_dir = Path(ckpt_dir)
        self.every_steps = int(every_steps)
        self.accelerator = accelerator
        self.keep = int(keep)
        self.meta = json.loads(json.dumps(meta or {}, sort_keys=True, default=str))
        self.inputs = inputs if inputs is not None else (os.environ.get(INPUTS_ENV) or None)
        ends = [time.time() + float(time_limit_s)] if time_limit_s else []
        for var in JOB_END_ENV:  # set by the cluster job scripts (epoch seconds)
            if os.environ.get(var, "").strip().isdigit():
                ends.append(float(os.environ[var]))
        self.deadline = min(ends) - float(margin_s) if ends else None
        if every_s is None and os.environ.get(EVERY_S_ENV, "").strip():
            try:
                every_s = float(os.environ[EVERY_S_ENV])
            except ValueError:
                raise ValueError(f"${EVERY_S_ENV}={os.environ[EVERY_S_ENV]!r}: expected seconds") from None
        if every_s is not None and float(every_s) <= 0:
            raise ValueError(f"every_s must be > 0 seconds, got {every_s}")
        self.every_s = float(every_s) if every_s is not None else None
        self._saved_at = time.monotonic()
        self.stop_signal: int | None = None
        self.last_saved: int | None = None
        self._old_handlers: dict[int, Any] = {}
        self.ckpt_dir.mkdir(parents=True, exist_ok=True)
        if handle_signals and threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGTERM, signal.SIGUSR1):
                self._old_handlers[sig] = signal.signal(sig, self._on_signal)

    # -- process topology ---------------------------------------------------------------
    @property
    def rank(self) -> int:
        return self.accelerator.process_index if self.accelerator is not None else 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def _barrier(self) -> None:
        if self.accelerator is not None and self.accelerator.num_processes > 1:
            self.accelerator.wait_for_everyone()

    # -- stopping ---------------------------------------------------------------------------
    def _on_signal(self, signum, frame) -> None:  # noqa: ARG002
        self.stop_signal = signum
        log.warning("received %s: will save a checkpoint and exit with status %d",
                    signal.Signals(signum).name, EXIT_PREEMPTED)

    def _flags(self) -> tuple[bool, bool]:
        """(stop, save due by time), each true if true on any process (one collective)."""
        stop = self.stop_signal is not None or (
            self.deadline is not None and time.time() >= self.deadline)
        due = self.every_s is not None and time.monotonic() - self._saved_at >= self.every_s
        acc = self.accelerator
        if acc is not None and acc.num_processes > 1:
            import torch

            flags = torch.tensor([float(stop), float(due)], device=acc.device)
            flags = acc.reduce(flags, reduction="sum")
            return bool(flags[0].item() > 0), bool(flags[1].item() > 0)
        return stop, due

    @property
    def should_stop(self) -> bool:
        """True once SIGTERM/SIGUSR1 arrived or the time budget is used up (any process)."""
        return self._flags()[0]

    def exit_preempted(self) -> None:
        """Exit with :data:`EXIT_PREEMPTED` (75): checkpoint saved, rerun to resume."""
        log.warning("stopping early at step %s; exit status %d (rerun resumes)",
                    self.last_saved, EXIT_PREEMPTED)
        if self.is_main:
            why = (signal.Signals(self.stop_signal).name if self.stop_signal is not None
                   else "time_limit")
            with open(self.ckpt_dir / STOPS_FILE, "a") as fh:
                fh.write(json.dumps({"step": self.last_saved, "reason": why,
                                     "time": time.strftime("%Y-%m-%dT%H:%M:%S%z")}) + "\n")
        logging.shutdown()
        sys.stdout.flush()
        sys.stderr.flush()
        raise SystemExit(EXIT_PREEMPTED)

    # -- state ---------------------------------------------------------------------------
    def _unwrap(self, obj):
        if self.accelerator is not None:
            import torch

            if isinstance(obj, torch.nn.Module):
                return self.accelerator.unwrap_model(obj)
        return obj

    def _state_of(self, name: str, obj):
        obj = self._unwrap(obj)
        if hasattr(obj, "state_dict"):
            return obj.state_dict()
        if hasattr(obj, "get_state"):  # torch.Generator
            return obj.get_state()
        raise TypeError(f"checkpoint object {name!r} ({type(obj).__name__}) has neither "
                        "state_dict() nor get_state()")

    def _load_into(self, name: str, obj, state) -> None:
        obj = self._unwrap(obj)
        if hasattr(obj, "load_state_dict"):
            obj.load_state_dict(state)
        else:
            obj.set_state(state)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """Complete checkpoints as ``(step, path)``, oldest first."""
        out = []
        for p in self.ckpt_dir.iterdir() if self.ckpt_dir.is_dir() else []:
            m = _CKPT_RE.match(p.name)
            if m and p.is_dir() and (p / "state.pt").is_file():
                out.append((int(m.group(1)), p))
        return sorted(out)

    def save(self, step: int, objects: Mapping[str, Any]) -> Path:
        """Write checkpoint ``step`` atomically (temp folder, then rename); prune old ones."""
        import torch

        step = int(step)
        final = self.ckpt_dir / f"step-{step:09d}"
        tmp = self.ckpt_dir / f".tmp-step-{step:09d}"
        if self.is_main:
            if tmp.exists():
                shutil.rmtree(tmp)
            tmp.mkdir(parents=True)
        self._barrier()
        torch.save(_rng_state(), tmp / f"rng-rank{self.rank}.pt")
        if self.is_main:
            state = {"step": step, "meta": self.meta, "inputs": self.inputs,
                     "objects": {k: self._state_of(k, v) for k, v in objects.items()}}
            torch.save(state, tmp / "state.pt")
        self._barrier()
        if self.is_main:
            _fsync_tree(tmp)
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp, final)
            for _, old in self.checkpoints()[:-self.keep]:
                shutil.rmtree(old, ignore_errors=True)
            log.info("checkpoint %s saved", final)
        self._barrier()
        self.last_saved = step
        self._saved_at = time.monotonic()
        return final

    def maybe_save(self, step: int, objects: Mapping[str, Any]) -> bool:
        """Save if ``step`` is a positive multiple of ``every_steps`` (and not saved yet)."""
        if step > 0 and step % self.every_steps == 0 and step != self.last_saved:
            self.save(step, objects)
            return True
        return False

    def step_done(self, step: int, objects: Mapping[str, Any]) -> None:
        """Call after each optimisation step: ``maybe_save`` (or save when ``every_s`` passed);
        on a stop request save and exit with status 75."""
        stop, due = self._flags()
        if not self.maybe_save(step, objects) and due and step > 0 and step != self.last_saved:
            log.info("step %d: %.0f s since the last checkpoint", step, time.monotonic() - self._saved_at)
            self.save(step, objects)
        if stop:
            if self.last_saved != step:
                self.save(step, objects)
            self.exit_preempted()

    def _start_over(self, path: Path) -> None:
        """The checkpoints were trained on other input files: delete them (and the old run's
        stops) so that this run starts at step 0 and its saves are the only ones kept."""
        log.warning("checkpoint %s was trained on other input files (fingerprint changed: Snakemake "
                    "reran the job for new inputs); deleting %s's checkpoints and starting at step 0",
                    path, self.ckpt_dir)
        if self.is_main:
            for _, old in self.checkpoints():
                shutil.rmtree(old, ignore_errors=True)
            (self.ckpt_dir / STOPS_FILE).unlink(missing_ok=True)
        self._barrier()

    def restore(self, objects: Mapping[str, Any]) -> int:
        """Load the newest usable checkpoint into ``objects``; return its step (0 if none).

        Leftover ``.tmp-`` folders of a killed save are removed.  A checkpoint that cannot
        be read is skipped with a warning (the previous one is used); one written for a
        different run (other ``meta`` or other object names) is an error; one written for other
        input files (``inputs``) is deleted with the others and training starts at step 0.
        """
        import torch

        self._barrier()
        if self.is_main:
            for p in self.ckpt_dir.glob(".tmp-step-*"):
                log.info("removing incomplete checkpoint %s", p)
                shutil.rmtree(p, ignore_errors=True)
        for step, path in reversed(self.checkpoints()):
            try:
                state = torch.load(path / "state.pt", map_location="cpu", weights_only=False)
            except Exception as e:  # noqa: BLE001 - a damaged file: fall back to the older one
                log.warning("checkpoint %s unreadable (%s); trying the previous one", path, e)
                continue
            if self.inputs is not None and state.get("inputs") not in (None, self.inputs):
                self._start_over(path)
                return 0
            if state.get("meta") != self.meta:
                raise CheckpointError(
                    f"checkpoint {path} was written by a run with different settings "
                    f"({state.get('meta')} != {self.meta}); delete {self.ckpt_dir} to start over")
            have, want = set(state["objects"]), set(objects)
            if have != want:
                raise CheckpointError(
                    f"checkpoint {path} holds {sorted(have)} but the run restores {sorted(want)}")
            for k, obj in objects.items():
                self._load_into(k, obj, state["objects"][k])
            rng = path / f"rng-rank{self.rank}.pt"
            if rng.is_file():
                _set_rng_state(torch.load(rng, map_location="cpu", weights_only=False))
            else:
                log.warning("checkpoint %s has no RNG state for process %d (different number "
                            "of processes?); random streams restart", path, self.rank)
            self.last_saved = int(state["step"])
            log.info("resumed from %s (step %d)", path, self.last_saved)
            self._barrier()
            return self.last_saved
        log.info("no checkpoint in %s: starting at step 0", self.ckpt_dir)
        self._barrier()
        return 0

    def finish(self, marker_path, info: Mapping[str, Any]) -> None:
        """Write the finished-marker JSON atomically (main process) and drop signal handlers.

        The marker holds ``finished``, ``last_checkpoint``, ``stops`` (the early stops of this
        run, from :data:`STOPS_FILE`) and ``info``."""
        if self.is_main:
            stops_file = self.ckpt_dir / STOPS_FILE
            stops = ([json.loads(x) for x in stops_file.read_text().splitlines() if x.strip()]
                     if stops_file.is_file() else [])
            fileio.write_json(marker_path, {"finished": True, "last_checkpoint": self.last_saved,
                                            "stops": stops, **dict(info)})
        self._barrier()
        self.close()

    def close(self) -> None:
        """Put back the signal handlers that were installed before this run (idempotent)."""
        for sig, old in self._old_handlers.items():
            signal.signal(sig, old)
        self._old_handlers = {}

    def __enter__(self) -> "ResumableRun":
        return self

    def __exit__(self, *exc) -> bool:
        """Leaving a ``with`` block restores the signal handlers however training ended
        (finished, preempted with exit 75, or an exception); exceptions propagate."""
        self.close()
        return False


# --------------------------------------------------------------------------------------
# launching
# --------------------------------------------------------------------------------------
def launch_command(script_args: Sequence[str], num_processes: int, *, num_machines: int = 1,
                   machine_rank: int | str = 0, main_process_ip: str | None = None,
                   main_process_port: int = 29500, mixed_precision: str | None = None,
                   python: str | None = None) -> list[str]:
    """The command that runs ``script_args`` (``["-m", "crossmodal", ...]`` or a script path
    plus arguments) with ``num_processes`` processes per machine.

    One process on one machine: plain ``python <script_args>`` (the toy CPU path).  Otherwise
    ``python -m accelerate.commands.launch --multi_gpu --num_processes <total> ...``;
    ``--num_processes`` is the total over all machines, as accelerate expects.
    """
    python = python or sys.executable
    num_processes, num_machines = int(num_processes), int(num_machines)
    if num_processes < 1 or num_machines < 1:
        raise ValueError(f"num_processes and num_machines must be >= 1, got "
                         f"{num_processes}, {num_machines}")
    args = list(script_args)
    if num_processes == 1 and num_machines == 1:
        return [python, *args]
    cmd = [python, "-m", "accelerate.commands.launch", "--multi_gpu",
           "--num_processes", str(num_processes * num_machines),
           "--num_machines", str(num_machines), "--dynamo_backend", "no"]
    if mixed_precision:
        cmd += ["--mixed_precision", mixed_precision]
    if num_machines > 1:
        if not main_process_ip:
            raise ValueError("multi-machine launch needs main_process_ip")
        cmd += ["--machine_rank", str(machine_rank), "--main_process_ip", main_process_ip,
                "--main_process_port", str(main_process_port)]
    if args and args[0] == "-m":
        cmd += ["-m", *args[1:]]
    else:
        cmd += args
    return cmd


_RANK_ENV = ("PMI_RANK", "PALS_RANKID", "OMPI_COMM_WORLD_RANK", "SLURM_PROCID")


def node_hosts(num_machines: int, env: Mapping[str, str] | None = None) -> list[str]:
    """The first ``num_machines`` distinct hosts of the PBS allocation (``$PBS_NODEFILE``)."""
    env = os.environ if env is None else env
    nodefile = env.get("PBS_NODEFILE")
    if not nodefile or not Path(nodefile).is_file():
        raise RuntimeError(f"multi-node launch ({num_machines} nodes) needs a PBS allocation: "
                           "$PBS_NODEFILE is not set (use profiles/polaris-allocation)")
    hosts = list(dict.fromkeys(h.strip() for h in Path(nodefile).read_text().split() if h.strip()))
    if len(hosts) < num_machines:
        raise RuntimeError(f"{nodefile} lists {len(hosts)} node(s), the rule asks for {num_machines}")
    return hosts[:num_machines]


def mpi_launch_command(script_args: Sequence[str], gpus_per_node: int, hosts: Sequence[str], *,
                       mixed_precision: str | None = None, python: str | None = None,
                       mpiexec: str = "mpiexec") -> list[str]:
    """``mpiexec -n <nodes> --ppn 1 --hosts h1,h2 python -m crossmodal.training --rank-launch
    <spec>``: one rank per node, each running ``accelerate launch`` for its node's GPUs with
    ``--machine_rank`` from the MPI rank and the first host as the rendezvous address."""
    python = python or sys.executable
    spec = json.dumps({"hosts": list(hosts), "gpus_per_node": int(gpus_per_node),
                       "mixed_precision": mixed_precision, "args": list(script_args)})
    return [mpiexec, "-n", str(len(hosts)), "--ppn", "1", "--hosts", ",".join(hosts),
            python, "-m", "crossmodal.training", "--rank-launch", spec]


def _rank_launch_command(spec: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    rank = next((env[k] for k in _RANK_ENV if k in env), None)
    if rank is None:
        raise RuntimeError(f"--rank-launch: no MPI rank in the environment ({', '.join(_RANK_ENV)})")
    return launch_command(spec["args"], spec["gpus_per_node"], num_machines=len(spec["hosts"]),
                          machine_rank=int(rank), main_process_ip=spec["hosts"][0],
                          mixed_precision=spec.get("mixed_precision"))


def _inside_launcher() -> bool:
    return any(k in os.environ for k in ("LOCAL_RANK", "ACCELERATE_LAUNCHED", "RANK"))


def _cli_args(step_name: str, inputs: Mapping, outputs: Mapping, params: Mapping,
              log_path: str | None) -> list[str]:
    from crossmodal import steps

    module = steps.get(step_name).__module__
    args = ["-m", "crossmodal.training", "--import", module, step_name]
    for flag, named in (("--input", inputs), ("--output", outputs)):
        for k, v in named.items():
            for x in (v if isinstance(v, (list, tuple)) else [v]):
                args += [flag, f"{k}={x}"]
    args += ["--params", json.dumps(dict(params), default=str)]
    if log_path:
        args += ["--log", str(log_path)]
    return args


def relaunch_under_accelerate(step_name: str, inputs: Mapping, outputs: Mapping,
                              params: Mapping, *, log: str | None = None) -> bool:
    """Re-run step ``step_name`` under ``accelerate launch`` when ``params["num_processes"]``
    (GPUs per node: the rule's ``gpu`` resource) is above 1 and we are not already inside a
    launcher; with ``params["num_machines"]`` > 1 (the rule's ``nodes``, inside a PBS
    allocation) through ``mpiexec``, one rank per node (:func:`mpi_launch_command`).

    Returns True when it did (the step should then return), False when the caller should
    train in-process.  Exit status 75 of the launched run is passed on unchanged, so
    Snakemake's ``retries:`` resumes a preempted multi-GPU run like a single-process one.
    """
    n = int(params.get("num_processes", 1) or 1)
    machines = int(params.get("num_machines", 1) or 1)
    if (n <= 1 and machines <= 1) or _inside_launcher():
        return False
    env = dict(os.environ, ACCELERATE_LAUNCHED="1")
    src = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    args = _cli_args(step_name, inputs, outputs, params, None)
    if machines > 1:
        cmd = mpi_launch_command(args, n, node_hosts(machines),
                                 mixed_precision=params.get("mixed_precision"))
    else:
        cmd = launch_command(args, n, mixed_precision=params.get("mixed_precision"))
    logging.getLogger(__name__).info("launching %d processes: %s", n, " ".join(cmd))
    # the workers' output goes to the step's log; SIGTERM/SIGUSR1 are forwarded to the
    # launcher so its workers checkpoint and exit 75
    out = open(log, "a") if log else None  # noqa: SIM115 - closed below
    forwarded: list[int] = []

    def _forward(signum, _frame):
        forwarded.append(signum)
        proc.send_signal(signum)

    try:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT if out else None)
        old = {s: signal.signal(s, _forward) for s in (signal.SIGTERM, signal.SIGUSR1)}
        try:
            rc = proc.wait()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
    finally:
        if out:
            out.close()
    # torchrun (under accelerate launch / mpiexec) reports workers that stopped with a
    # checkpoint (75) as a generic failure (1): after a forwarded stop signal, say 75 anyway
    if rc == EXIT_PREEMPTED or (rc != 0 and forwarded):
        log_ = logging.getLogger(__name__)
        log_.warning("step %s: launched run stopped after %s (status %d); exit %d, rerun resumes",
                     step_name, "/".join(signal.Signals(s).name for s in forwarded) or "-",
                     rc, EXIT_PREEMPTED)
        raise SystemExit(EXIT_PREEMPTED)
    if rc != 0:
        raise RuntimeError(f"step {step_name}: accelerate launch exited with status {rc}")
    return True


def _main(argv: Sequence[str] | None = None) -> int:
    """``python -m crossmodal.training --import MODULE STEP ...``: import the module that
    registers STEP, then run it like ``python -m crossmodal`` (used under accelerate launch)."""
    import importlib

    from crossmodal import steps

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--rank-launch"]:  # one MPI rank per node (see mpi_launch_command)
        cmd = _rank_launch_command(json.loads(argv[1]), os.environ)
        os.execvp(cmd[0], cmd)
    while argv and argv[0] == "--import":
        importlib.import_module(argv[1])
        argv = argv[2:]
    return steps.main(argv)


if __name__ == "__main__":
    sys.exit(_main())
