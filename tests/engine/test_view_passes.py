"""The view_passes setting (one forward pass of 2N views, or a pass of N per view): the
batch-norm semantics of each against the encoder called by hand, the losses of SimCLR, SupCon
and BYOL in both, what "auto" chooses, old runs resuming as they trained, and the CPU's bf16
check under oneDNN's and ATen's instruction-set limits."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from engine.config import resolve
from engine.config.resolve import DeviceInfo, resolve_config
from engine.config.train_config import TrainConfig, preset
from engine.methods import METHODS, BatchInfo, build_model
from engine.methods.base import encode_views
from engine.methods.byol import BYOL, byol_loss
from engine.methods.simclr import SimCLR
from engine.methods.supcon import SupCon, supcon_loss
from engine.models.encoder import Encoder, ProjectionHead
from engine.models.losses import nt_xent
from engine.run.events import EventWriter
from engine.run.layout import RunDir
from engine.training.setup import resume_settings

CPU = DeviceInfo("cpu", "test cpu", None, False)
CPU_BF16 = DeviceInfo("cpu", "test cpu", None, True)
GPU = DeviceInfo("cuda", "test gpu", 80.0, True)


def tiny_encoder(seed: int = 0) -> Encoder:
    """A conv + batch norm backbone (batch statistics matter) and a head with batch norm."""
    torch.manual_seed(seed)
    backbone = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten())
    return Encoder(backbone, ProjectionHead(8, 16, 6, batch_norm=True))


def views(n: int = 6, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 8, 8, generator=g), torch.randn(n, 3, 8, 8, generator=g) * 3 + 1


def test_one_pass_is_the_encoder_on_both_views_and_two_passes_on_each_view() -> None:
    x1, x2 = views()
    for passes in ("one", "two"):
        enc = tiny_encoder()
        h, z = encode_views(enc, x1, x2, passes)
        ref = tiny_encoder()
        if passes == "one":
            h_ref, z_ref = ref(torch.cat([x1, x2]))
        else:
            (h1, z1), (h2, z2) = ref(x1), ref(x2)
            h_ref, z_ref = torch.cat([h1, h2]), torch.cat([z1, z2])
        torch.testing.assert_close(h, h_ref, rtol=0, atol=0)
        torch.testing.assert_close(z, z_ref, rtol=0, atol=0)
        # the running statistics too: one update over 2N, or two of N
        torch.testing.assert_close(enc.backbone[1].running_mean, ref.backbone[1].running_mean)


def test_two_passes_normalise_each_view_by_its_own_statistics() -> None:
    """In training mode a view's projections depend on the other view only through the
    shared batch statistics of one pass."""
    x1, x2 = views()
    other = x2 * 0.1 - 2
    for passes, independent in (("one", False), ("two", True)):
        enc = tiny_encoder()
        z1 = encode_views(enc, x1, x2, passes)[1][:6]
        z1_other = encode_views(enc, x1, other, passes)[1][:6]
        assert torch.equal(z1, z1_other) == independent, passes


def test_in_evaluation_mode_both_give_the_same_projections() -> None:
    x1, x2 = views()
    enc = tiny_encoder().eval()
    one = encode_views(enc, x1, x2, "one")[1]
    two = encode_views(enc, x1, x2, "two")[1]
    torch.testing.assert_close(one, two, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="view_passes"):
        encode_views(enc, x1, x2, "three")


@pytest.mark.parametrize("passes", ["one", "two"])
def test_simclr_and_supcon_losses_are_nt_xent_and_l_out_of_those_projections(
        passes: str) -> None:
    x1, x2 = views()
    labels = torch.tensor([0, 0, 1, 1, -1, 2])
    batch = BatchInfo(indices=torch.arange(6), labels=labels)
    simclr = SimCLR(tiny_encoder(), temperature=0.2, view_passes=passes)
    supcon = SupCon(tiny_encoder(), temperature=0.2, view_passes=passes)
    ref = tiny_encoder()
    if passes == "one":
        z = ref(torch.cat([x1, x2]))[1]
        z1, z2 = z[:6], z[6:]
    else:
        z1, z2 = ref(x1)[1], ref(x2)[1]
    torch.testing.assert_close(simclr(x1, x2).loss, nt_xent(z1, z2, 0.2))
    torch.testing.assert_close(supcon(x1, x2, batch).loss, supcon_loss(z1, z2, labels, 0.2))


def test_byol_two_passes_run_online_predictor_and_target_per_view() -> None:
    x1, x2 = views()
    model = BYOL(tiny_encoder(), dim=6, hidden_dim=16, momentum=0.5, view_passes="two")
    ref = BYOL(tiny_encoder(), dim=6, hidden_dim=16, momentum=0.5)
    loss = model(x1, x2).loss
    ref.update_target()
    p1, p2 = ref.predictor(ref.online(x1)[1]), ref.predictor(ref.online(x2)[1])
    with torch.no_grad():
        t1, t2 = ref.target(x1)[1], ref.target(x2)[1]
    torch.testing.assert_close(loss, byol_loss(p1, p2, t1, t2))
    with pytest.raises(ValueError, match="view_passes"):
        BYOL(tiny_encoder(), dim=6, hidden_dim=16, view_passes="2")


def test_auto_is_one_pass_and_a_setting_given_is_kept() -> None:
    for device, precision in ((CPU, None), (CPU_BF16, None), (CPU_BF16, "fp32"), (GPU, None)):
        cfg = TrainConfig.from_dict({"data": ".", "precision": precision})
        out, why = resolve_config(cfg, device, typical_side=32, num_images=1000)
        assert out.view_passes == "one" and why["view_passes"].startswith("one")
    for passes in ("one", "two"):
        asked = TrainConfig.from_dict({"data": ".", "view_passes": passes})
        out, why = resolve_config(asked, CPU, typical_side=32, num_images=1000)
        assert out.view_passes == passes and "view_passes" not in why
    # MoCo reads no view_passes: no reason is given for it
    moco, why = resolve_config(preset("moco"), CPU, typical_side=32, num_images=1000)
    assert "view_passes" not in why and "view_passes" in METHODS["moco"].ignores


def test_the_setting_reaches_the_model_and_is_checked() -> None:
    for passes in ("one", "two"):
        cfg, _ = resolve_config(TrainConfig.from_dict({"data": ".", "view_passes": passes,
                                                       "backbone": "resnet18"}),
                                CPU, typical_side=32, num_images=1000)
        assert build_model(cfg).view_passes == passes
    with pytest.raises(Exception, match="view_passes"):
        TrainConfig.from_dict({"data": ".", "view_passes": "three"})


def test_a_run_from_before_the_setting_resumes_with_one_pass(tmp_path) -> None:
    folder = RunDir(tmp_path / "run")
    folder.checkpoints.mkdir(parents=True)
    saved = TrainConfig.from_dict({"data": str(tmp_path), "precision": "fp32"}).to_dict()
    del saved["view_passes"]  # an older engine's config.json
    folder.config.write_text(json.dumps(saved))
    cfg, _, _ = resume_settings(folder, None, EventWriter(None))
    assert cfg.view_passes == "one"


def test_bf16_is_not_native_where_onednn_or_aten_is_limited_below_it(monkeypatch) -> None:
    monkeypatch.setattr(torch.backends.mkldnn, "is_available", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True, raising=False)
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX512")
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA", raising=False)
    assert resolve.cpu_has_native_bf16()
    for limit, native in (("AVX2", False), ("avx512_core", False), ("AVX512_CORE_BF16", True),
                          ("AVX512_CORE_AMX", True), ("ALL", True)):
        monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", limit)
        assert resolve.cpu_has_native_bf16() == native, limit
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: "AVX2")
    assert not resolve.cpu_has_native_bf16()
