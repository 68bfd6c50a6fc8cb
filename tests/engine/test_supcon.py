"""SupCon (Khosla et al. 2020): its loss against a slow per-anchor reference, the labels it
trains with (class sub-folders, an "unlabelled" sub-folder, a hidden share), two processes
against one, and runs on the CPU that the exploring verbs then read."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from engine.config.train_config import TrainConfig
from engine.data.scan import NOT_IN_CLASS, DataError, SkippedFile, scan_folder
from engine.evaluate import explore
from engine.evaluate.probe import ProbeParams, linear_probe
from engine.methods import METHODS, BatchInfo
from engine.methods.supcon import SupCon, hide_labels, supcon_loss
from engine.models.encoder import Encoder, ProjectionHead
from engine.models.losses import nt_xent
from engine.run.checkpoint import load_checkpoint
from engine.run.events import EventWriter
from engine.training import distributed
from engine.training.loop import train
from engine.training.setup import log_to
from tests.helpers.folders import make_flat_folder, make_folder, write_image
from tests.helpers.ranks import join_gloo
from tests.helpers.training import events_of, run

# The loss computes in float32 whatever its inputs: logits of up to 1/t = 10 round to about
# eps / t of the loss and of its gradient (measured below: 3e-7 relative).
T = 0.1
HEAD_ROUNDING = 4 * torch.finfo(torch.float32).eps / T  # 4.8e-6


def reference(z1: torch.Tensor, z2: torch.Tensor, labels: list[int], t: float) -> torch.Tensor:
    """L^sup_out (eq. 2) written out anchor by anchor, positive by positive."""
    z = torch.cat([z1, z2]).double()
    z = z / z.norm(dim=1, keepdim=True)
    n = len(labels)
    terms = []
    for i in range(2 * n):
        denominator = sum(torch.exp(z[i] @ z[a] / t) for a in range(2 * n) if a != i)
        positives = [p for p in range(2 * n) if p != i and (
            p % n == i % n or (labels[i % n] >= 0 and labels[p % n] == labels[i % n]))]
        assert positives  # at least the other view
        terms.append(-sum(torch.log(torch.exp(z[i] @ z[p] / t) / denominator)
                          for p in positives) / len(positives))
    return sum(terms) / (2 * n)


def pair(n: int, d: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_(),
            torch.randn(n, d, generator=g, dtype=torch.float64).requires_grad_())


def assert_same_loss_and_gradients(a, b, inputs, rtol=HEAD_ROUNDING):
    torch.testing.assert_close(a.double(), b.double(), rtol=rtol, atol=0)
    ga, gb = torch.autograd.grad(a, inputs), torch.autograd.grad(b, inputs)
    scale = max(float(g.abs().max()) for g in gb)
    for x, y in zip(ga, gb, strict=True):
        assert float((x - y).abs().max()) <= rtol * scale


# --- the loss ----------------------------------------------------------------------------------

@pytest.mark.parametrize("labels", [
    [0, 0, 0, 1, 1, -1, -1, 2],  # classes of 3, 2 and 1 images, and two unlabelled
    [4, -1, 4, 4, 0, 0, 0, 0, -1, 1],  # labels need not start at 0 nor be contiguous
    [3, 3, 3, 3, 3],  # one class: every other view is a positive
], ids=["mixed", "sparse", "one-class"])
def test_loss_is_eq2_of_the_paper_values_and_gradients(labels):
    z1, z2 = pair(len(labels))
    got = supcon_loss(z1, z2, torch.tensor(labels), T)
    assert got.dtype == torch.float32
    assert_same_loss_and_gradients(got, reference(z1, z2, labels, T), [z1, z2])


def test_a_batch_without_labels_is_nt_xent():
    z1, z2 = pair(8, seed=1)
    unlabelled = supcon_loss(z1, z2, torch.full((8,), -1), T)
    # to float precision: the same float32 logits, summed in another order
    assert_same_loss_and_gradients(unlabelled, nt_xent(z1, z2, T), [z1, z2], rtol=1e-6)
    # a check of the check: labels do change the loss
    labelled = supcon_loss(z1, z2, torch.tensor([0, 0, 1, 1, 0, 0, 1, 1]), T)
    assert abs(float(labelled.detach()) - float(unlabelled.detach())) > 0.1


def test_an_unlabelled_images_anchors_are_those_of_nt_xent_in_a_mixed_batch():
    # Images 4-7 are unlabelled: their anchors' terms are NT-Xent's (the rows= form scores
    # just them), whatever the labels of the others.
    z1, z2 = pair(8, seed=2)
    mixed = torch.tensor([0, 0, 1, 1, -1, -1, -1, -1])
    torch.testing.assert_close(supcon_loss(z1, z2, mixed, T, rows=slice(4, 8)),
                               nt_xent(z1, z2, T, rows=slice(4, 8)), rtol=1e-6, atol=0)


@pytest.mark.parametrize("world", [2, 4])
def test_shares_of_the_anchors_average_to_the_whole_batch_loss_and_gradient(world):
    z1, z2 = pair(8, seed=3)
    labels = torch.tensor([0, 1, 0, -1, 1, 1, -1, 2])
    whole = supcon_loss(z1, z2, labels, T)
    per = 8 // world
    shares = torch.stack([supcon_loss(z1, z2, labels, T, rows=slice(r * per, (r + 1) * per))
                          for r in range(world)])
    assert_same_loss_and_gradients(shares.mean(), whole, [z1, z2], rtol=1e-6)


def test_loss_is_float32_inside_bf16_autocast():
    z1, z2 = (torch.randn(8, 16) for _ in range(2))
    labels = torch.tensor([0, 0, 1, 1, 2, 2, -1, -1])
    fp32 = supcon_loss(z1, z2, labels, T)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        inside = supcon_loss(z1, z2, labels, T)
        low = (z1 @ z2.T).dtype  # what autocast makes of a matrix product here
    assert low == torch.bfloat16 and inside.dtype == torch.float32
    torch.testing.assert_close(inside, fp32, rtol=1e-6, atol=0)


def test_bad_inputs_are_refused_with_what_is_wrong():
    z1, z2 = pair(4)
    with pytest.raises(ValueError, match=r"labels must be integers of shape \(4,\)"):
        supcon_loss(z1, z2, torch.zeros(3, dtype=torch.long), T)
    with pytest.raises(ValueError, match="labels must be integers"):
        supcon_loss(z1, z2, torch.zeros(4), T)
    with pytest.raises(ValueError, match="temperature"):
        supcon_loss(z1, z2, torch.zeros(4, dtype=torch.long), 0.0)
    model = SupCon(tiny_encoder())
    x = torch.randn(4, 3, 8, 8)
    with pytest.raises(ValueError, match="SupCon needs the images' labels"):
        model(x, x)


# --- the labels training sees ------------------------------------------------------------------

def test_hidden_labels_are_a_share_of_each_class_fixed_by_the_seed():
    labels = np.array([0] * 10 + [1] * 5 + [-1] * 3 + [2] * 1 + [1] * 5)
    assert np.array_equal(hide_labels(labels, 0.0, seed=1), labels)
    hidden = hide_labels(labels, 0.3, seed=1)
    assert np.array_equal(hidden, hide_labels(labels.copy(), 0.3, seed=1))  # same every time
    gone = (hidden == -1) & (labels >= 0)
    assert [int(gone[labels == c].sum()) for c in (0, 1, 2)] == [3, 3, 0]  # round(0.3 n_c)
    assert np.array_equal(hidden[~gone], labels[~gone])  # the others keep their labels
    assert int((hide_labels(labels, 0.35, seed=1)[labels == 0] == -1).sum()) == 4  # of 3.5
    assert not np.array_equal(hide_labels(labels, 0.3, seed=2), hidden)  # another seed
    assert (hide_labels(labels, 1.0, seed=1) == -1).all()


def test_class_subfolders_an_unlabelled_subfolder_and_two_sources_of_one_class(tmp_path):
    root = tmp_path / "mixed"
    for i, rel in enumerate(["cat/real/a.jpg", "cat/synthetic/b.png", "dog/c.png",
                             "unlabelled/d.png", "Unlabeled/e.png", "loose.png"]):
        write_image(root / rel, seed=i)
    m = scan_folder(root)
    assert m.classes == ["cat", "dog"]  # "unlabelled" is not a class
    by_path = {r.path: r.label for r in m.images}
    assert by_path == {"cat/real/a.jpg": 0, "cat/synthetic/b.png": 0, "dog/c.png": 1,
                       "unlabelled/d.png": None, "Unlabeled/e.png": None}
    assert m.skipped == [SkippedFile("loose.png", NOT_IN_CLASS)]
    assert "sub-folder named 'unlabelled'" in NOT_IN_CLASS
    assert m.summary() == "5 images in 2 classes (cat: 2, dog: 1) and 2 unlabelled; 1 file " \
                          "skipped (1 outside class folders)"
    # Both sources of the cat class are positives of each other: with cat's real and
    # synthetic images' projections alike, the loss is lower than with real cat like dog.
    labels = torch.from_numpy(m.labels())  # order: Unlabeled/e, cat/real, cat/synth, dog, ...
    order = [r.path for r in m.images]
    real, synth, dog = (order.index(p) for p in ("cat/real/a.jpg", "cat/synthetic/b.png",
                                                 "dog/c.png"))
    z = torch.eye(5, 8)
    alike, unlike = z.clone(), z.clone()
    alike[real] = z[synth]
    unlike[real] = z[dog]
    assert supcon_loss(alike, alike, labels, T) < supcon_loss(unlike, unlike, labels, T) - 1
    # and only an unlabelled folder is unlabelled everywhere
    flat = scan_folder(make_flat_folder(tmp_path / "flat", 2))
    assert not flat.has_labels and (flat.labels() == -1).all()


def test_the_probe_leaves_unlabelled_images_out():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((40, 6)).astype(np.float32)
    y = np.repeat([0, 1], 20)
    x[y == 1] += 1.5
    y_part = y.copy()
    y_part[::4] = -1
    kept = y_part >= 0
    params = ProbeParams(epochs=30)
    with_unlabelled = linear_probe(x, y_part, ["a", "b"], params)
    labelled_only = linear_probe(x[kept], y[kept], ["a", "b"], params)
    assert with_unlabelled["train"] + with_unlabelled["test"] == 30
    for key in ("top1", "train", "test", "loss", "confusion"):
        assert with_unlabelled[key] == labelled_only[key], key


# --- two processes against one -----------------------------------------------------------------

WORLD, BATCH, SIZE = 2, 8, 8
LABELS = [0, 1, -1, 0, 2, 1, -1, 0]  # both processes hold images of classes 0 and 1


def tiny_encoder() -> Encoder:
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Encoder(backbone, ProjectionHead(4, 8, 5, batch_norm=True))


def _views() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return (torch.randn(BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64),
            torch.randn(BATCH, 3, SIZE, SIZE, generator=g, dtype=torch.float64))


def _one_step(model, forward) -> dict:
    loss = forward(*_views())
    return {"loss": loss, "grads": {k: p.grad.clone() for k, p in model.named_parameters()}}


def _rank_main(rank: int, port: int, folder: str) -> None:
    ctx = join_gloo(rank, port, WORLD)
    per = BATCH // WORLD
    rows = slice(rank * per, (rank + 1) * per)
    model = distributed.convert_sync_batchnorm(SupCon(tiny_encoder(), T).double(),
                                               torch.device("cpu"))
    wrapped = distributed.data_parallel(model, torch.device("cpu"))
    batch = BatchInfo(indices=torch.arange(BATCH)[rows], labels=torch.tensor(LABELS)[rows])

    def forward(x1, x2):
        loss = wrapped(x1[rows], x2[rows], batch).loss
        loss.backward()
        return float(ctx.mean(loss.detach()))

    torch.save(_one_step(model, forward), Path(folder) / f"rank{rank}.pt")
    distributed.shutdown()


def test_two_processes_compute_the_single_process_loss_and_gradients(tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.start_processes(_rank_main, args=(port, str(tmp_path)), nprocs=WORLD,
                       start_method="spawn", join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]

    model = SupCon(tiny_encoder(), T).double()
    batch = BatchInfo(indices=torch.arange(BATCH), labels=torch.tensor(LABELS))

    def forward(x1, x2):
        loss = model(x1, x2, batch).loss
        loss.backward()
        return float(loss.detach())

    alone = _one_step(model, forward)
    # a check of the check: the labels shared across the processes matter (with the second
    # half's classes renamed, no image of one half is a positive of the other's)
    renamed = [c + 10 if c >= 0 and i >= BATCH // WORLD else c for i, c in enumerate(LABELS)]
    with torch.no_grad():
        apart = float(model(*_views(), BatchInfo(torch.arange(BATCH),
                                                 torch.tensor(renamed))).loss)
    assert abs(apart - alone["loss"]) > 1e-2
    scale = max(float(g.abs().max()) for g in alone["grads"].values())
    for rank in ranks:
        assert rank["loss"] == pytest.approx(alone["loss"], rel=HEAD_ROUNDING)
        assert rank["grads"].keys() == alone["grads"].keys()
        for k, g in alone["grads"].items():
            assert float((rank["grads"][k] - g).abs().max()) <= HEAD_ROUNDING * scale, k


# --- runs ----------------------------------------------------------------------------------------

def partly_labelled(root: Path) -> Path:
    """12 shapes in two classes and 4 images in an "unlabelled" sub-folder."""
    make_folder(root, per_class=6)
    make_flat_folder(root / "unlabelled", 4, width=28, height=28, seed=9)
    return root


def test_the_spec_says_supcon_reads_labels():
    spec = METHODS["supcon"]
    assert spec.uses_labels and not METHODS["simclr"].uses_labels
    assert (spec.title, spec.settings, spec.augment) == ("SupCon", ("supcon_unlabelled",), {})
    assert spec.defaults == {"temperature": 0.1, "optimizer": "lars", "head_batch_norm": True}


def test_a_folder_without_labels_is_refused_before_training(tmp_path):
    flat = make_flat_folder(tmp_path / "flat", 10)
    with pytest.raises(DataError) as err:
        run({"data": str(flat), "method": "supcon"}, tmp_path)
    message = str(err.value)
    assert str(flat) in message and "class sub-folders" in message
    assert "--method simclr" in message
    assert not (tmp_path / "runs").exists()  # nothing started


def test_a_partly_labelled_folder_trains_then_resumes_exactly_and_every_verb_reads_it(
        tmp_path):
    folder = partly_labelled(tmp_path / "shapes")
    settings = {"data": str(folder), "method": "supcon", "epochs": 2, "seed": 5,
                "batch_size": 16, "supcon_unlabelled": 0.5}
    lines: list[tuple[str, bool]] = []
    with log_to(lambda message, notice: lines.append((message, notice))):
        whole = run(settings, tmp_path)
    assert whole.status == "finished", whole.reason
    # 12 labelled images, half of each class hidden; the 4 of unlabelled/ have none
    assert ("SupCon: 6 images train with their labels, 10 without", True) in lines
    events = events_of(whole.run_dir)
    assert [e["step"] for e in events if e["type"] == "step"] == [1, 2]
    evals = [e for e in events if e["type"] == "eval"]
    assert [e["epoch"] for e in evals] == [1, 2]
    assert all(e["images"] == 12 for e in evals)  # kNN leaves the unlabelled out
    config = json.loads((whole.run_dir / "config.json").read_text())
    assert config["method"] == "supcon" and config["supcon_unlabelled"] == 0.5
    assert config["temperature"] == 0.1 and config["optimizer"] == "lars"

    calls = []
    part = run(settings, tmp_path, should_stop=lambda: calls.append(1) or len(calls) > 1)
    assert part.status == "stopped" and part.step == 1  # one epoch of one step
    resumed = train(TrainConfig(), resume=part.run_dir, cache_dir=tmp_path / "cache",
                    events=EventWriter(None))
    assert resumed.status == "finished" and resumed.step == 2
    a = load_checkpoint(whole.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    for key in a:  # bit for bit: the same hidden labels, data order and views
        assert torch.equal(a[key], b[key]), key

    run_dir, cache = whole.run_dir, tmp_path / "cache"
    emb = explore.embeddings(run_dir, "last", cache_dir=cache, device="cpu")
    assert emb.classes == ["circles", "squares"] and int((emb.labels == -1).sum()) == 4
    near = explore.neighbours(run_dir, 0, 3, cache_dir=cache, device="cpu")
    assert near["neighbours"][0]["index"] == 0
    assert {n["class"] for n in explore.neighbours(run_dir, 15, 16, cache_dir=cache,
                                                   device="cpu")["neighbours"]} == {
        "circles", "squares", None}
    probe = explore.probe(run_dir, "last", params=ProbeParams(epochs=10), cache_dir=cache,
                          device="cpu")
    assert probe["train"] + probe["test"] == 12
    exported = explore.export_encoder_of_run(run_dir, "torchvision")
    assert exported["verified"]


def test_bench_times_supcon_steps():
    from engine.training.bench import bench_one

    result = bench_one("resnet18", 16, 4, "cpu", seconds=0.1, method="supcon",
                       settings={"precision": "fp32"})
    assert result.method == "supcon" and result.timed_steps >= 1 and result.gflops_per_pair > 0
