"""Evaluation-toolkit benchmarks: features/s of each image extractor, and the peak memory of a
streamed FID over 50,000 generated images (bounded by streaming, independent of the count).

``python -m crossmodal.bench.bench_metrics [--images 50000] [--size 32] [--device auto]``

* extractors: ``cohort-ssl`` (a random-weight SimCLR ResNet-18 at 224 px, the paper-scale
  setting; speed does not depend on the weights) and ``inception-fid`` (torch-fidelity's FID
  Inception-V3 with random weights of the right architecture - the real file is not needed for
  timing) on batches of 256x256 tiles;
* streamed FID: ``--images`` random images through a cheap fixed extractor (2048-d random
  projection of 4x4-pooled pixels) into :func:`crossmodal.metrics.image.extract_stats`; peak
  RSS is printed next to what holding every feature vector (and every image) would need.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    """Current resident set size in MiB (Linux /proc; falls back to the lifetime peak)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class _PeakRSS:
    """Peak resident memory during a ``with`` block (a thread samples VmRSS every 20 ms)."""

    def __enter__(self):
        import threading

        self.start = self.peak = _rss_mb()
        self._stop = threading.Event()

        def poll():
            while not self._stop.wait(0.02):
                self.peak = max(self.peak, _rss_mb())

        self._t = threading.Thread(target=poll, daemon=True)
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()
        self.peak = max(self.peak, _rss_mb())


def _random_inception(path: Path) -> None:
    import torch
    from torch_fidelity import feature_extractor_inceptionv3 as fe

    orig_load, orig_lsd = fe.torch.load, fe.FeatureExtractorInceptionV3.load_state_dict
    fe.torch.load = lambda *a, **k: {}
    fe.FeatureExtractorInceptionV3.load_state_dict = lambda self, sd, *a, **k: None
    try:
        m = fe.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path="x")
    finally:
        fe.torch.load, fe.FeatureExtractorInceptionV3.load_state_dict = orig_load, orig_lsd
    torch.save(m.state_dict(), path)


def bench_extractors(device: str, batch: int = 16, reps: int = 2) -> dict:
    import torch

    from crossmodal.metrics import image
    from crossmodal.models import ssl

    out = {}
    with tempfile.TemporaryDirectory() as d:
        enc, head = ssl.build(depth=18, image_size=224)
        ssl.save_encoder(Path(d) / "enc.pt", enc.eval(), head)
        _random_inception(Path(d) / "inc.pth")
        x = torch.randint(0, 255, (batch, 3, 256, 256), dtype=torch.uint8)
        for name, w in (("cohort-ssl", Path(d) / "enc.pt"), ("inception-fid", Path(d) / "inc.pth")):
            ext = image.get_extractor(name, weights=w, device=device)
            ext(x[:2])  # warm-up
            if ext.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(reps):
                ext(x)
            if ext.device.startswith("cuda"):
                torch.cuda.synchronize()
            out[name] = reps * batch / (time.perf_counter() - t0)
            print(f"{name:14s} {out[name]:8.1f} features/s on {ext.device} (batch {batch}, 256 px tiles)")
    if len(out) == 2:
        print(f"ratio cohort-ssl / inception-fid: {out['cohort-ssl'] / out['inception-fid']:.2f}x")
    return out


class _RandomImages:
    def __init__(self, n, size, seed=0):
        self.n, self.size, self.seed = n, size, seed

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.random.default_rng([self.seed, i]).integers(0, 255, (self.size, self.size, 3), dtype=np.uint8)


def bench_streamed_fid(n_images: int, size: int, device: str, kid_pool: int = 10_000) -> dict:
    import torch

    from crossmodal.metrics import image

    dim = 2048
    g = torch.Generator().manual_seed(0)
    proj = torch.randn(3 * 16, dim, generator=g)

    def fn(x):
        f = torch.nn.functional.adaptive_avg_pool2d(x.float(), 4).flatten(1) @ proj.to(x.device)
        return f, None

    ext = image.Extractor("random-projection", dim, fn, image.resolve_device(device))
    t0 = time.perf_counter()
    with _PeakRSS() as mem:
        a = image.extract_stats(_RandomImages(n_images, size, 0), ext, batch_size=500, kid_pool=kid_pool,
                                desc="set a")
        b = image.extract_stats(_RandomImages(n_images, size, 1), ext, batch_size=500, kid_pool=kid_pool,
                                desc="set b")
        fid = image.frechet_distance(a.mu, a.sigma, b.mu, b.sigma)
    dt = time.perf_counter() - t0
    before, peak = mem.start, mem.peak
    all_feats = 2 * n_images * dim * 4 / 2**20
    all_imgs = 2 * n_images * size * size * 3 / 2**20
    print(f"streamed FID over 2 x {n_images} images ({size} px, {dim}-d features): FID {fid:.3f} in {dt:.1f} s; "
          f"peak RSS {peak:.0f} MiB (+{peak - before:.0f} MiB during the run; KID reservoir {kid_pool} vectors/set)")
    print(f"holding every feature vector would need {all_feats:.0f} MiB, every image {all_imgs:.0f} MiB: "
          f"streaming growth / all-features = {(peak - before) / all_feats:.2f}")
    return {"peak_rss_mb": peak, "growth_mb": peak - before, "all_features_mb": all_feats, "seconds": dt}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=50_000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--device", default="cpu")
    p.add_argument("--kid-pool", type=int, default=10_000, help="KID reservoir per set (config metrics.fid.kid_pool)")
    a = p.parse_args(argv)
    bench_streamed_fid(a.images, a.size, a.device, kid_pool=a.kid_pool)
    bench_extractors(a.device)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
