"""The step registry: one library function per pipeline step.

Every rule calls a step through a short glue script in ``workflow/scripts/``
(``run_from_snakemake``, in some scripts after importing the step's module, so that no other
step module is imported) and every step is also a command line, ``python -m crossmodal <step>
--input k=path --output k=path --params '{"json": ...}'``, so each rule can be rerun by hand
outside Snakemake.

A step is a function ``f(inputs, outputs, params, *, threads=1, log=None)`` where ``inputs``
and ``outputs`` map names to paths (str, or lists of str) and ``params`` is a dict.
Register one with ``@step("name")`` in the module that holds its logic and list that module
in ``_STEP_MODULES`` below; ``@step("name", inputs=(...), outputs=(...))`` also declares the
input and output names the step cannot run without, which :func:`run` checks before it starts.
"""
from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import sys
import time
from typing import Callable

_REGISTRY: dict[str, Callable] = {}

# modules whose import registers steps.  ``get`` imports them in this order and stops at the
# first that registers the wanted step, so the light modules (no torch) come first: a tiling
# or expression job then starts in well under a second instead of importing torch.
_STEP_MODULES = [
    "crossmodal.toy",
    "crossmodal.tiling",
    "crossmodal.expression.steps",
    "crossmodal.download.steps",
    "crossmodal.report",
    "crossmodal.cells",
    "crossmodal.metrics.steps",
    "crossmodal.cluster.check",
    "crossmodal.rna_gan.steps",
    "crossmodal.rna_cdm.steps",
    "crossmodal.pathgen.steps",
    "crossmodal.coherent.steps",
]

log = logging.getLogger("crossmodal")


def step(name: str, *, inputs: tuple[str, ...] = (), outputs: tuple[str, ...] = ()):
    """Register a step as ``name``; ``inputs`` / ``outputs``: the names it requires (others
    may be optional), kept as ``fn.required`` for :func:`run` to check."""
    def deco(fn):
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise RuntimeError(f"step {name!r} registered twice")
        fn.required = {"input": tuple(inputs), "output": tuple(outputs)}
        _REGISTRY[name] = fn
        return fn

    return deco


def check_required(name: str, fn: Callable, inputs: dict, outputs: dict) -> None:
    """:class:`ValueError` naming every required input and output (see :func:`step`) that step
    ``name`` was not given, so that it fails before doing any work."""
    req = getattr(fn, "required", {})
    parts = []
    for kind, given in (("input", inputs), ("output", outputs)):
        missing = [k for k in req.get(kind, ()) if k not in given]
        if missing:
            parts.append(f"missing {kind} {', '.join(missing)} (required {kind}s: {', '.join(req[kind])}; "
                         f"given: {', '.join(given) or 'none'})")
    if parts:
        raise ValueError(f"step {name}: {'; '.join(parts)}")


def _load_all(until: str | None = None) -> None:
    """Import the step modules (in order), stopping once step ``until`` is registered."""
    for mod in _STEP_MODULES:
        if until is not None and until in _REGISTRY:
            return
        try:
            importlib.import_module(mod)
        except ModuleNotFoundError as e:  # a module not written yet
            if e.name and (e.name == mod or mod.startswith(e.name + ".")):
                continue
            raise


def get(name: str) -> Callable:
    if name not in _REGISTRY:
        _load_all(until=name)
    if name not in _REGISTRY:
        raise KeyError(f"unknown step {name!r}; known: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name]


def setup_logging(logfile: str | None = None, level: int = logging.INFO) -> None:
    """Log to stderr (and ``logfile``).  Under a multi-process launcher (torchrun sets ``RANK``)
    only rank 0 logs below WARNING, so a step's log holds one copy of its progress lines."""
    import os

    if int(os.environ.get("RANK", "0") or 0) > 0:
        level = max(level, logging.WARNING)
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if logfile:
        from pathlib import Path

        Path(logfile).parent.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(logfile, mode="w"))
    logging.basicConfig(level=level, handlers=handlers, force=True,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _plain(named) -> dict:
    out = {}
    for k, v in named.items():
        out[k] = [str(x) for x in v] if isinstance(v, (list, tuple)) else str(v)
    return out


def run(name: str, inputs: dict, outputs: dict, params: dict, *, threads: int = 1,
        logfile: str | None = None, gpus: int = 0):
    """Run step ``name``; ``gpus``: the job's GPU request, pinned with
    :func:`crossmodal.training.claim_gpus` where several jobs share a node."""
    setup_logging(logfile)
    if gpus:
        from crossmodal.training import claim_gpus

        claim_gpus(gpus)
    fn = get(name)
    check_required(name, fn, inputs, outputs)
    log.info("step %s: start (threads=%d)", name, threads)
    t0 = time.perf_counter()
    from crossmodal.training import INPUTS_ENV, inputs_fingerprint

    # training checkpoints remember the inputs they were trained on (crossmodal.training)
    before = os.environ.get(INPUTS_ENV)
    os.environ[INPUTS_ENV] = inputs_fingerprint(inputs)
    try:
        result = fn(inputs, outputs, params, threads=threads, log=logfile)
    except Exception:
        log.exception("step %s failed", name)
        raise
    finally:
        if before is None:
            os.environ.pop(INPUTS_ENV, None)
        else:
            os.environ[INPUTS_ENV] = before
    log.info("step %s: done in %.1f s", name, time.perf_counter() - t0)
    return result


def run_from_snakemake(smk, name: str):
    """Entry point for ``workflow/scripts/*.py``: unpack the ``snakemake`` object."""
    inputs = {k: v for k, v in smk.input.items()}
    outputs = {k: v for k, v in smk.output.items()}
    params = {k: v for k, v in smk.params.items()}
    params.setdefault("wildcards", dict(smk.wildcards.items()))
    logfile = smk.log[0] if len(smk.log) else None
    # a multi-node job takes whole nodes; a one-node job is pinned to its GPUs where jobs share a node
    gpus = int(getattr(smk.resources, "gpu", 0) or 0) if int(getattr(smk.resources, "nodes", 1) or 1) <= 1 else 0
    return run(name, _plain(inputs), _plain(outputs), params, threads=smk.threads, logfile=logfile, gpus=gpus)


def _kv(items):
    out: dict = {}
    for it in items or []:
        if "=" not in it:
            raise SystemExit(f"expected name=path, got {it!r}")
        k, v = it.split("=", 1)
        if k in out:
            out[k] = (out[k] if isinstance(out[k], list) else [out[k]]) + [v]
        else:
            out[k] = v
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m crossmodal",
                                description="Run one crossmodal pipeline step outside Snakemake.")
    p.add_argument("step", nargs="?", help="step name (omit with --list)")
    p.add_argument("--list", action="store_true", help="list known steps")
    p.add_argument("--input", "-i", action="append", metavar="NAME=PATH")
    p.add_argument("--output", "-o", action="append", metavar="NAME=PATH")
    p.add_argument("--params", default="{}", help="JSON object of parameters (or @file.json)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--log", default=None)
    a = p.parse_args(argv)
    if a.list or not a.step:
        _load_all()
        for n in sorted(_REGISTRY):
            doc = (_REGISTRY[n].__doc__ or "").strip().splitlines()
            print(f"{n:28s} {doc[0] if doc else ''}")
        return 0
    params = a.params
    if params.startswith("@"):
        params = open(params[1:]).read()
    run(a.step, _kv(a.input), _kv(a.output), json.loads(params), threads=a.threads, logfile=a.log)
    return 0
