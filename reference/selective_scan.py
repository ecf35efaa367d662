"""Selective scan (Mamba S6) in plain PyTorch.

h_t = exp(delta_t * A) * h_{t-1} + delta_t * B_t * u_t,   y_t = C_t . h_t + D * u_t,   y *= silu(z)

Two formulations of the same recurrence: ``selective_scan_sequential`` walks the sequence one
step at a time (the oracle); ``selective_scan_fwd`` runs a log-depth (Hillis-Steele) associative
scan over the pairs (log a_t, b_t) with (a1, b1) o (a2, b2) = (a1 a2, a2 b1 + b2), fast enough on
the CPU to run whole models.  The state is kept in float32 (float64 for float64 inputs).

The backward is written out by hand (it is the specification the fast backends follow): with
g_t = dL/dh_t, the adjoint recurrence runs the same scan in reverse,
g_t = exp(delta_{t+1} A) g_{t+1} + C_t dy_t  (+ dlast_state at t = L-1), and
dL/d(log dA_t) = g_t * exp(log dA_t) h_{t-1} = g_t * (h_t - dB_t u_t).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F



def compute_dtype(u: torch.Tensor) -> torch.dtype:
    return torch.float64 if u.dtype == torch.float64 else torch.float32


def expand_bc(M: torch.Tensor, dim: int) -> torch.Tensor:
    """B or C as a tensor broadcastable to (batch, dim, N, L)."""
    if M.dim() == 2:  # (dim, N): constant over time and batch
        return M[None, :, :, None]
    if M.dim() == 3:  # (batch, N, L): shared by all channels
        return M[:, None]
    return M.repeat_interleave(dim // M.shape[1], dim=1)  # (batch, G, N, L): channel d uses group d // (dim/G)


def reduce_bc(g: torch.Tensor, M: torch.Tensor) -> torch.Tensor:
    """Sum a (batch, dim, N, L) gradient down to B's or C's own shape (adjoint of expand_bc)."""
    if M.dim() == 2:
        return g.sum((0, 3))
    if M.dim() == 3:
        return g.sum(1)
    return g.unflatten(1, (M.shape[1], -1)).sum(2)


def softplus_delta(delta, delta_bias, delta_softplus, cdt):
    """(delta before softplus, delta after softplus), both in the compute dtype."""
    delta = delta.to(cdt)
    if delta_bias is not None:
        delta = delta + delta_bias.to(cdt)[:, None]
    return delta, (F.softplus(delta) if delta_softplus else delta)  # identity above 20, as Mamba


def discretize(u, delta, A, B, delta_bias, delta_softplus):
    """Return (log dA, dB*u), both (batch, dim, N, L) in the compute dtype."""
    cdt = compute_dtype(u)
    _, delta = softplus_delta(delta, delta_bias, delta_softplus, cdt)
    log_dA = delta[:, :, None, :] * A.to(cdt)[None, :, :, None]
    dBu = (delta * u.to(cdt))[:, :, None, :] * expand_bc(B, u.shape[1]).to(cdt)
    return log_dA, dBu


def silu_gate_bwd(dout, y, z):
    """For out = y * silu(z): return (dL/dy, dL/dz)."""
    s = torch.sigmoid(z)
    return dout * z * s, dout * y * s * (1 + z * (1 - s))


def readout(h, u, C, D, z, out_dtype):
    """y from the states h (batch, dim, N, L); returns (y, last_state)."""
    cdt = h.dtype
    y = (h * expand_bc(C, u.shape[1]).to(cdt)).sum(2)
    if D is not None:
        y = y + D.to(cdt)[:, None] * u.to(cdt)
    if z is not None:
        y = y * F.silu(z.to(cdt))
    return y.to(out_dtype), h[..., -1]


def scan_sequential(log_a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """h_t = exp(log_a_t) h_{t-1} + b_t over the last axis, one step at a time."""
    h = torch.zeros_like(b[..., 0])
    states = []
    for t in range(b.shape[-1]):
        h = torch.exp(log_a[..., t]) * h + b[..., t]
        states.append(h)
    return torch.stack(states, -1)


def scan_logdepth(log_a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """The same recurrence in ceil(log2 L) data-parallel steps (Hillis-Steele inclusive scan)."""
    L, k = b.shape[-1], 1
    while k < L:
        b = torch.cat([b[..., :k], b[..., k:] + torch.exp(log_a[..., k:]) * b[..., :-k]], -1)
        log_a = torch.cat([log_a[..., :k], log_a[..., k:] + log_a[..., :-k]], -1)
        k *= 2
    return b


def _forward(scan, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype):
    log_dA, dBu = discretize(u, delta, A, B, delta_bias, delta_softplus)
    return readout(scan(log_dA, dBu), u, C, D, z, out_dtype)


def selective_scan_sequential(u, delta, A, B, C, D=None, z=None, delta_bias=None,
                              delta_softplus=False, out_dtype=None):
    """The oracle: returns (y, last_state)."""
    return _forward(scan_sequential, u, delta, A, B, C, D, z, delta_bias, delta_softplus,
                    out_dtype or u.dtype)


def selective_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype):
    return _forward(scan_logdepth, u, delta, A, B, C, D, z, delta_bias, delta_softplus, out_dtype)


def selective_scan_bwd(dy, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus):
    """Gradients (du, ddelta, dA, dB, dC, dD, dz, ddelta_bias), None for absent inputs."""
    cdt = compute_dtype(u)
    uc, Ac = u.to(cdt), A.to(cdt)
    Bx, Cx = expand_bc(B, u.shape[1]).to(cdt), expand_bc(C, u.shape[1]).to(cdt)
    pre, dt = softplus_delta(delta, delta_bias, delta_softplus, cdt)
    log_dA = dt[:, :, None, :] * Ac[None, :, :, None]
    dBu = (dt * uc)[:, :, None, :] * Bx
    h = scan_logdepth(log_dA, dBu)
    dout, dz = dy.to(cdt), None
    if z is not None:
        y = (h * Cx).sum(2) + (0 if D is None else D.to(cdt)[:, None] * uc)
        dout, dz = silu_gate_bwd(dout, y, z.to(cdt))
    r = Cx * dout[:, :, None, :]
    if dlast_state is not None:
        r[..., -1] += dlast_state.to(cdt)
    next_log_dA = F.pad(log_dA[..., 1:], (0, 1))  # decay from t+1 back to t
    g = scan_logdepth(next_log_dA.flip(-1), r.flip(-1)).flip(-1)
    dlog_dA = g * (h - dBu)
    gB = (g * Bx).sum(2)
    ddt = (dlog_dA * Ac[None, :, :, None]).sum(2) + gB * uc
    ddelta = ddt * torch.sigmoid(pre) if delta_softplus else ddt
    du = gB * dt + (0 if D is None else dout * D.to(cdt)[:, None])
    grads = (du, ddelta, (dlog_dA * dt[:, :, None, :]).sum((0, 3)),
             reduce_bc(g * (dt * uc)[:, :, None, :], B), reduce_bc(h * dout[:, :, None, :], C),
             None if D is None else (dout * uc).sum((0, 2)), dz,
             None if delta_bias is None else ddelta.sum((0, 2)))
    like = (u, delta, A, B, C, D, z, delta_bias)
    return tuple(None if g is None else g.to(t.dtype) for g, t in zip(grads, like))
