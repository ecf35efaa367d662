"""torch.compile(fullgraph=True) over modules calling the ops; FLOP counting."""
import torch
from torch.utils.flop_counter import FlopCounterMode

import ssops
from ssops import testing


class TinySS2D(torch.nn.Module):
    def __init__(self, C=4, N=1, R=2, K=4):
        super().__init__()
        self.x_proj_weight = torch.nn.Parameter(torch.randn(K, R + 2 * N, C) * 0.3)
        self.dt_projs_weight = torch.nn.Parameter(torch.randn(K, C, R) * 0.3)
        self.dt_projs_bias = torch.nn.Parameter(torch.randn(K, C) * 0.3)
        self.A_logs = torch.nn.Parameter(torch.randn(K * C, N) * 0.3)
        self.Ds = torch.nn.Parameter(torch.ones(K * C))

    def forward(self, x):
        y = ssops.cross_selective_scan(x, self.x_proj_weight, self.dt_projs_weight,
                                       self.dt_projs_bias, self.A_logs, self.Ds)
        xs = ssops.cross_scan(y)
        return ssops.cross_merge(xs * 0.5, x.shape[2], x.shape[3]) + y


def test_compile_fullgraph_forward_backward():
    torch._dynamo.reset()
    model = TinySS2D()
    x = testing.make_cross_scan_inputs(2, 4, 5, 6)
    compiled = torch.compile(model, fullgraph=True)
    out = compiled(x)
    torch.testing.assert_close(out, model(x), rtol=1e-5, atol=1e-5)
    out.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    model(x).square().sum().backward()
    for g, p in zip(grads, model.parameters()):
        torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-5)


def test_compile_scans():
    torch._dynamo.reset()
    args, kw = testing.make_selective_scan_inputs()
    f = torch.compile(lambda *a: ssops.selective_scan(*a, **kw, return_last_state=True),
                      fullgraph=True)
    y, last = f(*args)
    y0, last0 = ssops.selective_scan(*args, **kw, return_last_state=True)
    torch.testing.assert_close(y, y0)
    bargs, bkw = testing.make_selective_scan_inputs(direction_axis=True)
    g = torch.compile(lambda *a: ssops.bidirectional_scan(*a, **bkw), fullgraph=True)
    torch.testing.assert_close(g(*bargs), ssops.bidirectional_scan(*bargs, **bkw))


def test_compile_scans_backward_keeping_states():
    """The forward ops' kept-state buffer (an extra, non-differentiable output) through
    torch.compile's forward and backward graphs."""
    torch._dynamo.reset()
    ssops.set_keep_scan_states(True)
    try:
        for op, direction_axis in ((ssops.selective_scan, False), (ssops.bidirectional_scan, True)):
            args, kw = testing.make_selective_scan_inputs(direction_axis=direction_axis)
            leaves = [a.clone().requires_grad_() for a in args]
            f = torch.compile(lambda *a, op=op, kw=kw: op(*a, **kw), fullgraph=True)
            grads = torch.autograd.grad(f(*leaves).square().sum(), leaves)
            want = torch.autograd.grad(op(*leaves, **kw).square().sum(), leaves)
            for g, w in zip(grads, want):
                torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-5)
    finally:
        ssops.set_keep_scan_states(False)


def test_flop_counter_counts_the_scan():
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=4, L=16, N=3)
    with FlopCounterMode(display=False) as counter:
        ssops.selective_scan(*args, **kw)
    # VMamba's formula: 9*B*D*L*N + B*D*L (D skip) + B*D*L (z gate)
    assert counter.get_total_flops() == 9 * 2 * 4 * 16 * 3 + 2 * (2 * 4 * 16)
    leaves = [a.clone().requires_grad_() for a in args]
    with FlopCounterMode(display=False) as counter:
        ssops.selective_scan(*leaves, **kw).sum().backward()
    assert counter.get_total_flops() == 3 * (9 * 2 * 4 * 16 * 3 + 2 * (2 * 4 * 16))


def test_opcheck_every_op():
    """torch.library.opcheck: schemas, fake kernels and autograd registration agree."""
    args, kw = testing.make_selective_scan_inputs(batch=1, dim=2, L=5, N=2)
    leaves = [a.clone().requires_grad_() for a in args]
    ops = torch.ops.ssops
    cases = [
        (ops.selective_scan, (*leaves, kw["D"], kw["z"], kw["delta_bias"], True, torch.float32,
                              True, "reference")),
        (ops.cross_scan, (torch.randn(1, 2, 3, 4, requires_grad=True), "bhwc", "cross",
                          "reference")),
        (ops.cross_merge, (torch.randn(1, 2, 2, 12, requires_grad=True), 3, 4, "bchw", "bidi",
                           "reference")),
    ]
    bargs, bkw = testing.make_selective_scan_inputs(batch=1, dim=2, L=5, N=2, direction_axis=True)
    cases.append((ops.bidirectional_scan, (*[a.requires_grad_() for a in bargs], bkw["D"],
                                           bkw["z"], bkw["delta_bias"], True, "mean",
                                           torch.float32, True, "reference")))
    cargs, ckw = testing.make_cross_selective_scan_inputs(1, 2, 3, 4, N=1, layout="bhwc")
    cases.append((ops.cross_selective_scan, (*[a.requires_grad_() for a in cargs], ckw["D"],
                                             ckw["delta_bias"], True, "bhwc", "cross",
                                             torch.float32, "reference")))
    for op, a in cases:
        torch.library.opcheck(op, a)
