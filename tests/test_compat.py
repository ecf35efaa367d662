"""Drop-in shims: mamba_ssm's and VMamba's conventions, expected values from their definitions."""
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import ssops
from ssops import testing
from ssops.compat import install_mamba_ssm, uninstall_mamba_ssm, vmamba


# ---------------------------------------------------------------------------------- mamba_ssm
def _scan_by_definition(u, delta, A, B, C, D, z, delta_bias):
    """mamba_ssm's documented recurrence, one step at a time (B, C variable (batch, N, L))."""
    dt = F.softplus(delta + delta_bias[:, None])
    h = torch.zeros(u.shape[0], u.shape[1], A.shape[1], dtype=u.dtype)
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(dt[..., t, None] * A) * h + dt[..., t, None] * B[:, None, :, t] * u[..., t, None]
        ys.append((h * C[:, None, :, t]).sum(-1) + D * u[..., t])
    return torch.stack(ys, -1) * F.silu(z), h


def test_unmodified_mamba_ssm_snippet_runs_on_cpu():
    """A script written for mamba_ssm, run as is after install_mamba_ssm()."""
    snippet = """
import torch, ssops.compat
assert ssops.compat.install_mamba_ssm()
from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, selective_scan_ref
u, delta = torch.randn(2, 8, 32), torch.rand(2, 8, 32)
A = -torch.rand(8, 4); B, C = torch.randn(2, 4, 32), torch.randn(2, 4, 32)
y, last = selective_scan_fn(u, delta, A, B, C, torch.ones(8), z=torch.randn(2, 8, 32),
                            delta_bias=torch.zeros(8), delta_softplus=True, return_last_state=True)
print(tuple(y.shape), tuple(last.shape))
"""
    r = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "(2, 8, 32) (2, 8, 4)"


def test_shim_matches_definition_and_reference():
    assert install_mamba_ssm()
    try:
        from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, selective_scan_ref
        args, kw = testing.make_selective_scan_inputs(batch=2, dim=3, L=9, N=2, dtype=torch.float64)
        y, last = selective_scan_fn(*args, kw["D"], kw["z"], kw["delta_bias"], True, True)
        y_def, last_def = _scan_by_definition(*args, kw["D"], kw["z"], kw["delta_bias"])
        torch.testing.assert_close(y, y_def, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(last, last_def, rtol=1e-10, atol=1e-10)
        torch.testing.assert_close(selective_scan_ref(*args, kw["D"], kw["z"], kw["delta_bias"], True),
                                   y, rtol=1e-12, atol=1e-12)
    finally:
        uninstall_mamba_ssm()
    assert "mamba_ssm" not in sys.modules


def test_install_leaves_a_real_mamba_ssm_alone(monkeypatch):
    real = type(sys)("mamba_ssm")
    monkeypatch.setitem(sys.modules, "mamba_ssm", real)
    assert not install_mamba_ssm()
    assert sys.modules["mamba_ssm"] is real
    assert install_mamba_ssm(force=True)
    assert sys.modules["mamba_ssm"] is not real
    uninstall_mamba_ssm()


def test_mamba_inner_fn_no_out_proj_by_definition():
    from ssops.compat.mamba_ssm import mamba_inner_fn_no_out_proj
    g = torch.Generator().manual_seed(0)
    r = lambda *s: torch.randn(*s, generator=g, dtype=torch.float64)  # noqa: E731
    batch, d, L, N, R, width = 2, 4, 7, 3, 2, 4
    xz, conv_w, conv_b = r(batch, 2 * d, L), r(d, 1, width), r(d)
    x_proj_w, dt_w, A, D, dt_b = r(R + 2 * N, d), r(d, R), -torch.rand(d, N, dtype=torch.float64), r(d), r(d)
    y = mamba_inner_fn_no_out_proj(xz, conv_w, conv_b, x_proj_w, dt_w, A, D=D, delta_bias=dt_b)
    x, z = xz[:, :d], xz[:, d:]
    conv = torch.stack([sum(conv_w[:, 0, width - 1 - j] * (x[..., t - j] if t - j >= 0 else 0)
                            for j in range(width)) + conv_b for t in range(L)], -1)
    x = F.silu(conv)
    x_dbl = torch.einsum("jd,bdl->bjl", x_proj_w, x)
    delta = torch.einsum("dr,brl->bdl", dt_w, x_dbl[:, :R])
    expected, _ = _scan_by_definition(x, delta, A, x_dbl[:, R:R + N], x_dbl[:, R + N:], D, z, dt_b)
    torch.testing.assert_close(y, expected, rtol=1e-10, atol=1e-10)


# -------------------------------------------------------------------------------------- VMamba
def _vmamba_scan_by_definition(x, scans):
    """(B, C, H, W) -> (B, 4, C, L) as VMamba documents each mode."""
    rows, cols = x.flatten(2), x.transpose(2, 3).flatten(2)
    return torch.stack({0: [rows, cols, rows.flip(-1), cols.flip(-1)],
                        1: [rows] * 4,
                        2: [rows, rows, rows.flip(-1), rows.flip(-1)]}[scans], 1)


@pytest.mark.parametrize("scans", [0, 1, 2])
@pytest.mark.parametrize("in_cf,out_cf", [(True, True), (False, True), (True, False), (False, False)])
def test_vmamba_cross_scan_modes(scans, in_cf, out_cf):
    x = testing.make_cross_scan_inputs(2, 3, 4, 5, dtype=torch.float64)
    expected = _vmamba_scan_by_definition(x, scans)
    got = vmamba.cross_scan_fn(x if in_cf else x.permute(0, 2, 3, 1), in_cf, out_cf, scans=scans)
    torch.testing.assert_close(got if out_cf else got.permute(0, 2, 3, 1), expected, rtol=0, atol=0)
    # one_by_one: route k reads slice k of a (B, 4, C, H, W) input
    x4 = torch.randn(2, 4, 3, 4, 5, dtype=torch.float64)
    expected = torch.stack([_vmamba_scan_by_definition(x4[:, k], scans)[:, k] for k in range(4)], 1)
    got = vmamba.cross_scan_fn(x4 if in_cf else x4.permute(0, 3, 4, 1, 2), in_cf, out_cf,
                               one_by_one=True, scans=scans)
    torch.testing.assert_close(got if out_cf else got.permute(0, 2, 3, 1), expected, rtol=0, atol=0)


@pytest.mark.parametrize("scans", [0, 1, 2])
@pytest.mark.parametrize("one_by_one", [False, True])
@pytest.mark.parametrize("in_cf,out_cf", [(True, True), (False, False), (True, False)])
def test_vmamba_cross_merge_is_adjoint(scans, one_by_one, in_cf, out_cf):
    B, C, H, W = 2, 3, 4, 5
    shape = (B, 4, C, H, W) if one_by_one else (B, C, H, W)
    x = torch.randn(shape, dtype=torch.float64)
    if not in_cf:
        x = x.permute(0, 3, 4, 1, 2) if one_by_one else x.permute(0, 2, 3, 1)
    xs = vmamba.cross_scan_fn(x, in_cf, out_cf, one_by_one, scans)
    ys = torch.randn_like(xs)
    ys5 = ys.view(B, 4, C, H, W) if out_cf else ys.view(B, H, W, 4, C)
    merged = vmamba.cross_merge_fn(ys5, in_cf, out_cf, one_by_one, scans)
    torch.testing.assert_close((xs * ys).sum(), (x.reshape(merged.shape) * merged).sum()
                               if in_cf else (x.flatten(1, 2) * merged.reshape(x.flatten(1, 2).shape)).sum(),
                               rtol=1e-12, atol=1e-12)


def test_vmamba_selective_scan_fn_oflex():
    args, kw = testing.make_selective_scan_inputs(batch=2, dim=8, L=6, N=1, b_mode="grouped",
                                                  c_mode="grouped", groups=4, dtype=torch.float16)
    y = vmamba.selective_scan_fn(*args, kw["D"], kw["delta_bias"], True, oflex=True)
    assert y.dtype == torch.float32
    y16 = vmamba.selective_scan_fn(*args, kw["D"], kw["delta_bias"], True, oflex=False,
                                   backend="torch")
    assert y16.dtype == torch.float16
    torch.testing.assert_close(y16, y.half())
    with pytest.raises(ValueError, match="scans"):
        vmamba.cross_scan_fn(torch.randn(1, 2, 3, 3), scans=3)
