"""Backbones, projection head, SimCLR and MoCo modules (queue, momentum), optimisers."""

import math

import pytest
import torch
from torch import nn
from torchvision import models as tvm

from engine.methods import MoCo, SimCLR, embedding_spread, key_encoder_momentum
from engine.models.encoder import Encoder, ProjectionHead, build_backbone, feature_dim
from engine.models.losses import info_nce, nt_xent
from engine.training.optim import LARS, build_optimizer, lr_at, param_groups, scaled_lr


def tiny_encoder(out_dim: int = 8) -> Encoder:
    backbone = nn.Sequential(nn.Flatten(), nn.Linear(3 * 4 * 4, 16))
    return Encoder(backbone, ProjectionHead(16, 16, out_dim, batch_norm=True))


@pytest.mark.parametrize("name,size,small", [("resnet18", 32, True), ("resnet34", 32, True),
                                             ("resnet18", 64, False)])
def test_backbone_output_is_the_pooled_feature(name, size, small):
    net = build_backbone(name, small_stem=small).eval()
    with torch.no_grad():
        h = net(torch.randn(2, 3, size, size))
    assert h.shape == (2, feature_dim(name))
    assert isinstance(net.maxpool, nn.Identity) == small
    assert net.conv1.kernel_size == ((3, 3) if small else (7, 7))


def test_resnet50_default_shapes_at_224():
    # Shape-level check of the full-size path (meta device: no memory, no compute).
    with torch.device("meta"):
        net = build_backbone("resnet50", small_stem=False)
        h = net(torch.empty(2, 3, 224, 224))
        z = ProjectionHead(2048, 2048, 128, batch_norm=True)(h)
    assert h.shape == (2, 2048) and z.shape == (2, 128)


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_backbone_state_dict_loads_into_torchvision(name):
    ours = build_backbone(name, small_stem=False)
    theirs = getattr(tvm, name)(weights=None)
    theirs.fc = nn.Identity()
    theirs.load_state_dict(ours.state_dict(), strict=True)


def test_projection_head_layout():
    simclr = ProjectionHead(512, 512, 128, batch_norm=True)
    moco = ProjectionHead(512, 512, 128, batch_norm=False)
    assert any(isinstance(m, nn.BatchNorm1d) for m in simclr.modules())
    assert not any(isinstance(m, nn.BatchNorm1d) for m in moco.modules())
    assert simclr(torch.randn(4, 512)).shape == (4, 128)


def test_simclr_loss_is_nt_xent_of_the_projections():
    torch.manual_seed(0)
    model = SimCLR(tiny_encoder(), temperature=0.3).eval()
    x1, x2 = torch.randn(6, 3, 4, 4), torch.randn(6, 3, 4, 4)
    out = model(x1, x2)
    _, z = model.encoder(torch.cat([x1, x2]))
    assert out.loss.item() == pytest.approx(nt_xent(z[:6], z[6:], 0.3).item(), rel=1e-6)
    expected_pos = torch.nn.functional.cosine_similarity(z[:6], z[6:]).mean()
    assert out.positive_pair_similarity.item() == pytest.approx(expected_pos.item(), rel=1e-5)


def test_embedding_spread_detects_collapse():
    torch.manual_seed(0)
    spread = embedding_spread(torch.randn(512, 64)).item()
    collapsed = embedding_spread(torch.ones(512, 64) + 1e-4 * torch.randn(512, 64)).item()
    assert 0.9 < spread < 1.1
    assert collapsed < 0.01


def test_moco_queue_is_a_ring_buffer():
    model = MoCo(tiny_encoder(out_dim=4), dim=4, queue_size=5, momentum=0.9)
    model.queue.zero_()
    model._dequeue_and_enqueue(torch.full((3, 4), 1.0))
    assert model.queue_ptr.item() == 3
    model._dequeue_and_enqueue(torch.full((3, 4), 2.0))  # wraps: slots 3, 4, 0
    assert model.queue_ptr.item() == 1
    assert model.queue[:, 0].tolist() == [2.0, 1.0, 1.0, 2.0, 2.0]
    model._dequeue_and_enqueue(torch.full((3, 4), 3.0))  # oldest (slots 1, 2) replaced
    assert model.queue[:, 0].tolist() == [2.0, 3.0, 3.0, 3.0, 2.0]
    assert model.queue_ptr.item() == 4


def test_moco_momentum_update_and_frozen_key_encoder():
    torch.manual_seed(0)
    model = MoCo(tiny_encoder(), dim=8, queue_size=16, momentum=0.9)
    with torch.no_grad():
        for p in model.encoder_q.parameters():
            p.add_(1.0)
    q_before = [p.clone() for p in model.encoder_q.parameters()]
    k_before = [p.clone() for p in model.encoder_k.parameters()]
    model._momentum_update_key_encoder()
    for q, k0, k1 in zip(q_before, k_before, model.encoder_k.parameters()):
        torch.testing.assert_close(k1, 0.9 * k0 + 0.1 * q)
    assert all(not p.requires_grad for p in model.encoder_k.parameters())


def test_moco_forward_uses_queue_before_enqueueing_keys():
    torch.manual_seed(0)
    model = MoCo(tiny_encoder(), dim=8, queue_size=16, momentum=1.0, temperature=0.2)
    x1, x2 = torch.randn(4, 3, 4, 4), torch.randn(4, 3, 4, 4)
    queue_before = model.queue.clone()
    model.eval()  # deterministic batch norm so we can recompute the same projections
    out = model(x1, x2)
    _, q = model.encoder_q(x1)
    _, k = model.encoder_k(x2)
    expected = info_nce(q, k, queue_before, 0.2)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    newest = torch.nn.functional.normalize(k, dim=1)
    torch.testing.assert_close(model.queue[:4], newest)
    torch.testing.assert_close(model.queue[4:], queue_before[4:])
    out.loss.backward()
    assert all(p.grad is None for p in model.encoder_k.parameters())
    assert any(p.grad is not None for p in model.encoder_q.parameters())


def test_momentum_ramp():
    assert key_encoder_momentum(0.99, 0, 100, ramp=True) == pytest.approx(0.99)
    assert key_encoder_momentum(0.99, 50, 100, ramp=True) == pytest.approx(0.995)
    assert key_encoder_momentum(0.99, 100, 100, ramp=True) == pytest.approx(1.0)
    assert key_encoder_momentum(0.99, 50, 100, ramp=False) == 0.99


def test_lr_schedule_warmup_then_cosine():
    lrs = [lr_at(s, peak=1.0, warmup_steps=10, total_steps=110) for s in range(110)]
    assert lrs[0] == pytest.approx(0.1) and lrs[9] == pytest.approx(1.0)
    assert lrs[10] == pytest.approx(1.0)
    assert lrs[60] == pytest.approx(0.5)
    assert lrs[-1] == pytest.approx(0.5 * (1 + math.cos(math.pi * 99 / 100)))
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))
    assert scaled_lr(0.3, 512, "linear") == pytest.approx(0.6)
    assert scaled_lr(0.3, 1024, "sqrt") == pytest.approx(0.6)
    assert scaled_lr(0.3, 1024, "none") == 0.3


def test_param_groups_exclude_biases_and_norms_from_decay():
    model = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4))
    decay, no_decay = param_groups(model, 0.1)
    assert [p.shape for p in decay["params"]] == [(4, 4)]
    assert len(no_decay["params"]) == 3 and no_decay["weight_decay"] == 0.0


def test_lars_step_matches_formula():
    w = nn.Parameter(torch.tensor([[3.0, 4.0]]))  # ||w|| = 5
    b = nn.Parameter(torch.tensor([1.0]))
    w.grad = torch.tensor([[0.0, 1.0]])
    b.grad = torch.tensor([2.0])
    opt = LARS([{"params": [w], "lars": True, "weight_decay": 0.5},
                {"params": [b], "lars": False, "weight_decay": 0.0}],
               lr=0.1, momentum=0.9, eta=0.001)
    opt.step()
    d = torch.tensor([[0.0, 1.0]]) + 0.5 * torch.tensor([[3.0, 4.0]])
    trust = 0.001 * 5.0 / d.norm()
    torch.testing.assert_close(w.detach(), torch.tensor([[3.0, 4.0]]) - 0.1 * trust * d)
    torch.testing.assert_close(b.detach(), torch.tensor([1.0 - 0.1 * 2.0]))


@pytest.mark.parametrize("name", ["lars", "sgd", "adamw"])
def test_build_optimizer(name):
    model = nn.Linear(3, 2)
    opt = build_optimizer(model, name, lr=0.1, weight_decay=1e-4, momentum=0.9)
    model(torch.randn(4, 3)).sum().backward()
    before = model.weight.detach().clone()
    opt.step()
    assert not torch.equal(before, model.weight)
