"""Loss unit tests on cases small enough to compute by hand."""

import math
import multiprocessing as mp
import os
import socket

import pytest
import torch
import torch.nn.functional as F

from wolofmrl.losses import MatryoshkaInfoNCE, distillation_loss, gather_with_grad, info_nce

E = torch.eye(4)


def test_info_nce_orthonormal_pairs():
    # q = d = [e1, e2]: logits diag(s), so each row's loss is log(1 + e^-s), in both directions
    q = d = E[:2]
    for s in (1.0, 10.0):
        assert info_nce(q, d, s).item() == pytest.approx(math.log1p(math.exp(-s)), rel=1e-5, abs=1e-6)


def test_temperature_scales_logits():
    q = F.normalize(torch.tensor([[1.0, 0.5], [0.2, 1.0]]), dim=-1)
    d = F.normalize(torch.tensor([[1.0, 0.0], [0.3, 1.0]]), dim=-1)
    s = 7.0
    logits = s * q @ d.T
    expected = (F.cross_entropy(logits, torch.arange(2)) + F.cross_entropy(logits.T, torch.arange(2))) / 2
    assert info_nce(q, d, s).item() == pytest.approx(expected.item(), rel=1e-6)
    assert info_nce(q, d, torch.tensor(s)).item() == pytest.approx(expected.item(), rel=1e-6)


def test_symmetric_and_one_way():
    # q = [e1, e1], d = [e1, e2]. q->d: rows [s, 0] with labels 0 then 1 -> log(1+e^-s), log(1+e^s).
    # d->q: rows [s, s] and [0, 0] -> log 2 each.
    q, d, s = torch.stack([E[0], E[0]]), E[:2], 3.0
    one_way = (math.log1p(math.exp(-s)) + math.log1p(math.exp(s))) / 2
    assert info_nce(q, d, s, symmetric=False).item() == pytest.approx(one_way, rel=1e-6)
    assert info_nce(q, d, s).item() == pytest.approx((one_way + math.log(2)) / 2, rel=1e-6)


def test_groups_mask_duplicates():
    # rows 0 and 1 are one sentence (two voices): neither is the other's negative.
    q = d = E[:3]
    s = 2.0
    groups = torch.tensor([5, 5, 9])
    # row 0: logits [s, -inf, 0] -> log(1 + e^-s); row 2: [0, 0, s] -> log(1 + 2e^-s)
    expected = (2 * math.log1p(math.exp(-s)) + math.log1p(2 * math.exp(-s))) / 3
    assert info_nce(q, d, s, groups=groups).item() == pytest.approx(expected, rel=1e-6)
    assert info_nce(q, d, s).item() == pytest.approx(math.log1p(2 * math.exp(-s)), rel=1e-6)


def test_matryoshka_dims_any_order_and_weights():
    torch.manual_seed(0)
    q, d = torch.randn(5, 8), torch.randn(5, 8)
    s = 10.0

    def at(m):
        return info_nce(F.normalize(q[:, :m], dim=-1), F.normalize(d[:, :m], dim=-1), s).item()

    loss, parts = MatryoshkaInfoNCE([8, 2], [1.0, 0.5])(q, d, s)
    assert loss.item() == pytest.approx(at(8) + 0.5 * at(2), rel=1e-6)
    assert parts["nce@2"].item() == pytest.approx(at(2), rel=1e-6)
    reordered, _ = MatryoshkaInfoNCE([2, 8], [0.5, 1.0])(q, d, s)
    assert reordered.item() == pytest.approx(loss.item(), rel=1e-6)
    alone, _ = MatryoshkaInfoNCE([8])(q, d, s)
    assert alone.item() == pytest.approx(at(8), rel=1e-6)
    # a prefix is re-normalised: scaling the tail of q leaves the 2-dim term unchanged
    q2 = q.clone()
    q2[:, 2:] *= 100
    assert MatryoshkaInfoNCE([2])(q2, d, s)[0].item() == pytest.approx(at(2), rel=1e-6)
    with pytest.raises(ValueError, match="exceed"):
        MatryoshkaInfoNCE([16])(q, d, s)
    with pytest.raises(ValueError, match="weights"):
        MatryoshkaInfoNCE([8, 2], [1.0])


def test_distillation_terms():
    s = torch.tensor([[1.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
    assert distillation_loss(s, s).item() == pytest.approx(0.0, abs=1e-7)
    assert distillation_loss(s, torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0]])).item() == pytest.approx(1.0)
    assert distillation_loss(s, torch.zeros(2, 3), "mse").item() == pytest.approx(5 / 6)
    # loss = nce + w * (1 - cos) per dim: teacher orthogonal at dim 1, equal at full width
    q = d = E[:2, :2].clone()
    teacher = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    crit = MatryoshkaInfoNCE([2], distill="cosine", distill_weight=0.5)
    loss, parts = crit(q, d, 1.0, teacher=teacher)
    assert parts["distill@2"].item() == pytest.approx(1.0)
    assert loss.item() == pytest.approx(math.log1p(math.exp(-1.0)) + 0.5, rel=1e-6)
    with pytest.raises(ValueError, match="teacher"):
        crit(q, d, 1.0)


def test_gather_is_identity_on_one_process():
    x = torch.randn(3, 2, requires_grad=True)
    assert gather_with_grad(x) is x


# ------------------------------------------------------------------ two processes (gloo), forked
def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _worker(rank, port, q_all, d_all, groups, scale, out):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", rank=rank, world_size=2)
    try:
        half = q_all.shape[0] // 2
        rows = slice(rank * half, (rank + 1) * half)
        q = q_all[rows].clone().requires_grad_(True)
        d = d_all[rows].clone().requires_grad_(True)
        loss, _ = MatryoshkaInfoNCE([6, 3])(q, d, scale, groups=groups[rows])
        loss.backward()
        out.put((rank, loss.item(), q.grad.numpy(), d.grad.numpy()))  # no shared-memory tensors
    finally:
        torch.distributed.destroy_process_group()


def test_gathered_negatives_two_processes_equal_one():
    torch.manual_seed(1)
    q_all, d_all = torch.randn(8, 6), torch.randn(8, 6)
    groups = torch.tensor([0, 1, 2, 3, 4, 1, 6, 7])  # a duplicate pair across the two processes
    scale = 5.0
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, q_all, d_all, groups, scale, out)) for r in range(2)]
    for p in procs:
        p.start()
    results = sorted(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(timeout=30)
        assert p.exitcode == 0

    q, d = q_all.clone().requires_grad_(True), d_all.clone().requires_grad_(True)
    full, _ = MatryoshkaInfoNCE([6, 3])(q, d, scale, groups=groups)
    full.backward()
    # each process's loss is the mean over its rows: their average is the combined batch's loss
    assert (results[0][1] + results[1][1]) / 2 == pytest.approx(full.item(), rel=1e-6)
    # each process gets d(sum of both losses)/d(its rows) = world * d(full)/d(rows); DDP's averaging divides by 2
    q_grad = torch.cat([torch.from_numpy(r[2]) for r in results]) / 2
    d_grad = torch.cat([torch.from_numpy(r[3]) for r in results]) / 2
    torch.testing.assert_close(q_grad, q.grad, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(d_grad, d.grad, rtol=1e-5, atol=1e-7)
    # without the other process's rows the loss would differ: the negatives really are gathered
    local, _ = MatryoshkaInfoNCE([6, 3])(q_all[:4], d_all[:4], scale, groups=groups[:4])
    assert abs(local.item() - results[0][1]) > 1e-3


def test_gradcache_equals_one_pass():
    """GradCache (wolofmrl/gradcache.py) gives the gradients of one pass over the whole batch, for per-row outputs,
    a trainable shared scale, and an untrained teacher."""
    from wolofmrl.gradcache import GradCache, chunk_slices

    torch.manual_seed(0)
    q_net, d_net = torch.nn.Linear(6, 8), torch.nn.Linear(6, 8)
    log_scale = torch.nn.Parameter(torch.tensor(2.0))
    teacher = torch.randn(7, 8)
    batch = {"x": torch.randn(7, 6), "y": torch.randn(7, 6), "t": teacher, "groups": torch.tensor([0, 1, 2, 3, 3, 4, 5])}
    crit = MatryoshkaInfoNCE([8, 4], distill="cosine", distill_weight=0.5)

    def encoder(b):
        return {"q": q_net(b["x"]), "d": d_net(b["y"]), "t": b["t"], "scale": log_scale.exp()}

    def loss_fn(out, b):
        return crit(out["q"], out["d"], out["scale"], teacher=out["t"], groups=b["groups"])

    params = [*q_net.parameters(), *d_net.parameters(), log_scale]
    loss, _ = loss_fn(encoder(batch), batch)
    (loss * 0.5).backward()
    expected = [p.grad.clone() for p in params]
    for p in params:
        p.grad = None
    cached_loss, _ = GradCache(3)(encoder, batch, loss_fn, {"q": True, "d": True, "scale": True}, 7, factor=0.5)
    assert cached_loss.item() == pytest.approx(loss.item(), rel=1e-6)
    for got, want in zip(params, expected):
        torch.testing.assert_close(got.grad, want, rtol=1e-5, atol=1e-6)
    assert [(s.start, s.stop) for s in chunk_slices(7, 3)] == [(0, 3), (3, 6), (6, 7)]
    with pytest.raises(ValueError, match="chunk"):
        GradCache(0)
