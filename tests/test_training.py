"""crossmodal.training: checkpoint / resume that survives SIGTERM and SIGKILL.

The kill tests run the self-check trainer (crossmodal.cluster.check, an MLP with dropout,
SGD momentum, an LR schedule, an EMA and a noise generator) as a real subprocess and kill it
from outside at a random step."""
from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from crossmodal import training

STEPS, EVERY = 60, 5


def _cmd(wd: Path, **extra) -> list[str]:
    params = {"ckpt_dir": str(wd / "ckpt"), "steps": STEPS, "checkpoint_every": EVERY,
              "seed": 3, "trace": str(wd / "trace.txt"), "step_delay_s": 0.04, "device": "cpu"}
    params.update(extra)
    return [sys.executable, "-m", "crossmodal.training", "--import", "crossmodal.cluster.check",
            "train_cluster_check", "-o", f"model={wd / 'model.pt'}",
            "-o", f"done={wd / 'done.json'}", "--params", json.dumps(params)]


def _trace(wd: Path) -> list[int]:
    p = wd / "trace.txt"
    return [int(x) for x in p.read_text().split()] if p.exists() else []


def _run_and_kill(wd: Path, at_step: int, sig: int) -> tuple[int, int]:
    """Start the trainer, send ``sig`` once ``at_step`` steps are traced; return (rc, steps seen)."""
    before = len(_trace(wd))
    p = subprocess.Popen(_cmd(wd), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while len(_trace(wd)) - before < at_step:
        if p.poll() is not None:
            raise AssertionError(f"trainer ended before the kill (rc {p.returncode}):\n{p.stderr.read()}")
        if time.monotonic() - t0 > 120:
            p.kill()
            raise AssertionError("trainer made no progress in 120 s")
        time.sleep(0.005)
    p.send_signal(sig)
    err = p.communicate(timeout=120)[1]
    if p.returncode not in (0, training.EXIT_PREEMPTED, -signal.SIGKILL):
        raise AssertionError(f"trainer failed (rc {p.returncode}):\n{err}")
    return p.returncode, len(_trace(wd)) - before


def _ckpt_steps(wd: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (wd / "ckpt").glob("step-*"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> dict:
    """An uninterrupted run."""
    wd = tmp_path_factory.mktemp("ref")
    subprocess.run(_cmd(wd, step_delay_s=0), check=True, capture_output=True)
    assert _trace(wd) == list(range(STEPS))
    return {"done": json.loads((wd / "done.json").read_text()),
            "model": torch.load(wd / "model.pt")}


def test_killed_and_resumed_run_matches_uninterrupted(tmp_path, reference):
    # new kill points every run; a failure names the seed (rerun with CROSSMODAL_KILL_SEED=<seed>)
    seed = int(os.environ.get("CROSSMODAL_KILL_SEED") or time.time_ns() % 1_000_000)
    rng = random.Random(seed)
    k_term, k_kill = rng.randint(3, 25), rng.randint(3, 20)
    print(f"CROSSMODAL_KILL_SEED={seed}: SIGTERM after {k_term} steps, then SIGKILL after "
          f"{k_kill} more")

    # SIGTERM: checkpoint at the current step, exit 75, no step lost
    rc, seen = _run_and_kill(tmp_path, k_term, signal.SIGTERM)
    assert rc == training.EXIT_PREEMPTED
    assert _trace(tmp_path) == list(range(seen))
    assert _ckpt_steps(tmp_path)[-1] == seen            # saved exactly where it stopped
    assert len(_ckpt_steps(tmp_path)) <= 2               # keep=2
    assert not (tmp_path / "model.pt").exists() and not (tmp_path / "done.json").exists()

    # SIGKILL: no chance to save; at most one checkpoint interval is redone
    rc, seen2 = _run_and_kill(tmp_path, k_kill, signal.SIGKILL)
    assert rc == -signal.SIGKILL
    killed_at = seen + seen2
    last_ckpt = _ckpt_steps(tmp_path)[-1]
    assert killed_at - EVERY <= last_ckpt <= killed_at

    # resume to the end
    subprocess.run(_cmd(tmp_path, step_delay_s=0), check=True, capture_output=True)
    done = json.loads((tmp_path / "done.json").read_text())
    assert done["resumed_from"] == last_ckpt and done["steps"] == STEPS
    assert [(x["step"], x["reason"]) for x in done["stops"]] == [(seen, "SIGTERM")]  # not SIGKILL
    trace = _trace(tmp_path)
    # no step skipped; the only repeats are the steps after the last checkpoint before SIGKILL
    assert sorted(set(trace)) == list(range(STEPS))
    repeated = sorted(s for s in set(trace) if trace.count(s) > 1)
    assert repeated == list(range(last_ckpt, killed_at))
    assert not list((tmp_path / "ckpt").glob(".tmp-*"))
    # identical final weights (model and EMA) to the uninterrupted run
    assert done["weights_sha256"] == reference["done"]["weights_sha256"]
    model = torch.load(tmp_path / "model.pt")
    assert model.keys() == reference["model"].keys()
    assert all(torch.equal(model[k], reference["model"][k]) for k in model)


# ---------------------------------------------------------------- in-process unit tests
def _objects(seed=0):
    torch.manual_seed(seed)
    m = torch.nn.Linear(3, 2)
    opt = torch.optim.Adam(m.parameters(), lr=0.1)
    return {"model": m, "opt": opt}


def _train(objs, n):
    for _ in range(n):
        loss = objs["model"](torch.randn(4, 3)).pow(2).mean()
        objs["opt"].zero_grad()
        loss.backward()
        objs["opt"].step()


def test_restore_returns_zero_without_checkpoint_and_cleans_partial_saves(tmp_path):
    (tmp_path / ".tmp-step-000000010").mkdir(parents=True)
    run = training.ResumableRun(tmp_path, every_steps=5, handle_signals=False)
    assert run.restore(_objects()) == 0
    assert not (tmp_path / ".tmp-step-000000010").exists()


def test_save_restore_roundtrip_keeps_newest_and_restores_rng(tmp_path):
    objs = _objects()
    run = training.ResumableRun(tmp_path, every_steps=2, keep=2, handle_signals=False)
    for s in range(1, 8):
        _train(objs, 1)
        assert run.maybe_save(s, objs) == (s % 2 == 0)
    assert [p.name for _, p in run.checkpoints()] == ["step-000000004", "step-000000006"]
    st = torch.load(tmp_path / "step-000000006" / "state.pt", weights_only=False)
    fresh = _objects(seed=99)
    assert not torch.equal(fresh["model"].weight, st["objects"]["model"]["weight"])
    run2 = training.ResumableRun(tmp_path, every_steps=2, handle_signals=False)
    assert run2.restore(fresh) == 6 and run2.last_saved == 6
    assert torch.equal(fresh["model"].weight, st["objects"]["model"]["weight"])
    assert torch.equal(fresh["opt"].state_dict()["state"][0]["exp_avg"],
                       st["objects"]["opt"]["state"][0]["exp_avg"])
    assert not run2.maybe_save(6, fresh)  # the restored step is not saved again


def test_rng_state_resumes_the_random_stream(tmp_path):
    objs = _objects()
    run = training.ResumableRun(tmp_path, every_steps=1, handle_signals=False)
    torch.manual_seed(5)
    np.random.seed(5)
    random.seed(5)
    run.save(1, objs)
    expected = (torch.rand(4), np.random.rand(2), random.random())
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    training.ResumableRun(tmp_path, every_steps=1, handle_signals=False).restore(objs)
    got = (torch.rand(4), np.random.rand(2), random.random())
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2]


def test_changed_settings_or_objects_are_an_error_naming_the_checkpoint(tmp_path):
    run = training.ResumableRun(tmp_path, every_steps=1, meta={"lr": 0.1}, handle_signals=False)
    run.save(3, _objects())
    other = training.ResumableRun(tmp_path, every_steps=1, meta={"lr": 0.2}, handle_signals=False)
    with pytest.raises(training.CheckpointError, match="step-000000003.*different settings"):
        other.restore(_objects())
    same = training.ResumableRun(tmp_path, every_steps=1, meta={"lr": 0.1}, handle_signals=False)
    with pytest.raises(training.CheckpointError, match=r"holds \['model', 'opt'\]"):
        same.restore({"model": torch.nn.Linear(3, 2)})


def test_inputs_fingerprint_follows_the_files_stat_not_lmdb_reader_locks(tmp_path):
    f, d = tmp_path / "a.tsv", tmp_path / "t.lmdb"
    f.write_text("x\n")
    d.mkdir()
    (d / "data.mdb").write_bytes(b"0" * 64)
    (d / "lock.mdb").write_bytes(b"1")
    fp = training.inputs_fingerprint({"a": str(f), "tiles": [str(d)]})
    assert fp == training.inputs_fingerprint({"tiles": [str(d)], "a": str(f)})  # order-free
    (d / "lock.mdb").write_bytes(b"22")  # a reader's lock table: not content
    assert training.inputs_fingerprint({"a": str(f), "tiles": [str(d)]}) == fp
    st = (d / "data.mdb").stat()
    (d / "data.mdb").write_bytes(b"1" * 64)  # same size, rewritten (as Snakemake would)
    os.utime(d / "data.mdb", ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    fp2 = training.inputs_fingerprint({"a": str(f), "tiles": [str(d)]})
    assert fp2 != fp
    f.unlink()
    assert training.inputs_fingerprint({"a": str(f), "tiles": [str(d)]}) not in (fp, fp2)


def test_checkpoints_of_other_inputs_are_deleted_and_training_starts_over(tmp_path, caplog):
    objs = _objects()
    run = training.ResumableRun(tmp_path, every_steps=1, inputs="old", handle_signals=False)
    run.save(3, objs)
    run.save(4, objs)
    (tmp_path / training.STOPS_FILE).write_text('{"step": 3}\n')
    same = training.ResumableRun(tmp_path, every_steps=1, inputs="old", handle_signals=False)
    assert same.restore(_objects()) == 4  # a preempted job rerun on the same inputs resumes
    other = training.ResumableRun(tmp_path, every_steps=1, inputs="new", handle_signals=False)
    assert other.restore(_objects()) == 0
    assert other.checkpoints() == [] and not (tmp_path / training.STOPS_FILE).exists()
    assert "other input files" in caplog.text
    other.save(1, objs)  # the new run's saves are the only ones
    assert [s for s, _ in other.checkpoints()] == [1]
    # checkpoints written before fingerprints existed, or a run without one, resume as before
    legacy = training.ResumableRun(tmp_path / "legacy", every_steps=1, handle_signals=False)
    legacy.save(2, objs)
    assert training.ResumableRun(tmp_path / "legacy", every_steps=1, inputs="x",
                                 handle_signals=False).restore(_objects()) == 2


def test_a_rerun_step_retrains_when_its_input_files_changed(tmp_path):
    """Snakemake reruns a finished training job whose inputs changed; before, the job restored
    its final checkpoint and wrote the old weights again under the new inputs' name."""
    from crossmodal import steps

    data = tmp_path / "data.tsv"
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8))

    def write(w):
        cols = {f"f{i}": x[:, i] for i in range(8)}
        cols["y"] = x @ w
        import pandas as pd

        pd.DataFrame(cols).to_csv(data, sep="\t", index=False)

    write(np.ones(8))
    params = {"ckpt_dir": str(tmp_path / "ckpt"), "steps": 20, "checkpoint_every": 5, "seed": 1,
              "device": "cpu"}
    out = {"model": str(tmp_path / "model.pt"), "done": str(tmp_path / "done.json")}

    def train():
        steps.run("train_cluster_check", {"data": str(data)}, out, params)
        return json.loads((tmp_path / "done.json").read_text())

    first = train()
    assert first["resumed_from"] == 0
    assert train()["resumed_from"] == 20  # same inputs: the finished checkpoint is reused
    st = data.stat()
    write(-np.ones(8))  # new targets
    os.utime(data, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    again = train()
    assert again["resumed_from"] == 0 and again["weights_sha256"] != first["weights_sha256"]


def test_unreadable_newest_checkpoint_falls_back_to_previous(tmp_path, caplog):
    objs = _objects()
    run = training.ResumableRun(tmp_path, every_steps=1, handle_signals=False)
    run.save(1, objs)
    run.save(2, objs)
    (tmp_path / "step-000000002" / "state.pt").write_bytes(b"truncated")
    assert training.ResumableRun(tmp_path, every_steps=1, handle_signals=False).restore(objs) == 1
    assert "step-000000002" in caplog.text and "unreadable" in caplog.text


def test_sigterm_sets_should_stop_and_step_done_saves_then_exits_75(tmp_path):
    objs = _objects()
    before = signal.getsignal(signal.SIGTERM)  # whatever the test session had installed
    run = training.ResumableRun(tmp_path, every_steps=100)
    try:
        assert not run.should_stop
        assert signal.getsignal(signal.SIGTERM) is not before
        os.kill(os.getpid(), signal.SIGTERM)
        assert run.should_stop and run.stop_signal == signal.SIGTERM
        with pytest.raises(SystemExit) as e:
            run.step_done(7, objs)
        assert e.value.code == training.EXIT_PREEMPTED == 75
        assert [s for s, _ in run.checkpoints()] == [7]
        run.finish(tmp_path / "done.json", {})
        stops = json.loads((tmp_path / "done.json").read_text())["stops"]
        assert [(x["step"], x["reason"]) for x in stops] == [(7, "SIGTERM")]
    finally:
        run.close()
    assert signal.getsignal(signal.SIGTERM) is before  # close() puts the previous handler back


def test_with_block_restores_signal_handlers_when_training_raises(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    with pytest.raises(RuntimeError, match="diverged"):
        with training.ResumableRun(tmp_path, every_steps=1) as run:
            assert signal.getsignal(signal.SIGTERM) is not before
            run.step_done(1, _objects())
            raise RuntimeError("loss diverged")
    assert signal.getsignal(signal.SIGTERM) is before
    assert [s for s, _ in run.checkpoints()] == [1]  # what was saved before the error stays


def test_time_budget_stops_margin_before_walltime(tmp_path):
    run = training.ResumableRun(tmp_path, every_steps=10, time_limit_s=3600, margin_s=300,
                                handle_signals=False)
    assert not run.should_stop
    late = training.ResumableRun(tmp_path, every_steps=10, time_limit_s=60, margin_s=60,
                                 handle_signals=False)
    assert late.should_stop


def test_checkpoint_also_after_every_s_seconds(tmp_path, monkeypatch):
    """A kill without warning (Polaris preemptable) loses at most every_s of work: a save is
    due at the first step once every_s passed since the last one, between the every_steps saves;
    $CROSSMODAL_CHECKPOINT_EVERY_S sets it from a cluster profile, a bad value is named."""
    clock = [1000.0]
    monkeypatch.setattr(training.time, "monotonic", lambda: clock[0])
    objs = _objects()
    run = training.ResumableRun(tmp_path / "a", every_steps=100, every_s=60, handle_signals=False)
    saved = []
    for step in range(1, 31):
        clock[0] += 5  # 5 s per step: a save is due every 12 steps
        run.step_done(step, objs)
        if run.last_saved == step:
            saved.append(step)
    assert saved == [12, 24]
    assert [s for s, _ in run.checkpoints()] == [12, 24]
    monkeypatch.setenv("CROSSMODAL_CHECKPOINT_EVERY_S", "30")
    assert training.ResumableRun(tmp_path / "b", every_steps=100, handle_signals=False).every_s == 30
    assert training.ResumableRun(tmp_path / "b", every_steps=100, every_s=10, handle_signals=False).every_s == 10
    monkeypatch.setenv("CROSSMODAL_CHECKPOINT_EVERY_S", "half an hour")
    with pytest.raises(ValueError, match=r"CROSSMODAL_CHECKPOINT_EVERY_S='half an hour': expected seconds"):
        training.ResumableRun(tmp_path / "b", every_steps=100, handle_signals=False)
    monkeypatch.delenv("CROSSMODAL_CHECKPOINT_EVERY_S")
    assert training.ResumableRun(tmp_path / "b", every_steps=100, handle_signals=False).every_s is None


def test_finish_writes_marker(tmp_path):
    run = training.ResumableRun(tmp_path / "ck", every_steps=1, handle_signals=False)
    run.save(4, _objects())
    run.finish(tmp_path / "done.json", {"steps": 4})
    info = json.loads((tmp_path / "done.json").read_text())
    assert info == {"finished": True, "last_checkpoint": 4, "stops": [], "steps": 4}


def test_step_batch_is_a_per_epoch_permutation_and_depends_only_on_step():
    n, bs = 10, 3
    epoch0 = np.concatenate([training.step_batch(s, n=n, batch_size=bs, seed=1) for s in range(3)])
    assert len(set(epoch0.tolist())) == 9  # no repeats within an epoch; last batch dropped
    assert np.array_equal(training.step_batch(4, n=n, batch_size=bs, seed=1),
                          training.step_batch(4, n=n, batch_size=bs, seed=1))
    assert not np.array_equal(training.step_batch(0, n=n, batch_size=bs, seed=1),
                              training.step_batch(3, n=n, batch_size=bs, seed=1))
    with pytest.raises(ValueError, match="batch_size"):
        training.step_batch(0, n=2, batch_size=3, seed=0)


def test_launch_command_plain_python_for_one_process_else_accelerate():
    args = ["-m", "crossmodal", "train_vae", "--params", "{}"]
    assert training.launch_command(args, 1, python="py") == ["py", *args]
    cmd = training.launch_command(args, 4, python="py", mixed_precision="bf16")
    assert cmd[:3] == ["py", "-m", "accelerate.commands.launch"]
    assert cmd[cmd.index("--num_processes") + 1] == "4"
    assert cmd[cmd.index("--mixed_precision") + 1] == "bf16"
    assert cmd[-len(args):] == args
    multi = training.launch_command(args, 4, num_machines=2, machine_rank="$RANK",
                                    main_process_ip="10.0.0.1", python="py")
    assert multi[multi.index("--num_processes") + 1] == "8"  # total over machines
    assert multi[multi.index("--machine_rank") + 1] == "$RANK"
    with pytest.raises(ValueError, match="main_process_ip"):
        training.launch_command(args, 4, num_machines=2)


def test_make_accelerator_on_cpu_uses_full_precision():
    acc = training.make_accelerator("cpu")
    assert acc.device.type == "cpu" and acc.mixed_precision == "no"
    with pytest.raises(ValueError, match="device"):
        training.make_accelerator("tpu")


def test_relaunch_turns_a_forwarded_sigterm_into_exit_75(tmp_path, monkeypatch):
    """Under accelerate launch, SIGTERM is forwarded to the launcher; torchrun then exits 1
    although its workers saved a checkpoint: the step must still exit 75 (retry resumes)."""
    import threading

    ready = tmp_path / "ready"
    worker = tmp_path / "launcher.py"
    worker.write_text("import signal, sys, time\n"
                      "signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))\n"
                      f"open({str(ready)!r}, 'w').close()\ntime.sleep(60)\n")
    monkeypatch.setattr(training, "launch_command",
                        lambda args, n, **kw: [sys.executable, str(worker)])
    monkeypatch.setattr(training, "_cli_args", lambda *a, **kw: [])
    for var in ("LOCAL_RANK", "RANK", "ACCELERATE_LAUNCHED"):
        monkeypatch.delenv(var, raising=False)

    def _kill_when_ready():
        t0 = time.monotonic()
        while not ready.exists() and time.monotonic() - t0 < 60:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    threading.Thread(target=_kill_when_ready, daemon=True).start()
    with pytest.raises(SystemExit) as e:
        training.relaunch_under_accelerate("x", {}, {}, {"num_processes": 2})
    assert e.value.code == training.EXIT_PREEMPTED
    assert signal.getsignal(signal.SIGTERM) is before  # the forwarding handler is removed
    # a launcher failing on its own (no stop requested) stays an error
    worker.write_text("import sys\nsys.exit(3)\n")
    with pytest.raises(RuntimeError, match="status 3"):
        training.relaunch_under_accelerate("x", {}, {}, {"num_processes": 2})


# -- GPU pinning where jobs share a node (profiles/polaris-allocation) ---------------------------
_HOLD_GPU = """
import os, sys, time
from crossmodal.training import claim_gpus
env = {"CROSSMODAL_GPU_SLOTS": "2"}
print(claim_gpus(1, env=env, lock_dir=sys.argv[1]), env["CUDA_VISIBLE_DEVICES"], flush=True)
time.sleep(600)
"""


def test_jobs_sharing_a_node_get_different_gpus_and_a_killed_job_frees_its_gpu(tmp_path):
    """Snakemake's local executor does not say which GPU a job gets: without pinning, four gpu=1
    jobs of a Polaris allocation would all use GPU 0. Each job holds a lock per GPU it took."""
    env = dict(os.environ, PYTHONPATH=str(Path(training.__file__).resolve().parents[1]))
    other = subprocess.Popen([sys.executable, "-c", _HOLD_GPU, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert other.stdout.readline().split() == ["['0']", "0"]
        mine: dict = {"CROSSMODAL_GPU_SLOTS": "2"}
        assert training.claim_gpus(1, env=mine, lock_dir=tmp_path) == ["1"] and mine["CUDA_VISIBLE_DEVICES"] == "1"
        third: dict = {"CROSSMODAL_GPU_SLOTS": "2"}
        with pytest.raises(RuntimeError, match=r"no 1 free GPU\(s\) of 2 after 0 s.*crossmodal-gpus-"):
            training.claim_gpus(1, env=third, lock_dir=tmp_path, wait_s=0.2, poll_s=0.05)
        assert "CUDA_VISIBLE_DEVICES" not in third
        other.kill()  # SIGKILL: the kernel drops its lock
        other.wait()
        assert training.claim_gpus(1, env=third, lock_dir=tmp_path, wait_s=5, poll_s=0.05) == ["0"]
    finally:
        other.kill()
        while training._CLAIMED_GPUS:
            training._CLAIMED_GPUS.pop().close()


def test_gpu_pinning_only_where_asked_for(tmp_path):
    """No slots configured (per-job profiles: the scheduler pins), no GPU requested, or the job
    sees no more GPUs than it asks for: nothing is claimed; a job larger than the node is refused.
    A site that sets CUDA_VISIBLE_DEVICES for the whole allocation: the claim picks among those."""
    assert training.claim_gpus(1, env={}, lock_dir=tmp_path) is None
    assert training.claim_gpus(0, env={"CROSSMODAL_GPU_SLOTS": "4"}, lock_dir=tmp_path) is None
    pinned = {"CROSSMODAL_GPU_SLOTS": "4", "CUDA_VISIBLE_DEVICES": "3"}
    assert training.claim_gpus(2, env=pinned, lock_dir=tmp_path) is None and pinned["CUDA_VISIBLE_DEVICES"] == "3"
    with pytest.raises(ValueError, match=r"asks for 5 GPUs, the node has 4"):
        training.claim_gpus(5, env={"CROSSMODAL_GPU_SLOTS": "4"}, lock_dir=tmp_path)
    assert not list(tmp_path.glob("*/gpu*.lock"))
    site = {"CROSSMODAL_GPU_SLOTS": "4", "CUDA_VISIBLE_DEVICES": "2,3"}
    try:
        assert training.claim_gpus(1, env=site, lock_dir=tmp_path) == ["2"] and site["CUDA_VISIBLE_DEVICES"] == "2"
        other = {"CROSSMODAL_GPU_SLOTS": "4", "CUDA_VISIBLE_DEVICES": "2,3"}
        assert training.claim_gpus(1, env=other, lock_dir=tmp_path) == ["3"]
    finally:
        while training._CLAIMED_GPUS:
            training._CLAIMED_GPUS.pop().close()


def test_snakemake_job_is_pinned_before_its_step_runs(tmp_path, monkeypatch):
    """run_from_snakemake passes the job's gpu resource on: the step already sees its GPUs."""
    from types import SimpleNamespace

    from crossmodal import steps

    seen = {}

    @steps.step("_test_sees_gpus")
    def _sees(inputs, outputs, params, *, threads=1, log=None):
        seen["cuda"] = os.environ.get("CUDA_VISIBLE_DEVICES")

    monkeypatch.setenv("CROSSMODAL_GPU_SLOTS", "4")
    monkeypatch.setenv("CROSSMODAL_GPU_LOCK_DIR", str(tmp_path))
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")  # recorded, so the claim is undone at teardown
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    smk = SimpleNamespace(input=SimpleNamespace(items=lambda: []), output=SimpleNamespace(items=lambda: []),
                          params=SimpleNamespace(items=lambda: []), wildcards=SimpleNamespace(items=lambda: []),
                          log=[], threads=1, resources=SimpleNamespace(gpu=2, nodes=1))
    try:
        steps.run_from_snakemake(smk, "_test_sees_gpus")
        assert seen["cuda"] == "0,1"
    finally:
        while training._CLAIMED_GPUS:
            training._CLAIMED_GPUS.pop().close()
        steps._REGISTRY.pop("_test_sees_gpus", None)
