"""ssops.models: official names, shapes and sizes; the same outputs as the official models'
computation for the same weights; every backend agrees; the models train."""
import json
import pathlib

import pytest
import torch
import torch.nn.functional as F

import ssops.models as M
from conftest import DEVICE
from ssops import testing
from ssops.models.mambaout import MambaOut
from ssops.models.vim import VisionMamba
from ssops.models.vmamba import VSSM

# official implementations' state_dict keys / shapes and parameter counts, 1000 classes
# (shared/specs: MzeroMiko/VMamba, hustvl/Vim, yuweihao/MambaOut at their default arguments)
SPECS = json.loads((pathlib.Path(__file__).parent / "data" / "official_state_dicts.json")
                   .read_text())["models"]
OFFICIAL = {key.split(":")[1]: spec for key, spec in SPECS.items()}


@pytest.mark.parametrize("name", sorted(OFFICIAL))
def test_state_dict_matches_official(name):
    with torch.device("meta"):
        model = M.create(name)
    shapes = {k: list(v.shape) for k, v in model.state_dict().items()}
    assert shapes == OFFICIAL[name]["keys"]
    assert sum(p.numel() for p in model.parameters()) == OFFICIAL[name]["params"]


@pytest.mark.parametrize("name", ["vmamba_tiny", "vanilla_vmamba_tiny", "vim_tiny",
                                  "mambaout_femto"])
def test_official_checkpoint_layout_loads_strictly(name):
    """A state dict with exactly the official keys and shapes loads with strict=True."""
    model = M.create(name)
    official = M.create(name).state_dict()
    model.load_state_dict(official, strict=True)
    for k, v in model.state_dict().items():
        assert torch.equal(v, official[k]), k


def test_sizes_match_the_papers():
    """Parameter counts at the papers' precision, and FLOPs (multiply-adds, as the papers
    count them) at 224 x 224 through FlopCounterMode with the ops' formulas."""
    for name, (params, gmacs) in M.PAPER.items():
        count, macs = M.complexity(name)
        digits = len(str(params).split(".")[1]) if "." in str(params) else 0
        assert round(count / 1e6, digits) == params, (name, count)
        if gmacs is not None:
            assert abs(macs / 1e9 - gmacs) / gmacs < 0.02, (name, macs)


def test_registry():
    names = M.list_models()
    assert set(OFFICIAL) <= set(names) and "vmamba_tiny" in names
    with pytest.raises(ValueError, match="unknown model"):
        M.create("vmamba_huge")


# ------------------------------------------------------- the official computation, written out
def _scan(u, delta, A, B, C, D, delta_bias, z=None):
    """Sequential selective scan in the inputs' dtype (float64 here); B, C (b, G, N, L)."""
    rep = u.shape[1] // B.shape[1]
    B, C = B.repeat_interleave(rep, 1), C.repeat_interleave(rep, 1)
    dt = F.softplus(delta + delta_bias[:, None])
    h = u.new_zeros(*u.shape[:2], A.shape[1])
    ys = []
    for t in range(u.shape[-1]):
        h = torch.exp(dt[..., t, None] * A) * h + (dt[..., t] * u[..., t])[..., None] * B[..., t]
        ys.append((h * C[..., t]).sum(-1))
    y = torch.stack(ys, -1) + D[:, None] * u
    return y if z is None else y * F.silu(z)


def _official_ss2d(op, x):
    """VMamba's SS2D as its code computes it: flipped / transposed copies of x (CrossScan),
    per-route projections, one grouped scan, and the copies folded back (CrossMerge)."""
    x = op.in_proj(x)
    if op.gated:
        x, z = x.chunk(2, dim=-1)
        z = F.silu(z)
        x = x.permute(0, 3, 1, 2)
    x = F.silu(op.conv2d(x))
    b, d, H, W = x.shape
    R, N = op.dt_projs_weight.shape[2], op.A_logs.shape[1]
    xs = torch.stack([x.flatten(2), x.transpose(2, 3).flatten(2)], 1)
    xs = torch.cat([xs, xs.flip(-1)], 1)  # (b, 4, d, L)
    dts, Bs, Cs = torch.split(torch.einsum("bkdl,kcd->bkcl", xs, op.x_proj_weight), [R, N, N], 2)
    dts = torch.einsum("bkrl,kdr->bkdl", dts, op.dt_projs_weight)
    ys = _scan(xs.flatten(1, 2), dts.flatten(1, 2), -torch.exp(op.A_logs), Bs, Cs, op.Ds,
               op.dt_projs_bias.flatten()).view(b, 4, d, H * W)
    y = ys[:, 0] + ys[:, 2].flip(-1)
    y = y + (ys[:, 1] + ys[:, 3].flip(-1)).view(b, d, W, H).transpose(2, 3).flatten(2)
    y = y.view(b, d, H, W)
    if op.gated:  # channel-last: LayerNorm over (b, L, d)
        y = op.out_norm(y.flatten(2).transpose(1, 2)).view(b, H, W, d) * z
    else:
        y = op.out_norm(y)
    return op.out_proj(y)


def _official_vim_mixer(mx, h):
    """Vim's bimamba-v2 mixer as its fused path computes it: the inner function on xz and on
    xz flipped, the second output flipped back, averaged."""
    xz = mx.in_proj(h).transpose(1, 2)
    R, N = mx.rank, mx.d_state

    def inner(xz, conv, x_proj, dt_proj, A_log, D):
        x, z = xz.chunk(2, dim=1)
        L = x.shape[-1]
        x = F.silu(F.conv1d(x, conv.weight, conv.bias, padding=conv.kernel_size[0] - 1,
                            groups=x.shape[1])[..., :L])
        x_dbl = x_proj(x.transpose(1, 2))
        dt = (x_dbl[..., :R] @ dt_proj.weight.t()).transpose(1, 2)
        Bm, Cm = (t.transpose(1, 2)[:, None] for t in x_dbl[..., R:].split([N, N], -1))
        return _scan(x, dt, -torch.exp(A_log), Bm, Cm, D, dt_proj.bias, z)

    y = inner(xz, mx.conv1d, mx.x_proj, mx.dt_proj, mx.A_log, mx.D)
    y_b = inner(xz.flip(-1), mx.conv1d_b, mx.x_proj_b, mx.dt_proj_b, mx.A_b_log, mx.D_b)
    return mx.out_proj(((y + y_b.flip(-1)) / 2).transpose(1, 2))


def _official_vim(model, x):
    """Vim's forward: middle class token, fused add + RMSNorm with the residual summed before
    each block and once more before norm_f, the class token's output to the head."""
    def rms(x, w):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * w
    x = model.patch_embed.proj(x).flatten(2).transpose(1, 2)
    p = x.shape[1] // 2
    x = torch.cat([x[:, :p], model.cls_token.expand(len(x), -1, -1), x[:, p:]], 1)
    h, residual = x + model.pos_embed, None
    for layer in model.layers:
        residual = h if residual is None else residual + h
        h = _official_vim_mixer(layer.mixer, rms(residual, layer.norm.weight))
    return model.head(rms(residual + h, model.norm_f.weight)[:, p])


def _perturbed(model):
    """Random non-trivial weights (norms and biases included), float64, eval mode."""
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return model.double().eval()


@pytest.mark.parametrize("channels_last", [False, True], ids=["bchw", "channels_last"])
def test_linear2d_is_the_official_1x1_convolution(channels_last):
    """Linear2d (a matmul over channels-last x, else a convolution) = VMamba's F.conv2d."""
    from ssops.models._layers import Linear2d
    layer = Linear2d(6, 5).double()
    x = torch.randn(2, 6, 3, 4, dtype=torch.float64)
    x = x.to(memory_format=torch.channels_last) if channels_last else x
    torch.testing.assert_close(layer(x), F.conv2d(x, layer.weight[:, :, None, None], layer.bias),
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("v2", [True, False], ids=["vmamba_v2", "vanilla"])
def test_ss2d_matches_official_computation(v2):
    block = _perturbed(VSSM([1], [8], 2, 2.0, v2, num_classes=3)).layers[0].blocks[0].op
    x = torch.randn(2, 8, 5, 6, dtype=torch.float64)
    x = x if v2 else x.permute(0, 2, 3, 1)
    torch.testing.assert_close(block(x), _official_ss2d(block, x), rtol=1e-10, atol=1e-10)


def test_vim_matches_official_computation():
    model = _perturbed(VisionMamba(8, 2, num_classes=3, img_size=12, patch_size=4, d_state=3))
    x = torch.randn(2, 3, 12, 12, dtype=torch.float64)
    torch.testing.assert_close(model(x), _official_vim(model, x), rtol=1e-10, atol=1e-10)


# --------------------------------------------------------------------- backends, end to end
def _tiny(family):
    torch.manual_seed(0)
    if family == "vmamba":
        return VSSM([1, 1], [8, 16], 1, 1.0, True, num_classes=5, drop_path_rate=0.0)
    if family == "vanilla_vmamba":
        return VSSM([1, 1], [8, 16], 2, 2.0, False, num_classes=5, drop_path_rate=0.0)
    return VisionMamba(8, 2, num_classes=5, img_size=16, patch_size=4, d_state=2)


@pytest.fixture
def no_tf32(monkeypatch):
    """Full float32 convolutions and matmuls on the GPU (cuDNN would otherwise use TF32 for
    the convolutions, a 1e-3 relative error that is not the scan's)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    yield
    torch.set_float32_matmul_precision(previous)


@pytest.mark.parametrize("family", ["vmamba", "vanilla_vmamba", "vim"])
def test_backends_agree_end_to_end(backend, family, no_tf32):
    """Logits and every parameter's gradient of a small model in float32 on each backend, vs
    the reference backend in float64 (relative L2 error; a few layers of float32 rounding:
    1e-4 for the logits, 1e-3 for the gradients)."""
    x = torch.randn(2, 3, 16, 16, device=DEVICE)
    results = {}
    for name, dtype in (("reference", torch.float64), (backend, torch.float32)):
        model = M.set_backend(_tiny(family).to(DEVICE, dtype), name)
        logits = model(x.to(dtype))
        logits.square().sum().backward()
        results[dtype] = logits, {n: p.grad for n, p in model.named_parameters()}
    (ref_logits, ref_grads), (logits, grads) = results[torch.float64], results[torch.float32]
    assert testing.rel_error(logits, ref_logits) < 1e-4
    for n, g in ref_grads.items():
        assert testing.rel_error(grads[n], g) < 1e-3, n


# --------------------------------------------------------------------------- training check
def _digits():
    """scikit-learn's bundled 8x8 handwritten digits (1797 images), upsampled to 16x16,
    standardised; a fixed 1500 / 297 split."""
    sklearn = pytest.importorskip("sklearn.datasets")
    d = sklearn.load_digits()
    x = F.interpolate(torch.tensor(d.images, dtype=torch.float32)[:, None], size=16,
                      mode="bilinear", align_corners=False)
    x = (x - x.mean()) / x.std()
    y = torch.tensor(d.target)
    perm = torch.randperm(len(x), generator=torch.Generator().manual_seed(0))
    return x[perm[:1500]], y[perm[:1500]], x[perm[1500:]], y[perm[1500:]]


TINY_CLASSIFIERS = {
    "vmamba": lambda: VSSM([1, 1], [16, 32], 1, 1.0, True, num_classes=10, in_chans=1,
                           drop_path_rate=0.0),
    "vanilla_vmamba": lambda: VSSM([1, 1], [16, 32], 4, 2.0, False, num_classes=10, in_chans=1,
                                   drop_path_rate=0.0),
    "vim": lambda: VisionMamba(16, 2, num_classes=10, img_size=16, patch_size=4, in_chans=1,
                               d_state=4),
    "mambaout": lambda: MambaOut([1, 1], [16, 32], num_classes=10, in_chans=1),
}


@pytest.mark.parametrize("family", sorted(TINY_CLASSIFIERS))
def test_trains_on_digits(family):
    """Six epochs of AdamW (one-cycle, batch 50) on the CPU with the reference backend reach
    >= 90% held-out accuracy (measured: 94-98%)."""
    torch.manual_seed(0)
    xtr, ytr, xte, yte = _digits()
    model = M.set_backend(TINY_CLASSIFIERS[family](), "reference")
    epochs, batch, lr = 6, 50, 3e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=epochs * len(xtr) // batch)
    for _ in range(epochs):
        model.train()
        order = torch.randperm(len(xtr))
        for i in range(0, len(xtr), batch):
            idx = order[i:i + batch]
            loss = F.cross_entropy(model(xtr[idx]), ytr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    model.eval()
    with torch.no_grad():
        accuracy = (model(xte).argmax(1) == yte).float().mean().item()
    assert accuracy >= 0.90, accuracy


@pytest.mark.parametrize("family", ["vmamba", "vanilla_vmamba", "vim"])
def test_compiles_without_graph_breaks(family):
    """torch.compile(fullgraph=True) captures the whole model, scans included (the ops are
    torch.library custom ops with fake kernels); the compiled model gives the same logits
    and runs backward."""
    model = M.set_backend(_tiny(family), "reference")
    x = torch.randn(2, 3, 16, 16)
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    logits = compiled(x)
    torch.testing.assert_close(logits, model(x), rtol=1e-5, atol=1e-6)
    logits.sum().backward()
    assert all(p.grad is not None for p in model.parameters())


@pytest.mark.gpu
def test_compiles_for_cuda_inference_without_graph_breaks():
    """The CUDA inference path (autocast, no_grad: eager LayerNorm2d takes its Triton pass) is
    captured whole by torch.compile too, and agrees with eager (float16 autocast through a few
    layers: 5e-3 relative)."""
    model = M.set_backend(_tiny("vmamba"), "reference").cuda().eval()
    x = torch.randn(2, 3, 16, 16, device="cuda")
    compiled = torch.compile(model, backend="aot_eager", fullgraph=True)
    with torch.no_grad(), torch.autocast("cuda", dtype=torch.float16):
        assert testing.rel_error(compiled(x), model(x)) < 5e-3
