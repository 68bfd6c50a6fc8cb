"""NT-Xent and InfoNCE against slow, obvious per-pair references (values and gradients)."""

import math

import pytest
import torch
import torch.nn.functional as F

from engine.models.losses import info_nce, nt_xent


def nt_xent_reference(z1: torch.Tensor, z2: torch.Tensor, t: float) -> torch.Tensor:
    """SimCLR eq. 1, literally: l(i, j) for both orderings of every pair, averaged over 2N."""
    n = z1.shape[0]
    views = [z1[i] for i in range(n)] + [z2[i] for i in range(n)]

    def sim(a, b):
        return torch.dot(a, b) / (a.norm() * b.norm())

    def loss_ij(i, j):
        num = torch.exp(sim(views[i], views[j]) / t)
        den = sum(torch.exp(sim(views[i], views[k]) / t) for k in range(2 * n) if k != i)
        return -torch.log(num / den)

    total = sum(loss_ij(k, k + n) + loss_ij(k + n, k) for k in range(n))
    return total / (2 * n)


def info_nce_reference(q, k, queue, t):
    losses = []
    for i in range(q.shape[0]):
        qi = q[i] / q[i].norm()
        pos = torch.exp(torch.dot(qi, k[i] / k[i].norm()) / t)
        neg = sum(torch.exp(torch.dot(qi, queue[j] / queue[j].norm()) / t)
                  for j in range(queue.shape[0]))
        losses.append(-torch.log(pos / (pos + neg)))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("n", [1, 2, 5, 12])
@pytest.mark.parametrize("dim", [2, 16, 64])
@pytest.mark.parametrize("t", [0.05, 0.1, 0.5, 2.0])
def test_nt_xent_matches_reference(n, dim, t):
    g = torch.Generator().manual_seed(n * 1000 + dim)
    z1 = torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True)
    z2 = torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True)
    ours = nt_xent(z1.float(), z2.float(), t)
    ref = nt_xent_reference(z1, z2, t)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-5)

    # Gradients too: nt_xent computes in float32, the reference in float64.
    a = z1.detach().clone().float().requires_grad_()
    b = z2.detach().clone().float().requires_grad_()
    nt_xent(a, b, t).backward()
    ref.backward()
    torch.testing.assert_close(a.grad.double(), z1.grad, rtol=1e-3, atol=1e-5)
    torch.testing.assert_close(b.grad.double(), z2.grad, rtol=1e-3, atol=1e-5)


def test_nt_xent_known_values():
    # Perfectly aligned pairs with orthogonal images: each anchor has 1 positive at cosine 1
    # and 2(N-1) negatives at cosine 0, so l = -log(e^(1/t) / (e^(1/t) + 2(N-1))).
    n, t = 4, 0.5
    z = torch.eye(n)
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 2 * (n - 1)))
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(expected, rel=1e-6)
    # Scaling a projection does not change a cosine loss.
    assert nt_xent(3 * z, z, t).item() == pytest.approx(expected, rel=1e-6)


def test_nt_xent_rejects_bad_arguments():
    z = torch.randn(4, 8)
    with pytest.raises(ValueError, match="temperature"):
        nt_xent(z, z, 0.0)
    with pytest.raises(ValueError, match="N, D"):
        nt_xent(z, torch.randn(3, 8), 0.1)


@pytest.mark.parametrize("n,k,dim", [(1, 1, 4), (3, 7, 8), (8, 32, 16)])
@pytest.mark.parametrize("t", [0.07, 0.2, 1.0])
def test_info_nce_matches_reference(n, k, dim, t):
    g = torch.Generator().manual_seed(n + k + dim)
    q = torch.randn(n, dim, generator=g, dtype=torch.float64, requires_grad=True)
    key = torch.randn(n, dim, generator=g, dtype=torch.float64)
    queue = torch.randn(k, dim, generator=g, dtype=torch.float64)
    ref = info_nce_reference(q, key, queue, t)
    a = q.detach().clone().float().requires_grad_()
    ours = info_nce(a, key.float(), queue.float(), t)
    assert ours.item() == pytest.approx(ref.item(), rel=1e-4, abs=1e-5)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(a.grad.double(), q.grad, rtol=1e-3, atol=1e-5)


def test_info_nce_is_cross_entropy_with_positive_first():
    q, k, queue = torch.randn(5, 8), torch.randn(5, 8), torch.randn(11, 8)
    qn, kn, qun = (F.normalize(x, dim=1) for x in (q, k, queue))
    logits = torch.cat([(qn * kn).sum(1, keepdim=True), qn @ qun.T], 1) / 0.2
    expected = F.cross_entropy(logits, torch.zeros(5, dtype=torch.long))
    assert info_nce(q, k, queue, 0.2).item() == pytest.approx(expected.item(), rel=1e-6)


def test_losses_stay_in_float32_inside_a_bf16_autocast():
    # Autocast would run the logits' matmul in bf16 (about 3 significant digits); the losses
    # turn it off for their own arithmetic, so they equal the float32 losses exactly.
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(32, 64, generator=g), torch.randn(32, 64, generator=g)
    queue = torch.randn(256, 64, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = nt_xent(z1, z2, 0.1), info_nce(z1, z2, queue, 0.2)
    assert low[0].dtype == low[1].dtype == torch.float32
    assert torch.equal(low[0], nt_xent(z1, z2, 0.1))
    assert torch.equal(low[1], info_nce(z1, z2, queue, 0.2))
