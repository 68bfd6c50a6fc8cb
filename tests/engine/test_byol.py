"""BYOL (Grill et al. 2020): its loss against a per-sample reference, the target network's
moving average, the asymmetric views, a short run end to end (events, resume, the exploring
verbs) and two processes against one."""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

from engine.config.train_config import AugmentConfig, TrainConfig, augment_preset, preset
from engine.data.augment import make_pairs, make_views, sample_view_params
from engine.methods import METHODS, embedding_spread
from engine.methods.byol import BYOL, byol_loss, regression_loss
from engine.models.encoder import Encoder, ProjectionHead
from engine.run.checkpoint import load_checkpoint
from engine.run.events import EventWriter
from engine.training import distributed
from engine.training.loop import train
from tests.engine.test_distributed import (
    GLOBAL_BATCH,
    WORLD,
    free_port,
    max_difference,
    two_steps,
)
from tests.helpers.folders import make_folder
from tests.helpers.ranks import join_gloo
from tests.helpers.training import events_of, run

# --- the loss --------------------------------------------------------------------------------


def reference_loss(p1, p2, z1, z2):
    """BYOL's eq. 2 and 4 written out sample by sample: for each image the normalised
    squared distance of each prediction to the other view's target, both directions summed,
    then the mean over the images."""
    total = 0.0
    for i in range(p1.shape[0]):
        for p, z in ((p1[i], z2[i]), (p2[i], z1[i])):
            pn = p / torch.sqrt((p * p).sum())
            zn = z / torch.sqrt((z * z).sum())
            total = total + ((pn - zn) ** 2).sum()
    return total / p1.shape[0]


def test_loss_and_gradients_match_a_per_sample_reference_in_float64():
    g = torch.Generator().manual_seed(0)
    p1, p2, z1, z2 = (torch.randn(6, 5, generator=g, dtype=torch.float64).requires_grad_()
                      for _ in range(4))
    loss = byol_loss(p1, p2, z1, z2)
    assert loss.dtype == torch.float64  # float64 in, float64 out (not cut to float32)
    grads = torch.autograd.grad(loss, [p1, p2])
    ref = reference_loss(p1, p2, z1.detach(), z2.detach())
    ref_grads = torch.autograd.grad(ref, [p1, p2])
    torch.testing.assert_close(loss, ref, rtol=1e-12, atol=1e-12)
    for got, want in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    # the targets get no gradient through the loss
    z1.grad = z2.grad = None
    byol_loss(p1, p2, z1, z2).backward()
    assert z1.grad is None and z2.grad is None


def test_the_symmetric_loss_is_the_sum_of_the_two_directions_and_lies_in_0_to_8():
    g = torch.Generator().manual_seed(1)
    p1, p2, z1, z2 = (torch.randn(7, 4, generator=g, dtype=torch.float64) for _ in range(4))
    whole = byol_loss(p1, p2, z1, z2)
    one = regression_loss(p1, z2).mean()  # online(x1) predicts target(x2)
    other = regression_loss(p2, z1).mean()  # online(x2) predicts target(x1)
    torch.testing.assert_close(whole, one + other, rtol=1e-14, atol=0)
    assert not torch.allclose(one, other)  # two different terms, both counted
    # per sample 2 - 2 cos: 0 for a perfect prediction, 4 for the opposite direction
    assert float(byol_loss(z2, z1, z1, z2)) == pytest.approx(0.0, abs=1e-12)
    assert float(byol_loss(-3 * z2, -z1, z1, z2)) == pytest.approx(8.0, abs=1e-12)
    with pytest.raises(ValueError, match="both be"):
        regression_loss(p1, z1[:, :3])


# --- the target network ----------------------------------------------------------------------

def small_byol(momentum: float = 0.9) -> BYOL:
    torch.manual_seed(0)
    encoder = Encoder(nn.Sequential(nn.Flatten(), nn.Linear(12, 8)),
                      ProjectionHead(8, 6, 4, batch_norm=True))
    return BYOL(encoder, dim=4, hidden_dim=6, momentum=momentum).double()


def test_forward_first_moves_the_target_towards_the_online_network_by_the_formula():
    model = small_byol(momentum=0.9)
    with torch.no_grad():  # a target different from the online network
        for p in model.target.parameters():
            p.add_(torch.randn_like(p))
    online0 = [p.detach().clone() for p in model.online.parameters()]
    target0 = [p.detach().clone() for p in model.target.parameters()]
    x = torch.randn(5, 3, 2, 2, dtype=torch.float64)
    model(x, x.flip(0)).loss.backward()
    for t, t0, o0 in zip(model.target.parameters(), target0, online0, strict=True):
        torch.testing.assert_close(t.detach(), 0.9 * t0 + 0.1 * o0, rtol=1e-14, atol=1e-14)
        assert not t.requires_grad and t.grad is None  # the target gets no gradient
    assert all(p.grad is not None for p in model.online.parameters())
    assert all(p.grad is not None for p in model.predictor.parameters())
    assert model.online_encoder is model.online


def test_the_target_momentum_rises_from_its_base_to_1_on_a_cosine():
    spec = METHODS["byol"]
    model = small_byol()
    settings = dataclasses.replace(preset("byol"), target_momentum=0.99)
    total = 8
    for step in range(total + 1):
        spec.before_step(model, settings, step, total)
        tau = 1 - (1 - 0.99) * (math.cos(math.pi * step / total) + 1) / 2
        assert model.momentum == pytest.approx(tau, abs=1e-15)
        assert spec.step_fields(model) == {"momentum": model.momentum}
    assert model.momentum == 1.0


def test_the_preset_and_paper_defaults_are_byols():
    from engine.config.resolve import DeviceInfo, resolve_config

    aug = augment_preset("byol")
    assert (aug.blur_p, aug.blur_p2, aug.solarize_p, aug.solarize_p2) == (1.0, 0.1, 0.0, 0.2)
    jitter = (aug.jitter_brightness, aug.jitter_contrast, aug.jitter_saturation, aug.jitter_hue)
    assert aug.jitter_strength == 1.0 and jitter == (0.4, 0.4, 0.2, 0.1)
    assert (aug.jitter_p, aug.grayscale_p, aug.crop_scale_min) == (0.8, 0.2, 0.08)
    cpu = DeviceInfo("cpu", "test", None, False)
    cfg, why = resolve_config(preset("byol"), cpu, typical_side=None, num_images=1000)
    assert (cfg.optimizer, cfg.lr, cfg.lr_scaling, cfg.weight_decay) == (
        "lars", 0.2, "linear", 1.5e-6)
    assert cfg.proj_out_dim == 256 and "byol paper" in why["proj_out_dim"]
    assert cfg.head_batch_norm and cfg.target_momentum == 0.996
    assert cfg.augment.blur_p == 1.0  # set by the preset: the 32 px "auto" rule is not used
    # another optimiser: the paper's lr and weight decay are not applied to it
    sgd, _ = resolve_config(dataclasses.replace(preset("byol"), optimizer="sgd"), cpu,
                            typical_side=None, num_images=1000)
    assert (sgd.lr, sgd.weight_decay) == (0.03, 1e-4)
    # SimCLR keeps its z width
    simclr, _ = resolve_config(preset("simclr"), cpu, typical_side=None, num_images=1000)
    assert simclr.proj_out_dim == 128


# --- the asymmetric views --------------------------------------------------------------------

#: Every operation off but the one a test turns on; whole-image crops.
PLAIN = AugmentConfig(crop_scale_min=1.0, crop_ratio_min=1.0, crop_ratio_max=1.0, flip_p=0.0,
                      jitter_p=0.0, grayscale_p=0.0, blur_p=0.0, solarize_p=0.0)


def images(n: int = 6, side: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(7)
    return torch.randint(0, 256, (n, 3, side, side), dtype=torch.uint8, generator=g)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def test_second_views_take_their_own_blur_and_solarisation_probabilities():
    cfg = dataclasses.replace(augment_preset("simclr"), blur_p=1.0, blur_p2=0.0,
                              solarize_p=0.0, solarize_p2=1.0)
    p = sample_view_params(2 * 50, 20, 20, cfg, 16, gen(), second=50)
    assert p.blur[:50].all() and not p.blur[50:].any()
    assert not p.solarize[:50].any() and p.solarize[50:].all()
    # without ``second`` (make_views: one view) every view takes the first probabilities
    one = sample_view_params(100, 20, 20, cfg, 16, gen(), second=None)
    assert one.blur.all() and not one.solarize.any()
    # make_pairs applies them: at 16 px (a 3-pixel kernel) only the first views are
    # blurred, only the second ones solarised
    x = images()
    v1, v2 = make_pairs(x, dataclasses.replace(PLAIN, blur_p=1.0, blur_p2=0.0), 16, gen(),
                        normalize=False)
    plain1, plain2 = make_pairs(x, PLAIN, 16, gen(), normalize=False)
    assert torch.equal(v2, plain2)
    assert (v1 - plain1).abs().amax(dim=(1, 2, 3)).gt(1e-3).all()  # every first view blurred
    s1, s2 = make_pairs(x, dataclasses.replace(PLAIN, solarize_p=0.0, solarize_p2=1.0), 16,
                        gen(), normalize=False)
    assert torch.equal(s1, plain1) and not torch.equal(s2, plain2)
    # BYOL's preset at 32 px: blur always in the first view, in about 10% of the second
    aug = augment_preset("byol")
    p = sample_view_params(2 * 4000, 40, 40, aug, 32, gen(1), second=4000)
    assert p.blur[:4000].all() and abs(float(p.blur[4000:].float().mean()) - 0.1) < 0.02
    assert not p.solarize[:4000].any()
    assert abs(float(p.solarize[4000:].float().mean()) - 0.2) < 0.02
    b1, b2 = make_pairs(images(8, 36), aug, 32, gen(2))
    assert b1.shape == b2.shape == (8, 3, 32, 32) and torch.isfinite(b1).all()


def test_simclr_views_are_unchanged_by_the_second_view_settings():
    x = images(8)
    cfg = dataclasses.replace(augment_preset("simclr"), blur_p=0.5, solarize_p=0.3)
    g0 = gen(3)
    a1, a2 = make_pairs(x, cfg, 16, g0)
    # the second-view probabilities set to the first ones: the very same views
    same = dataclasses.replace(cfg, blur_p2=0.5, solarize_p2=0.3)
    g1 = gen(3)
    b1, b2 = make_pairs(x, same, 16, g1)
    assert torch.equal(a1, b1) and torch.equal(a2, b2)
    # other second-view probabilities: the first views and the generator's state do not move
    other = dataclasses.replace(cfg, blur_p2=0.0, solarize_p2=1.0)
    g2 = gen(3)
    c1, c2 = make_pairs(x, other, 16, g2)
    assert torch.equal(a1, c1) and not torch.equal(a2, c2)
    assert torch.equal(g0.get_state(), g1.get_state())
    assert torch.equal(g0.get_state(), g2.get_state())
    # the draws are those of one probability for every view (the code before blur_p2)
    pairs = sample_view_params(16, 20, 20, cfg, 16, gen(4), second=8)
    flat = sample_view_params(16, 20, 20, cfg, 16, gen(4))
    for name, value in vars(pairs).items():
        assert torch.equal(value, getattr(flat, name)), name
    # make_views (one view) is the first view of the pipeline, unchanged by blur_p2
    torch.testing.assert_close(make_views(x, other, 16, gen(5)), make_views(x, cfg, 16, gen(5)),
                               rtol=0, atol=0)


def test_each_process_makes_its_rows_of_the_asymmetric_views():
    x = images(8)
    cfg = augment_preset("byol")
    whole = gen(6)
    v1, v2 = make_pairs(x, cfg, 16, whole)
    for r in range(2):
        g = gen(6)
        s1, s2 = make_pairs(x[r * 4:(r + 1) * 4], cfg, 16, g, global_batch=8, offset=r * 4)
        torch.testing.assert_close(s1, v1[r * 4:(r + 1) * 4], rtol=0, atol=1e-6)
        torch.testing.assert_close(s2, v2[r * 4:(r + 1) * 4], rtol=0, atol=1e-6)
        assert torch.equal(g.get_state(), whole.get_state())


# --- end to end ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def byol_run(tmp_path_factory):
    """One short BYOL run (2 epochs of 3 steps) shared by the tests below."""
    tmp = tmp_path_factory.mktemp("byol")
    folder = make_folder(tmp / "shapes")
    result = run({"data": str(folder), "method": "byol", "epochs": 2, "seed": 3}, tmp)
    assert result.status == "finished", result.reason
    return result, tmp, folder


def test_a_short_run_finishes_with_its_momentum_and_spread_logged(byol_run):
    result, _, _ = byol_run
    events = events_of(result.run_dir)
    assert events[-1]["type"] == "run_end" and events[-1]["status"] == "finished"
    steps = [e for e in events if e["type"] == "step"]
    assert [e["step"] for e in steps] == [1, 2, 3, 4, 5, 6]
    assert all(0 <= e["loss"] <= 8 for e in steps)
    assert len({round(e["loss"], 6) for e in steps}) > 1  # the loss moved
    momenta = [e["momentum"] for e in steps]
    assert momenta[0] == 0.996 and momenta == sorted(momenta) and momenta[-1] < 1
    assert all(0.2 < e["embedding_std"] <= 1.5 for e in steps)  # healthy, not collapsed
    assert not any("collapsing" in e.get("message", "") for e in events)
    config = json.loads((result.run_dir / "config.json").read_text())
    assert config["method"] == "byol" and config["lr"] == 0.2
    assert (config["augment"]["blur_p"], config["augment"]["blur_p2"]) == (1.0, 0.1)
    state = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")
    assert any(k.startswith("target.") for k in state["model"])  # the target is saved
    assert any(k.startswith("predictor.") for k in state["model"])


def test_stop_then_resume_matches_the_uninterrupted_run(byol_run):
    whole, tmp, folder = byol_run
    calls = []

    def stop_after_four():
        calls.append(1)
        return len(calls) > 4

    part = run({"data": str(folder), "method": "byol", "epochs": 2, "seed": 3}, tmp / "part",
               should_stop=stop_after_four)
    assert part.status == "stopped" and part.step == 4
    resumed = train(TrainConfig(), resume=part.run_dir, cache_dir=tmp / "part" / "cache",
                    events=EventWriter(None))
    assert resumed.status == "finished" and resumed.step == 6
    a = load_checkpoint(whole.run_dir / "checkpoints" / "last.pt")["model"]
    b = load_checkpoint(resumed.run_dir / "checkpoints" / "last.pt")["model"]
    assert a.keys() == b.keys()
    for key in a:  # online, predictor and target, bit for bit
        assert torch.equal(a[key], b[key]), key


def test_embed_neighbours_and_export_work_on_a_byol_run(byol_run, tmp_path, capsys):
    from engine.cli.main import main

    result, tmp, _ = byol_run
    common = ["--run", str(result.run_dir), "--cache-dir", str(tmp / "cache"), "--json"]
    assert main(["embed", *common]) == 0
    assert main(["neighbours", *common, "--query", "0", "-k", "3"]) == 0
    assert main(["export", *common, "--format", "torchvision", "--out",
                 str(tmp_path / "enc")]) == 0
    out = [json.loads(line) for line in capsys.readouterr().out.splitlines()
           if line.startswith("{")]
    results = [e for e in out if e["type"] == "result"]
    assert len(results) == 3, out
    assert len(results[1]["neighbours"]) == 3
    assert results[2]["verified"]
    # what they read is the online encoder, not the target
    from engine.evaluate.embed import load_encoder

    encoder, _, _ = load_encoder(result.run_dir)
    weights = load_checkpoint(result.run_dir / "checkpoints" / "last.pt")["model"]
    for key, value in encoder.state_dict().items():
        assert torch.equal(value, weights["online." + key]), key


def test_a_collapse_is_warned_about_once(byol_run, monkeypatch):
    """A forced collapse (every projection the same point): one warning, not one a step."""
    _, tmp, folder = byol_run
    forward = BYOL.forward

    def collapsed(self, x1, x2, batch=None):
        out = forward(self, x1, x2, batch)
        constant_z = torch.ones(x1.shape[0], 16)
        return dataclasses.replace(out, embedding_std=embedding_spread(constant_z))

    monkeypatch.setattr(BYOL, "forward", collapsed)
    result = run({"data": str(folder), "method": "byol", "epochs": 1, "knn_every": 0},
                 tmp / "collapse")
    assert result.status == "finished"
    events = events_of(result.run_dir)
    assert [e["embedding_std"] for e in events if e["type"] == "step"] == [0.0, 0.0, 0.0]
    warnings = [e["message"] for e in events
                if e["type"] == "warning" and "collapsing" in e["message"]]
    assert len(warnings) == 1
    assert "step 1" in warnings[0] and "--lr" in warnings[0]
    assert "--target-momentum" in warnings[0] and "--method simclr" in warnings[0]


# --- two processes against one ---------------------------------------------------------------

def byol_model() -> torch.nn.Module:
    """A small BYOL in float64 whose backbone, projector and predictor all have batch norm
    (a ResNet-18 would only make the processes slower: what is checked is BYOL's part)."""
    torch.manual_seed(0)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    encoder = Encoder(backbone, ProjectionHead(8, 32, 16, batch_norm=True))
    return BYOL(encoder, dim=16, hidden_dim=32, momentum=0.9).double()


#: The whole computation runs in float64 (BYOL's loss keeps its inputs' precision): the
#: processes and the single one differ only by the order of sums in batch norm.
FLOAT64_ROUNDING = 1e-9


def _rank_main(rank: int, port: int, folder: str) -> None:
    ctx = join_gloo(rank, port, WORLD)
    per = GLOBAL_BATCH // WORLD
    rows = slice(rank * per, (rank + 1) * per)
    model = distributed.convert_sync_batchnorm(byol_model(), torch.device("cpu"))
    wrapped = distributed.data_parallel(model, torch.device("cpu"))

    def forward(x1, x2):
        loss = wrapped(x1[rows], x2[rows]).loss
        loss.backward()
        return float(ctx.mean(loss.detach()))

    torch.save(two_steps(model, forward), Path(folder) / f"rank{rank}.pt")
    distributed.shutdown()


def test_two_processes_compute_the_single_process_loss_gradients_and_target(tmp_path):
    mp.start_processes(_rank_main, args=(free_port(), str(tmp_path)), nprocs=WORLD,
                       start_method="spawn", join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    model = byol_model()

    def forward(x1, x2):
        loss = model(x1, x2).loss
        loss.backward()
        return float(loss.detach())

    reference = two_steps(model, forward)
    for rank in ranks:
        np.testing.assert_allclose(rank["loss"], reference["loss"], rtol=FLOAT64_ROUNDING)
        assert rank["grads"].keys() == reference["grads"].keys()
        assert not any(k.startswith("target.") for k in rank["grads"])
        scale = max(float(g.abs().max()) for g in reference["grads"].values())
        assert max_difference(rank["grads"], reference["grads"]) <= FLOAT64_ROUNDING * scale
    a, b = ranks[0]["state"], ranks[1]["state"]
    assert a.keys() == b.keys() == reference["state"].keys()
    for k in a:  # online, predictor, target and batch-norm statistics
        assert torch.equal(a[k], b[k]), k
        torch.testing.assert_close(a[k], reference["state"][k], rtol=FLOAT64_ROUNDING,
                                   atol=FLOAT64_ROUNDING)
    # the target moved after the first step (the check can tell it from the online network)
    assert not torch.equal(a["target.backbone.0.weight"], a["online.backbone.0.weight"])
