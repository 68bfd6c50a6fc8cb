"""Rotation prediction (Gidaris et al. 2018): the four rotations pixel by pixel, the loss
against a per-image cross-entropy loop, its settings, two processes against one and its
export (the end-to-end run is tests/engine/test_methods.py's, as for every method)."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp

from engine.config.resolve import DeviceInfo, resolve_config
from engine.config.train_config import TrainConfig, preset
from engine.methods import METHODS, build_model
from engine.methods.rotation import RotationPrediction, rotate_batch
from engine.training import distributed
from tests.helpers.ranks import join_gloo

CPU = DeviceInfo("cpu", "test", None, False)


# --- the rotations ----------------------------------------------------------------------------

def test_the_four_rotations_are_exact_and_labelled_in_order():
    s = 5
    x = torch.arange(2 * 3 * s * s, dtype=torch.float32).view(2, 3, s, s)
    out, labels = rotate_batch(x)
    assert out.shape == (8, 3, s, s)
    assert labels.tolist() == [0, 0, 1, 1, 2, 2, 3, 3]
    # counter-clockwise by k x 90 degrees, pixel by pixel
    where = {0: lambda r, c: (r, c), 1: lambda r, c: (c, s - 1 - r),
             2: lambda r, c: (s - 1 - r, s - 1 - c), 3: lambda r, c: (s - 1 - c, r)}
    for k in range(4):
        for i in range(2):
            for r in range(s):
                for c in range(s):
                    rr, cc = where[k](r, c)
                    assert torch.equal(out[k * 2 + i, :, r, c], x[i, :, rr, cc]), (k, i, r, c)
    # channels-last in, channels-last out (the loop's memory format)
    cl, _ = rotate_batch(x.contiguous(memory_format=torch.channels_last))
    assert cl.is_contiguous(memory_format=torch.channels_last) and torch.equal(cl, out)
    with pytest.raises(ValueError, match="square"):
        rotate_batch(torch.zeros(1, 3, 4, 5))


# --- the loss against a loop over the rotated images --------------------------------------------

def tiny_config() -> TrainConfig:
    return TrainConfig(data="x", method="rotation", backbone="resnet18", small_stem=True,
                       image_size=16, batch_size=8, proj_hidden_dim=8, proj_out_dim=16,
                       precision="fp32")


def tiny_model() -> RotationPrediction:
    torch.manual_seed(0)
    model = build_model(tiny_config()).double()
    assert isinstance(model, RotationPrediction)
    return model


def images(step: int, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 views of 8 px (the small stem takes any size: the tests stay quick)."""
    g = torch.Generator().manual_seed(100 + step)
    return (torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64),
            torch.randn(n, 3, 8, 8, generator=g, dtype=torch.float64))


def test_the_loss_is_the_per_image_cross_entropy_of_the_rotation_classifier():
    model = tiny_model()
    head = model.online_encoder.head
    assert isinstance(head, torch.nn.Linear) and head.out_features == 4  # z: the 4 logits
    x1, x2 = images(0, n=4)
    out = model(x1, x2)
    out.loss.backward()
    grads = {k: p.grad.clone() for k, p in model.named_parameters()}
    model.zero_grad()

    # the reference: every image rotated with torch.rot90 one by one, one pass (batch norm
    # over all 16), then -log softmax(logits)[k] image by image
    rotated = [(torch.rot90(x1[i], k, dims=(1, 2)), k) for k in range(4) for i in range(4)]
    h, logits = model.encoder(torch.stack([r for r, _ in rotated]))
    total = 0.0
    correct = 0
    for row, (_, k) in enumerate(rotated):
        total = total - torch.log(torch.exp(logits[row, k]) / torch.exp(logits[row]).sum())
        correct += int(int(logits[row].argmax()) == k)
    want = total / len(rotated)
    want.backward()
    # the cross entropy runs in float32 (logits of a few units): a few float32 eps
    torch.testing.assert_close(out.loss.double(), want, rtol=1e-6, atol=0)
    scale = max(float(g.abs().max()) for g in grads.values())
    for k, p in model.named_parameters():
        torch.testing.assert_close(grads[k], p.grad, rtol=0, atol=1e-6 * scale)
    assert model.accuracy() == correct / 16
    # positive_pair_similarity: cos of h upright and rotated; embedding_std: of h upright
    hd = h.detach()
    cos = torch.nn.functional.cosine_similarity(hd[:4].repeat(3, 1), hd[4:], dim=1).mean()
    torch.testing.assert_close(out.positive_pair_similarity.double(), cos, rtol=1e-5, atol=0)
    # x2 is not read
    model = tiny_model()
    assert torch.equal(model(x1, torch.zeros_like(x2)).loss, tiny_model()(x1, x2).loss)


def test_settings_follow_the_paper_and_hide_what_it_does_not_read():
    cfg, why = resolve_config(dataclasses.replace(preset("rotation"), batch_size=64), CPU,
                              typical_side=None, num_images=1000)
    assert (cfg.optimizer, cfg.lr, cfg.lr_scaling, cfg.weight_decay) == (
        "sgd", 0.1, "linear", 5e-4)
    assert "temperature" not in why  # it is not read: no reason given for it
    a = cfg.augment
    assert (a.crop_scale_min, a.flip_p, a.jitter_p, a.grayscale_p, a.blur_p) == (
        0.5, 0.5, 0.0, 0.0, 0.0)
    spec = METHODS["rotation"]
    assert spec.logged == ("rotation_accuracy",)
    assert {"temperature", "head_batch_norm"} <= set(spec.ignores)
    help_of = {f.name: str(f.metadata) for f in dataclasses.fields(TrainConfig)}
    assert "for Rotation" not in help_of["temperature"]  # its auto text skips the method


# --- two processes against one ---------------------------------------------------------------

WORLD = 2
STEPS = 2
BATCH = 4  # the global batch: 2 images (8 rotated) per process


def two_steps(model: RotationPrediction, forward) -> dict:
    params = dict(model.named_parameters())
    optimizer = torch.optim.SGD(params.values(), lr=0.05)
    out: dict = {"loss": [], "accuracy": []}
    for step in range(STEPS):
        optimizer.zero_grad()
        out["loss"].append(forward(step))
        out["accuracy"].append(model.accuracy())
        if step == 0:
            out["grads"] = {k: p.grad.clone() for k, p in params.items()}
            optimizer.step()
    out["state"] = {k: v.clone() for k, v in model.state_dict().items()}
    return out


def _rank_main(rank: int, port: int, folder: str) -> None:
    ctx = join_gloo(rank, port, WORLD)
    per = BATCH // WORLD
    rows = slice(rank * per, (rank + 1) * per)
    model = distributed.convert_sync_batchnorm(tiny_model(), torch.device("cpu"))
    wrapped = distributed.data_parallel(model, torch.device("cpu"))

    def forward(step):
        x1, x2 = images(step, BATCH)
        out = wrapped(x1[rows], x2[rows])
        out.loss.backward()
        return float(ctx.mean(out.loss.detach()))

    torch.save(two_steps(model, forward), Path(folder) / f"rank{rank}.pt")
    distributed.shutdown()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_processes_with_synchronised_batch_norm_compute_the_single_process_step(tmp_path):
    mp.start_processes(_rank_main, args=(free_port(), str(tmp_path)), nprocs=WORLD,
                       start_method="spawn", join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    model = tiny_model()

    def forward(step):
        out = model(*images(step, BATCH))
        out.loss.backward()
        return float(out.loss.detach())

    reference = two_steps(model, forward)
    # float64 model, float32 cross entropy on logits of a few units: a few float32 eps
    rounding = 4 * torch.finfo(torch.float32).eps
    for rank in ranks:
        np.testing.assert_allclose(rank["loss"], reference["loss"], rtol=rounding)
        assert rank["accuracy"] == reference["accuracy"]  # over every process's images
        scale = max(float(g.abs().max()) for g in reference["grads"].values())
        for k, g in reference["grads"].items():
            torch.testing.assert_close(rank["grads"][k], g, rtol=0, atol=rounding * scale)
        for k, v in reference["state"].items():
            torch.testing.assert_close(rank["state"][k], v, rtol=rounding, atol=rounding)
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert all(torch.equal(a[k], b[k]) for k in a)


# --- end to end --------------------------------------------------------------------------------
# tests/engine/test_methods.py trains every registered method (this one too), resumes it bit
# for bit and runs every exploring and export verb on its run, z = the 4 logits included.

# The classifier head exports as a one-layer linear head: tests/engine/test_instdisc.py
# checks that export (InstDisc's 128-d embedding is the same kind of head).
def test_bench_times_rotation_steps():
    from engine.cli.main import build_parser
    from engine.training.bench import bench_one

    assert build_parser().parse_args(["bench", "--method", "rotation"]).method == "rotation"
    result = bench_one("resnet18", 16, 2, "cpu", seconds=0.1, method="rotation",
                       settings={"precision": "fp32", "channels_last": False})
    assert result.method == "rotation" and result.pairs_per_s > 0
    # four rotated images per image through the encoder, forward and backward: twice the
    # FLOPs of SimCLR's two views (about 1.67 GFLOP a pair for ResNet-18 at 16 px)
    assert 3.0 < result.gflops_per_pair < 3.7


def test_a_low_spread_is_no_collapse_warning_for_rotation(tmp_path, monkeypatch):
    """Rotation's spread is measured on non-negative h, near the collapse line when healthy:
    the loop does not warn of a collapse for it (it does for the other methods, see
    test_byol.py)."""
    from engine.methods.base import COLLAPSE_SPREAD
    from tests.helpers.folders import make_folder
    from tests.helpers.training import events_of, run

    forward = RotationPrediction.forward

    def low_spread(self, x1, x2, batch=None):
        out = forward(self, x1, x2, batch)
        return dataclasses.replace(out, embedding_std=torch.tensor(COLLAPSE_SPREAD / 2))

    monkeypatch.setattr(RotationPrediction, "forward", low_spread)
    folder = make_folder(tmp_path / "shapes")
    result = run({"data": str(folder), "method": "rotation", "epochs": 1, "knn_every": 0},
                 tmp_path)
    assert result.status == "finished"
    events = events_of(result.run_dir)
    assert all(e["embedding_std"] < COLLAPSE_SPREAD for e in events if e["type"] == "step")
    assert not [e for e in events if e["type"] == "warning" and "collapsing" in e["message"]]
