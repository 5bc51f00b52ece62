"""The shared ResNet tile classifier (crossmodal.models.classifier): RNA-GAN's external-cohort
classifier and SimCLR fine-tuning and RNA-CDM's downstream experiments all train through it."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from crossmodal.models import classifier as clf


def _colour_tiles(n_per_class: int, seed: int = 0):
    """Class 0: pinkish tiles, class 1: purplish tiles, with pixel noise (a planted, learnable cue)."""
    rng = np.random.default_rng(seed)
    base = np.array([[230, 150, 190], [120, 70, 160]], float)
    x, y = [], []
    for k in (0, 1):
        noise = rng.normal(0, 25, (n_per_class, 16, 16, 3))
        x.append(np.clip(base[k] + noise, 0, 255).astype(np.uint8))
        y.append(np.full(n_per_class, k))
    return np.concatenate(x), np.concatenate(y)


def test_train_learns_a_planted_colour_cue_and_predicts_probabilities():
    torch.set_num_threads(1)
    torch.manual_seed(0)  # initial weights
    x, y = _colour_tiles(48)  # enough batches for BatchNorm's running statistics to settle
    xt, yt = _colour_tiles(10, seed=1)
    s = clf.TrainSettings(epochs=6, lr=3e-3, batch_size=16, val_fraction=0.0, image_size=32, device="auto")
    model, hist = clf.train(clf.make_resnet("resnet18", 2), x, y, s, seed=0, progress=False)
    assert len(hist) == 6 and all(np.isfinite(h["train_loss"]) for h in hist)
    p = clf.predict_proba(model, xt, 32)
    assert p.shape == (20, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    sc = clf.scores(yt, p)
    assert sc["accuracy"] >= 0.9 and sc["auc"] >= 0.9
    # "auto" on a machine without CUDA trains on the CPU; predictions come back as numpy either way
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert next(model.parameters()).device.type == expected


def test_training_is_reproducible_for_a_seed():
    torch.set_num_threads(1)
    x, y = _colour_tiles(8)
    s = clf.TrainSettings(epochs=1, lr=1e-3, batch_size=8, val_fraction=0.0, image_size=32)
    runs = []
    for _ in range(2):
        torch.manual_seed(123)  # the same initial weights
        m, _ = clf.train(clf.make_resnet("resnet18", 2), x, y, s, seed=5, progress=False)
        runs.append(clf.predict_proba(m, x, 32))
    np.testing.assert_allclose(runs[0], runs[1], atol=1e-6)


def test_cross_validation_keeps_patients_together_and_counts_every_tile():
    torch.set_num_threads(1)
    x, y = _colour_tiles(12)
    groups = np.repeat(np.arange(12), 2)  # 2 tiles per "patient", patients never split
    s = clf.TrainSettings(epochs=1, lr=1e-3, batch_size=8, val_fraction=0.0, image_size=32)
    rows, cm = clf.cross_validate(x, y, lambda: clf.make_resnet("resnet18", 2), s, folds=3, seed=0,
                                  groups=groups, progress=False)
    assert len(rows) == 3 and cm.sum() == len(y)  # every tile is tested exactly once
    assert sum(r["n"] for r in rows) == len(y)


def test_bad_inputs_are_clear_errors():
    x, y = _colour_tiles(4)
    s = clf.TrainSettings(epochs=1, image_size=32, val_fraction=0.0)
    with pytest.raises(ValueError, match="at least 2 classes"):
        clf.train(clf.make_resnet("resnet18", 2), x[:4], y[:4], s, progress=False)
    with pytest.raises(ValueError, match="unknown classifier architecture"):
        clf.make_resnet("vgg16", 2)


def test_validation_split_holds_out_whole_slides():
    y = np.repeat([0, 1], 30)
    groups = np.repeat(np.arange(12), 5)  # 12 slides of 5 tiles, 6 per class
    tr, va = clf.validation_split(y, 0.2, seed=0, groups=groups)
    assert len(tr) + len(va) == len(y) and len(va) > 0
    assert not set(groups[tr]) & set(groups[va])  # no slide on both sides
    assert set(y[va]) == {0, 1}  # stratified by class
    # per tile (no groups) the same slides do land on both sides - the leak the groups prevent
    tr2, va2 = clf.validation_split(y, 0.2, seed=0)
    assert set(groups[tr2]) & set(groups[va2])
    with pytest.raises(ValueError, match="1 slide"):
        clf.validation_split(y, 0.2, seed=0, groups=np.zeros(len(y)))


def test_train_with_slide_groups_and_streamed_tiles():
    """train() takes the slide of each tile for its early-stopping split, and tiles as any object
    decoding an index array (streamed from disk); the result equals training on the array."""
    torch.set_num_threads(1)
    x, y = _colour_tiles(12)
    groups = np.repeat(np.arange(12), 2)
    calls = []

    class Streamed:
        def __len__(self):
            return len(x)

        def __getitem__(self, ii):
            calls.append(len(np.atleast_1d(ii)))
            return x[ii]

    s = clf.TrainSettings(epochs=2, lr=1e-3, batch_size=8, val_fraction=0.25, image_size=32)
    out = []
    for tiles in (x, Streamed()):
        torch.manual_seed(0)
        m, hist = clf.train(clf.make_resnet("resnet18", 2), tiles, y, s, seed=0, progress=False, groups=groups)
        assert all("val_loss" in h for h in hist)
        out.append(clf.predict_proba(m, x, 32))
    assert calls and max(calls) <= 64  # decoded in batches, never all at once
    np.testing.assert_allclose(out[0], out[1], atol=1e-5)


def test_seeded_resnet_weights_do_not_depend_on_the_global_torch_rng():
    """A seeded network starts from the same weights in any process (torch's global RNG starts
    from a random seed in each; RNA-CDM's first pretrained network took its weights from it), and
    building it leaves the global RNG where it was."""
    import torch

    from crossmodal.models.classifier import make_resnet

    torch.manual_seed(1)
    a = make_resnet("resnet18", 3, seed=7).state_dict()
    after = torch.rand(1)
    torch.manual_seed(1)
    assert torch.equal(torch.rand(1), after)  # the global stream did not move
    torch.manual_seed(2)
    b = make_resnet("resnet18", 3, seed=7).state_dict()
    c = make_resnet("resnet18", 3, seed=8).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"]) and not torch.equal(a["fc.weight"], c["fc.weight"])
