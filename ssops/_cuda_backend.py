"""The ``cuda`` backend: the C++/CUDA kernels of csrc/.

The extension is ``ssops._C`` when setup.py built it; otherwise it is compiled from csrc/ on
first use with ``torch.utils.cpp_extension.load`` (ninja) for this GPU's architecture (or
``TORCH_CUDA_ARCH_LIST``) and cached under ``$SSOPS_CACHE_DIR`` (default
``~/.cache/ssops``), one build per torch / CUDA / architecture / source version.
``cpp_extension.load`` holds a file lock in the build directory, so processes starting
together wait for one build.

The kernels compute one route of the selective scan (csrc/scan_kernels.cuh); the ops are put
together from routes in ssops._routes, as for the triton backend.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import os
import pathlib
import sys

import torch

from . import _routes
from ._routes import ROUTE_FLAGS

_OPS = ("selective_scan", "bidirectional_scan", "cross_scan", "cross_merge", "cross_selective_scan")
_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
MAX_N = 256


# ------------------------------------------------------------------------------ the extension
def _sources() -> pathlib.Path:
    spec = importlib.util.find_spec("ssops.csrc")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the csrc/ sources are not installed")
    return pathlib.Path(list(spec.submodule_search_locations)[0])


def _arch_list() -> str:
    arch = os.environ.get("TORCH_CUDA_ARCH_LIST")
    if arch:
        return arch
    major, minor = torch.cuda.get_device_capability()
    return f"{major}.{minor}"


def _jit_build():
    from torch.utils import cpp_extension

    if cpp_extension.CUDA_HOME is None:
        raise RuntimeError("no prebuilt ssops._C and no CUDA toolkit (nvcc) to compile csrc/; "
                           "install the toolkit or build with SSOPS_BUILD_CUDA=1 pip install .")
    src = _sources()
    files = sorted(p for p in src.iterdir() if p.suffix in (".cu", ".cuh", ".cpp", ".h"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in files)).hexdigest()[:16]
    arch = _arch_list()
    extra = os.environ.get("SSOPS_NVCC_FLAGS", "").split()  # for experiments (bench/sweep.py)
    if extra:
        digest = hashlib.sha256((digest + " ".join(extra)).encode()).hexdigest()[:16]
    tag = f"torch{torch.__version__}-cuda{torch.version.cuda}-sm{arch}-{digest}"
    root = pathlib.Path(os.environ.get("SSOPS_CACHE_DIR",
                                       pathlib.Path.home() / ".cache" / "ssops"))
    build = root / "".join(c if c.isalnum() or c in ".-_" else "_" for c in tag)
    build.mkdir(parents=True, exist_ok=True)
    name = f"ssops_cuda_{digest}"
    if not any(build.glob(f"{name}*.so")):
        print(f"ssops: compiling the cuda backend for sm {arch} (first use; cached in {build})",
              file=sys.stderr, flush=True)
    saved = os.environ.get("TORCH_CUDA_ARCH_LIST")
    os.environ["TORCH_CUDA_ARCH_LIST"] = arch  # this GPU only, not every architecture
    try:
        return cpp_extension.load(
            name, [str(p) for p in files if p.suffix in (".cu", ".cpp")],
            build_directory=str(build), extra_cflags=["-O3"],
            extra_cuda_cflags=["-O3", "--use_fast_math", *extra], verbose=False)
    finally:
        if saved is None:
            del os.environ["TORCH_CUDA_ARCH_LIST"]
        else:
            os.environ["TORCH_CUDA_ARCH_LIST"] = saved


@functools.lru_cache(maxsize=None)
def _ext():
    if importlib.util.find_spec("ssops._C") is not None:
        from ssops import _C  # built by setup.py
        return _C
    return _jit_build()


def why_unavailable():
    if torch.version.cuda is None:
        return "this torch is a CPU build (no CUDA)"
    if not torch.cuda.is_available():
        return "no CUDA device"
    try:
        _ext()
    except Exception as exc:  # noqa: BLE001 - a failed build is a reason, not a crash
        return f"the csrc/ extension could not be loaded or built: {type(exc).__name__}: {exc}"
    return None


def why_not(op, tensors):
    if op not in _OPS:
        return f"{op} has no CUDA kernel"
    present = [t for t in tensors.values() if t is not None]
    if any(t.device.type != "cuda" for t in present):
        return "tensors not on a CUDA device"
    if any(t.dtype not in _DTYPES for t in present):
        return "float64 inputs (the CUDA kernels compute in float32)"
    A = tensors.get("A")
    if A is not None and A.shape[-1] > MAX_N:
        return f"N={A.shape[-1]} > {MAX_N}"
    x, delta = tensors.get("x"), tensors.get("delta")
    if op == "cross_selective_scan" and x is not None:
        # column-major walks keep one checkpoint per chunk of a column in shared memory
        H = x.shape[2] if x.shape[1] == delta.shape[2] else x.shape[1]
        if _bwd_smem(_states_per_lane(A.shape[-1]), H) > 200 * 1024:
            return (f"grid height {H} too tall for the column walk's shared memory at "
                    f"N={A.shape[-1]}")
    return None


# ------------------------------------------------------------------------------ work split
LANES_WANTED = 1 << 15  # lanes that keep an H100 busy (twice that in the backward; bench/sweep.py)
BWD_MAX_CHUNKS = 16      # chunk checkpoints per lane in the backward's shared memory
override = {}            # "nseg" / "seg_len": force a split (tests walk segment boundaries)


def _pow2(n: int) -> int:
    return 1 << max(0, int(n) - 1).bit_length()


def _states_per_lane(N: int) -> int:
    return 1 if N == 1 else 4 if N <= 64 else 16


def _chunk_steps(ns: int) -> int:  # csrc/scan.h chunk_steps
    return 8 if ns == 1 else 4 if ns <= 4 else 2


def _bwd_smem(ns: int, seg_len: int) -> int:  # csrc/scan.h bwd_smem_bytes
    return -(-seg_len // _chunk_steps(ns)) * (ns + 1) * 128 * 4


def _group_size(M, dim):
    """Channels sharing one row of B or C: dim for (batch, N, L), dim / G for (batch, G, N, L)."""
    return dim // M.shape[1] if M.dim() == 4 else dim


def _split(u, N, transpose, H, W, backward, dpg):
    """(states per lane, lanes per channel's states, segments per channel side by side,
    channels per warp, channel-fast lane order, steps per segment, segment groups).  The
    channels of a warp share one B / C group: the channels per warp divide dpg."""
    batch, dim, L = u.shape
    ns = _states_per_lane(N)
    lg = _pow2(-(-N // ns))
    k = _chunk_steps(ns)
    per_channel = 32 // lg
    # channel-last rows (bhwc): neighbouring channels in neighbouring lanes
    channel_fast = u.stride(2) != 1 and u.stride(1) == 1 and not transpose
    # the forward of one state per lane (VMamba) along rows: a warp scans 32 consecutive chunks
    one_chunk = ns == 1 and not (backward or transpose or channel_fast or override)
    if "nseg" in override:
        nseg = min(override["nseg"], per_channel)
    elif one_chunk:
        nseg = min(per_channel, _pow2(-(-L // k)))
    else:
        wanted = _pow2(-(-LANES_WANTED * (2 if backward else 1) // (batch * dim * lg)))
        nseg = min(per_channel, wanted, _pow2(W if transpose else -(-L // k)))
        if backward:  # >= 8 channels per warp: B / C's gradient partials stay small
            nseg = min(nseg, per_channel // min(8, per_channel))
        if transpose:  # neighbouring columns in neighbouring lanes: coalesced loads
            nseg = max(nseg, min(per_channel, _pow2(W)))
    while dpg % (per_channel // nseg):
        nseg *= 2
    if transpose:
        seg_len = H
    elif one_chunk:
        seg_len = k
    else:
        per_segment = -(-L // nseg)
        seg_len = override.get("seg_len", -(-per_segment // 16) * 16)
        if backward:
            seg_len = min(seg_len, BWD_MAX_CHUNKS * k)
    ngroups = -(-L // (nseg * seg_len))
    return [ns, lg, nseg, per_channel // nseg, int(channel_fast), seg_len, ngroups]


def _weights(B, C, dtype):
    """B and C share u's dtype or are float32 (the kernels read one or the other)."""
    if B.dtype == C.dtype and B.dtype in (dtype, torch.float32):
        return B, C
    return B.float(), C.float()


def _f32(t):
    return None if t is None else t.float().contiguous()


# --------------------------------------------------------------------- one route (_routes API)
def _dpg(u, B, C):
    """Channels per group shared by B and C (a constant matrix constrains nothing)."""
    return math.gcd(*(_group_size(M, u.shape[1]) for M in (B, C) if M.dim() > 2), u.shape[1])


# csrc/lane_scan.cuh: one state per lane, for 1 <= N <= 16 along rows.  It walks each channel's
# whole sequence in one warp, so it needs channels enough to give each of an H100's 528
# schedulers a warp; with fewer the split kernels (segments side by side) are used.  (At 1024
# warps, L = 65536, it still runs 6x faster than they do: bench/NOTES.md.)
LANE_SCAN_MIN_WARPS = 132 * 4


def _lanes_per_channel(N):
    """N = 1: one lane per channel (32 channels a warp; no gate z); else 4, 8 or 16."""
    return 1 if N == 1 else max(4, _pow2(N))


def _lane_split(u, delta, B, C, N, transpose=False, z=None):
    """The work split of the states-on-lanes kernels, or None where they do not apply.  A
    warp's channels share B / C's group (its blocks stage B / C once for all their channels)."""
    lanes = _lanes_per_channel(N)
    if (override or transpose or not 1 <= N <= 16 or (N == 1 and z is not None)
            or B.dim() < 3 or C.dim() < 3
            or B.dtype != u.dtype or C.dtype != u.dtype or B.stride(-1) != 1
            or C.stride(-1) != 1 or u.stride(2) != 1 or delta.stride(2) != 1
            or _dpg(u, B, C) % (32 // lanes)
            or u.shape[0] * u.shape[1] * lanes // 32 < LANE_SCAN_MIN_WARPS):
        return None
    return [0, lanes, 1, 32 // lanes, 0, u.shape[2], 1]


def _takes_lanes(op, tensors):
    """Whether op runs on the states-on-lanes kernels (shapes only: the extension is not
    needed to answer)."""
    if op not in ("selective_scan", "bidirectional_scan") or why_not(op, tensors):
        return False
    # u and delta as the ops pass them on (contiguous), without copying them to ask
    u, delta = (torch.empty(tensors[k].shape, dtype=tensors[k].dtype, device="meta")
                for k in ("u", "delta"))
    B, C, A, z = (tensors.get(k) for k in ("B", "C", "A", "z"))
    if op == "bidirectional_scan":
        return _bidi_lanes(u, delta, A, B, C, z) is not None
    return _lane_split(u, delta, B, C, A.shape[-1], z=z) is not None


def fast_path(op, tensors, backward):
    """Whether auto should take this backend first (ssops.dispatch): the states-on-lanes
    kernels, forward and backward, faster than the Triton ones wherever they apply, but for one
    lane per channel (N = 1; bench/NOTES.md): its forward reads rows that do not start 8-byte
    aligned element by element (VMamba-T stage 4, L = 49: Triton is faster), and its backward
    holds 8 warps an SM (255 registers), so under two waves of them the last leaves SMs idle
    (stage 1: Triton is faster).  And the SS2D core's forward on the line kernels, up to
    64 x 64 grids (faster than Triton's at VMamba-T's four stages, 28 x 28 to 56 x 56), and its
    backward there too."""
    if op == "cross_selective_scan":
        return _on_lines(tensors, backward)
    if not _takes_lanes(op, tensors):
        return False
    u = tensors["u"]
    if tensors["A"].shape[-1] > 1:
        return True
    if backward:
        return u.shape[-3] * u.shape[-2] // 32 >= 2 * 132 * 8
    return u.shape[-1] * u.element_size() % 8 == 0


LINE_FAST_SIDE = 64  # the line kernels are auto's first choice up to this grid side


def _on_lines(tensors, backward):
    """Whether the SS2D forward (backward) runs on the line kernels and they are auto's first
    choice: channel-first x (the layout is not among the tensors: x's channels and pixels
    against delta's), N = 1, every side at most LINE_FAST_SIDE."""
    x, delta, A = (tensors[k] for k in ("x", "delta", "A"))
    if why_not("cross_selective_scan", tensors) or x.dim() != 4:
        return False
    batch, K, c, L = delta.shape
    H, W = x.shape[2:]
    return (x.shape[1] == c and H * W == L and max(H, W) <= LINE_FAST_SIDE
            and _lines(x, delta, A, "bchw", backward) is not None)


LANE_STEPS = 16  # csrc/scan.h kLaneSteps: steps per chunk of the states-on-lanes kernels


def _states_numel(shape, N):
    """The states-on-lanes forward's chunk states of one direction: float32, one per chunk but
    the last, channel and state; shape: u's (..., batch, dim, L)."""
    batch, dim, L = shape[-3:]
    return (-(-L // LANE_STEPS) - 1) * batch * dim * N


def _saved_size(shape, N, directions, with_z):
    return directions * _states_numel(shape, N) + (math.prod(shape[-3:]) if with_z else 0)


def saved_numel(op, tensors):
    """float32 elements the forward keeps for the backward (ssops._ops): on the states-on-lanes
    kernels, each direction's chunk states and, with z, y before the gate, so that the backward
    need not run the forward again (a fourth of the Mamba-LM backward); else 0."""
    if not _takes_lanes(op, tensors):
        return 0
    directions = 2 if op == "bidirectional_scan" else 1
    return _saved_size(tensors["u"].shape, tensors["A"].shape[-1], directions,
                       tensors.get("z") is not None)


def _keep(saved, shape, N, directions):
    """saved_numel's buffer as scan_fwd / scan_bwd keyword arguments, one dict per direction:
    its chunk states, and y before the gate for the last direction (which writes y)."""
    n = _states_numel(shape, N)
    rest = saved[directions * n:]
    y_pre = rest.view(shape[-3:]) if rest.numel() else None
    return tuple(dict(states=saved[i * n:(i + 1) * n],
                      y_pre=y_pre if i == directions - 1 else None) for i in range(directions))


def scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, y, last, *, y_in=None,
             y_scale=1.0, reverse=False, transpose=False, H=1, W=1, states=None, y_pre=None):
    """(states, y_pre: what the states-on-lanes forward keeps for its backward, where given;
    y may then be None.)"""
    B, C = _weights(B, C, u.dtype)
    N = A.shape[1]
    split = (_lane_split(u, delta, B, C, N, transpose, z)
             or _split(u, N, transpose, H, W, False, _dpg(u, B, C)))
    _ext().scan_fwd(u, delta, _f32(A), B, C, _f32(D), z, _f32(delta_bias), y_in, y, last,
                    delta_softplus, reverse, transpose, H, W, y_scale, split, states, y_pre)


def _bc_grad(M, u, cpw):
    """float32 buffer for the gradient of B or C: (dim, N) for a constant matrix (added to
    atomically), else one partial sum per warp of channels, (batch, G, dpg / cpw, N, L)."""
    f32 = dict(device=u.device, dtype=torch.float32)
    if M.dim() == 2:
        return torch.zeros(M.shape, **f32)
    dpg = _group_size(M, u.shape[1])
    batch, _, L = u.shape
    return torch.empty(batch, u.shape[1] // dpg, dpg // cpw, M.shape[-2], L, **f32)


def _lane_grads(split, states, y_pre, dy, dlast, u, delta, A, B, C, D, z, bias, softplus, du,
                ddelta, dz, reverse, y_scale=1.0):
    """The states-on-lanes backward from the forward's chunk states (y_pre: its y before the
    gate, for dz).  Returns float32 (dA, dB, dC, dD, ddelta_bias)."""
    batch, _, L = u.shape
    f32 = dict(device=u.device, dtype=torch.float32)
    groups = [M.shape[1] if M.dim() == 4 else 1 for M in (B, C)]
    dB, dC = (torch.zeros(batch, g, 1, A.shape[1], L, **f32) for g in groups)
    dA = torch.zeros(A.shape, **f32)
    dD, dbias = (None if t is None else torch.zeros(t.shape, **f32) for t in (D, bias))
    _ext().scan_bwd(dy, dlast, u, delta, A, B, C, D, z, bias, None, du, ddelta, dz, dA, dB, dC,
                    dD, dbias, softplus, reverse, False, 1, 1, y_scale, split, states, y_pre)
    return dA, dB.view(B.shape), dC.view(C.shape), dD, dbias


def scan_bwd(dy, dlast_state, u, delta, A, B, C, D, z, delta_bias, delta_softplus, du, ddelta,
             dz, *, du_in=None, reverse=False, transpose=False, H=1, W=1, states=None,
             y_pre=None):
    """(states, y_pre: what the states-on-lanes forward kept, or None to run it again.)"""
    Bw, Cw = _weights(B, C, u.dtype)
    N = A.shape[1]
    lanes = None if du_in is not None else _lane_split(u, delta, Bw, Cw, N, transpose, z)
    f32 = dict(device=u.device, dtype=torch.float32)
    if lanes:
        A, D, bias = _f32(A), _f32(D), _f32(delta_bias)
        if states is None:  # the forward kept nothing: run it again for them
            states = torch.empty(_states_numel(u.shape, N), **f32)
            y_pre = None if z is None else torch.empty_strided(u.shape, u.stride(), **f32)
            if states.numel() or z is not None:  # (one chunk without z: nothing to run for)
                scan_fwd(u, delta, A, Bw, Cw, D, z, bias, delta_softplus, None,
                         torch.empty(*u.shape[:2], N, **f32), reverse=reverse, states=states,
                         y_pre=y_pre)
        return _lane_grads(lanes, states, y_pre, dy, _f32(dlast_state), u, delta, A, Bw, Cw, D,
                           z, bias, delta_softplus, du, ddelta, dz, reverse)
    assert states is None, "chunk states come from the states-on-lanes forward only"
    split = _split(u, N, transpose, H, W, True, _dpg(u, B, C))
    dA = torch.zeros(A.shape, **f32)
    dB, dC = _bc_grad(B, u, split[3]), _bc_grad(C, u, split[3])
    dD = None if D is None else torch.zeros(D.shape, **f32)
    dbias = None if delta_bias is None else torch.zeros(delta_bias.shape, **f32)
    _ext().scan_bwd(dy, _f32(dlast_state), u, delta, _f32(A), Bw, Cw, _f32(D), z,
                    _f32(delta_bias), du_in, du, ddelta, dz, dA, dB, dC, dD, dbias,
                    delta_softplus, reverse, transpose, H, W, 1.0, split, None, None)
    summed = lambda g, M: g if M.dim() == 2 else g.sum(2).view(M.shape)  # noqa: E731
    return dA, summed(dB, B), summed(dC, C), dD, dbias


# ------------------------------------------------------------------ fused multi-route kernels
# csrc/fused.cuh: one block scans every route of whole sequences held in shared memory.
FUSED_MAX_THREADS = 512     # kFusedMaxThreads
FUSED_MAX_BWD_ITEMS = 8     # kFusedMaxBwdItems
FUSED_BLOCK_THREADS = 256   # channels share a block up to this many threads
FUSED_MAX_SMEM = 200 * 1024
FUSED_PRELOAD_SMEM = 48 * 1024  # every route's inputs loaded up front when they fit in this
# The SS2D core below this many pixels runs one launch per route: faster there on the H100
# (VMamba-T stages 3-4; bench/NOTES.md, "CUDA fused multi-route kernels").
FUSED_CROSS_MIN_L = 512
# The SS2D core at N = 1 runs on the line kernels (csrc/line_scan.cuh) wherever a block
# holds a channel's lines (switches for timing them against the other kernels:
# bench/ss2d.py).
LINE_FORWARD = True
LINE_BACKWARD = True


def _fused_smem(L, N, cpb, wpc, backward, elem_bytes, copies, ks=1, own_u=False):
    """csrc/scan.h fused_smem_bytes."""
    row = L + L // 32 + 1
    cr, nr, kr = copies * cpb * row, N * row, ks * cpb * row
    f32 = (2 * cr + 2 * nr + cpb * (N + 2) if backward else cr) + 2 * ks * nr
    return 16 * cpb * wpc + 4 * f32 + elem_bytes * ((kr if own_u else cr) + kr)


def _fused_split(L, N, dpg, backward, elem_bytes, copies, K, own_u):
    """(steps per thread, warps per channel, channels per block, preload) of the fused kernels,
    or None where a block can't hold a whole sequence (``copies``: 2 where some route walks
    columns; ``own_u``: each of the K routes has its own u).  Short sequences take one warp per
    channel (no block-level scan), long ones 8 or 16 steps per thread; where every route's
    inputs fit, they are loaded in one pass up front (few, wide waits on memory)."""
    items = 2 if L <= 64 else 4 if L <= 128 else 8 if L <= 1024 else 16
    if backward:
        items = min(items, FUSED_MAX_BWD_ITEMS)
    wpc = -(-L // (32 * items))
    if 32 * wpc > FUSED_MAX_THREADS:
        return None
    smem = functools.partial(_fused_smem, L, N, wpc=wpc, backward=backward,
                             elem_bytes=elem_bytes, copies=copies, own_u=own_u)
    cpb = 1
    while (64 * wpc * cpb <= FUSED_BLOCK_THREADS and dpg % (2 * cpb) == 0
           and smem(cpb=2 * cpb) <= FUSED_MAX_SMEM):
        cpb *= 2
    if smem(cpb=cpb) > FUSED_MAX_SMEM:
        return None
    return [items, wpc, cpb, int(smem(cpb=cpb, ks=K) <= FUSED_PRELOAD_SMEM)]


def _fused_plan(u, delta, B, C, backward, routes, split=None):
    """(split, B, C as (K, batch, G, N, L)) for the fused kernels, or None.  u, delta: (1 or K,
    batch, dim, L); B, C: (K, batch, [G,] N, L) views; all with unit stride along L.  split:
    given (the line kernels'), or chosen here."""
    if (override or B.dim() < 4 or B.shape != C.shape
            or any(t.stride(-1) != 1 for t in (u, delta, B, C))):
        return None  # (a forced route split, in the tests, asks for the per-route kernels)
    B, C = (M if M.dim() == 5 else M.unsqueeze(2) for M in _weights(B, C, u.dtype))
    _, transposed, K = _route_masks(routes)
    split = split or _fused_split(u.shape[-1], B.shape[3], delta.shape[2] // B.shape[2],
                                  backward, u.element_size(), 2 if transposed else 1, K,
                                  u.shape[0] > 1)
    return None if split is None else (split, B, C)


# Channels share a block of the line kernels up to this many threads and channels; measured on
# an H200 at VMamba-T's stages against 64 / 128 threads (bench/NOTES.md).
LINE_THREADS = 256  # csrc/scan.h kLineMaxThreads
LINE_CHANNELS = 16
# csrc/scan.h kLineChunk: the backward's steps between checkpoints in its largest layout (the
# launch takes chunks of kLineShortChunk only where their blocks fit three an SM)
LINE_CHUNK = 8
LINE_SPLIT_SMEM = (228 // 3 - 1) * 1024  # csrc/scan.h line_block_smem(3)


def _line_chunk(n, col):  # csrc/scan.h line_chunk at kLineChunk
    return 7 if col and n % LINE_CHUNK and n % 7 == 0 else LINE_CHUNK


def _line_smem(H, W, K, cpb, backward):
    """csrc/scan.h line_smem_bytes (at most: the larger orientation's maps), or the larger of
    the two orientations' line_bwd_layout in chunks of kLineChunk without the channels' own
    dB / dC planes (the launch adds those where they fit)."""
    plane = H * (W | 1)
    if not backward:  # two planes a channel where they fit three blocks an SM (line_fwd_split)
        maps = 8 * cpb * max(H, W) * K
        split = 8 * cpb * plane + maps
        return split if split <= LINE_SPLIT_SMEM else 4 * cpb * plane + 4 + maps
    flags = next(f for f in ROUTE_FLAGS.values() if len(f) == K)

    def orientation(col):
        lines, n = (W, H) if col else (H, W)
        routes = sum(tr == col for _, tr in flags)
        cells = (plane | 31) + 17 if col else plane  # csrc/scan.h line_bwd_plane
        adjoint = ((cpb * cells + 2 * cells + 1) & ~1) + 2 * routes * cpb * lines
        checkpoints = (adjoint + routes * cpb * lines + 1) & ~1
        return 4 * (checkpoints + 2 * routes * ((n - 1) // _line_chunk(n, col)) * cpb * lines
                    + cpb * (2 * K + 1))
    return max(orientation(False), orientation(True))


def _lines(x, delta, A, layout, backward):
    """The line kernels' split for the SS2D core's forward (backward), or None: not at N > 1, not
    channel-last, not where switched off or where a block can't hold a channel's lines."""
    if layout != "bchw" or A.shape[-1] != 1 or not (LINE_BACKWARD if backward else LINE_FORWARD):
        return None
    return _line_split(*x.shape[2:], delta.shape[1], x.shape[1], backward)


def _line_split(H, W, K, dpg, backward=False):
    """The line kernels' split (0, 0, channels per block, 0, 1) (csrc/scan.h FusedParams), or
    None where a grid's lines outnumber a block's threads or its planes overflow shared
    memory."""
    cpb = _line_channels(H, W, K, dpg, backward, LINE_THREADS, LINE_CHANNELS, FUSED_MAX_SMEM)
    return None if cpb is None else [0, 0, cpb, 0, 1]


@functools.lru_cache(maxsize=256)  # (each call of an op asks: 8-14 us of Python each time)
def _line_channels(H, W, K, dpg, backward, max_threads, max_channels, max_smem):
    lines = max(H, W)  # a block's threads: its channels' rows, or their columns
    smem = functools.partial(_line_smem, H, W, K, backward=backward)
    if lines > max_threads or smem(1) > max_smem:
        return None
    cpb = 1
    while (2 * cpb * lines <= max_threads and 2 * cpb <= max_channels and dpg % (2 * cpb) == 0
           and smem(2 * cpb) <= max_smem):
        cpb *= 2
    return cpb


def _fused_fwd(plan, u, delta, A, D, bias, z, y, softplus, H, W, masks, scale):
    split, B, C = plan
    _ext().fused_fwd(u, delta, A, B, C, D, bias, z, y, softplus, H, W, *masks[:2], scale, split)


def _fused_bwd(plan, dy, u, delta, A, D, bias, z, softplus, H, W, masks, scale):
    """(du, ddelta, dz, dA, dB, dC, dD, dbias); the parameters' gradients are float32 sums in
    the shapes of the views given (B / C: (K, batch, G, N, L))."""
    split, B, C = plan
    f32 = dict(device=u.device, dtype=torch.float32)
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = None if z is None else torch.empty_like(z)
    dA, dB, dC, dD, dbias = (None if t is None else torch.empty(t.shape, **f32)
                             for t in (A, B, C, D, bias))
    # zeroed by one launch, not one each (a small backward's time is much the host's); each
    # keeps its own storage: the custom op's outputs may not alias each other (252b2ca)
    torch._foreach_zero_([t for t in (dA, dB, dC, dD, dbias) if t is not None])
    _ext().fused_bwd(dy, u, delta, A, B, C, D, bias, z, du, ddelta, dz, dA, dB, dC, dD, dbias,
                     softplus, H, W, *masks[:2], scale, split)
    return du, ddelta, dz, dA, dB, dC, dD, dbias


# ------------------------------------------------------------------------------------ the ops
_this = sys.modules[__name__]


# saved: saved_numel's float32 buffer, filled by the forward and read by the backward
def selective_scan_fwd(*args, saved=None):
    keep = ({},) if saved is None else _keep(saved, args[0].shape, args[2].shape[1], 1)
    return _routes.selective_scan_fwd(_this, *args, keep=keep)


def selective_scan_bwd(*args, saved=None):
    keep = ({},) if saved is None else _keep(saved, args[2].shape, args[4].shape[1], 1)
    return _routes.selective_scan_bwd(_this, *args, keep=keep)


# bidirectional_scan and the SS2D core: the fused kernels where a block holds a whole sequence
# (variable B and C of one shape, channel-first images), else one launch per route.
def _bidi_fused(u, delta, A, B, C, D, z, delta_bias, backward):
    u, delta, A, D, delta_bias, z = _routes.bidirectional_inputs(u, delta, A, D, delta_bias, z)
    plan = _fused_plan(u, delta, B.contiguous(), C.contiguous(), backward, "bidi")
    return plan, (u, delta, _f32(A), _f32(D), _f32(delta_bias), z)


def _bidi_lanes(u, delta, A, B, C, z):
    """The states-on-lanes split of each direction (both take the same), or None."""
    return _lane_split(u[0], delta[0], B[0], C[0], A.shape[-1], z=z)


def bidirectional_scan_fwd(u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine,
                           out_dtype, saved=None):
    u, delta = u.contiguous(), delta.contiguous()
    # two states-on-lanes launches (one per direction) beat the fused forward where they apply
    plan = None
    if _bidi_lanes(u, delta, A, B, C, z) is None:
        plan, (u, delta, A, D, bias, z) = _bidi_fused(u, delta, A, B, C, D, z, delta_bias, False)
    if plan is None:
        keep = ({}, {}) if saved is None else _keep(saved, u.shape, A.shape[-1], 2)
        return _routes.bidirectional_scan_fwd(_this, u, delta, A, B, C, D, z, delta_bias,
                                              delta_softplus, combine, out_dtype, keep)
    y = torch.empty(u.shape[1:], device=u.device, dtype=out_dtype)
    _fused_fwd(plan, u, delta, A, D, bias, z, y, delta_softplus, 1, u.shape[-1],
               _route_masks("bidi"), 0.5 if combine == "mean" else 1.0)
    return y


def _bidi_lane_bwd(split, saved, dy, u, delta, A, B, C, D, z, bias, softplus, scale):
    """Vim's backward on the states-on-lanes kernels from the forward's saved buffer (run
    again where None): both directions' backward; the first writes dz.  u, delta: (2, batch,
    dim, L); A, D, bias float32 with the direction first."""
    f32 = dict(device=u.device, dtype=torch.float32)
    again = saved is None
    if again:
        saved = torch.empty(_saved_size(u.shape, A.shape[-1], 2, z is not None), **f32)
    keep = _keep(saved, u.shape, A.shape[-1], 2)
    if again and saved.numel():  # the forward kept nothing: run it again (y not written)
        _routes.bidi_fwd(_this, u, delta, A, B, C, D, bias, softplus,
                         torch.empty(u.shape[1:], **f32), None, z=z, scale=scale, keep=keep)
    y_pre = keep[1]["y_pre"]
    p = _routes.pick
    du, ddelta = torch.empty_like(u), torch.empty_like(delta)
    dz = None if z is None else torch.empty_like(z)
    grads = [_lane_grads(split, keep[i]["states"], None if i else y_pre, dy, None, u[i],
                         delta[i], A[i], B[i], C[i], p(D, i), z, p(bias, i), softplus, du[i],
                         ddelta[i], None if i else dz, i == 1, scale) for i in (0, 1)]
    dA, dB, dC, dD, dbias = [None if g0 is None else torch.stack([g0, g1])
                             for g0, g1 in zip(*grads)]
    return du, ddelta, dA, dB, dC, dD, dz, dbias


def bidirectional_scan_bwd(dy, u, delta, A, B, C, D, z, delta_bias, delta_softplus, combine,
                           saved=None):
    scale = 0.5 if combine == "mean" else 1.0
    u, delta = u.contiguous(), delta.contiguous()
    lanes = _bidi_lanes(u, delta, A, B, C, z)
    if lanes:
        u, delta, Af, Df, bias, z = _routes.bidirectional_inputs(u, delta, _f32(A), _f32(D),
                                                                 _f32(delta_bias), z)
        du, ddelta, dA, dB, dC, dD, dz, dbias = _bidi_lane_bwd(
            lanes, saved, dy.contiguous(), u, delta, Af, B, C, Df, z, bias, delta_softplus,
            scale)
        return (du, ddelta, _routes.cast(dA, A), _routes.cast(dB, B), _routes.cast(dC, C),
                _routes.cast(dD, D), dz, _routes.cast(dbias, delta_bias))
    plan, (u, delta, Af, Df, bias, z) = _bidi_fused(u, delta, A, B, C, D, z, delta_bias, True)
    if plan is None:
        return _routes.bidirectional_scan_bwd(_this, dy, u, delta, A, B, C, D, z, delta_bias,
                                              delta_softplus, combine)
    du, ddelta, dz, dA, dB, dC, dD, dbias = _fused_bwd(
        plan, dy.contiguous(), u, delta, Af, Df, bias, z, delta_softplus, 1, u.shape[-1],
        _route_masks("bidi"), 0.5 if combine == "mean" else 1.0)
    return (du, ddelta, _routes.cast(dA, A), _routes.cast(dB.view(B.shape), B),
            _routes.cast(dC.view(C.shape), C), _routes.cast(dD, D), dz,
            _routes.cast(dbias, delta_bias))


def _cross_fused(x, delta, A, B, C, D, delta_bias, layout, routes, backward):
    """(plan, views) of the SS2D core for the fused kernels: x as (1, batch, C, L), delta and
    B / C with the route axis first, A (K, C, N), D / delta_bias (K, C)."""
    x, delta, A, B, C, D, delta_bias = _routes.cross_inputs(x, delta, A, B, C, D, delta_bias)
    if layout != "bchw":  # (bhwc: a channel's pixels are strided)
        return None, None
    batch, c, H, W = x.shape
    K, L = delta.shape[1], H * W
    lines = _lines(x, delta, A, layout, backward)
    if L < FUSED_CROSS_MIN_L and not lines:
        return None, None
    u, d4 = x.view(1, batch, c, L), delta.transpose(0, 1)
    plan = _fused_plan(u, d4, B.transpose(0, 1), C.transpose(0, 1), backward, routes, lines)
    per_route = lambda t: None if t is None else _f32(t).view(K, c)  # noqa: E731
    return plan, (u, d4, _f32(A).view(K, c, -1), per_route(D), per_route(delta_bias))


# The SS2D core's backward at N = 1 where the line kernels can't hold a channel's lines, on the
# states-on-lanes kernels: every route's copy of x, delta, B, C and dy in its scan order
# (csrc/cross_scan.cu's tiled copies), one flat backward over the K x C channels (K times one
# route's channels: enough warps to fill the GPU) with float32 du, then du merged and ddelta /
# dB / dC put back in position order.  Measured on an H200 (bench/NOTES.md) faster than the
# fused backward at VMamba-T's four stages, and slower than the line kernels (no copies).
def _cross_lanes(x, delta, A, B, C, layout):
    """The lane split of the SS2D core's flat backward, or None where it does not run on the
    states-on-lanes kernels (shapes and dtypes only)."""
    if layout != "bchw" or A.shape[-1] != 1 or delta.dtype != x.dtype:
        return None
    batch, K, c, L = delta.shape
    u = torch.empty(batch, K * c, L, device="meta", dtype=x.dtype)
    BC = [torch.empty(M.shape, device="meta", dtype=M.dtype) for M in (B, C)]
    return _lane_split(u, u, *BC, 1)


def _cross(src, dst, image, H, W, routes, mode):
    """csrc/cross_scan.cu: image is the image side, (batch, 1 or K, C, H * W)."""
    _ext().cross(src, dst, image, H, W, *_route_masks(routes), mode)


CROSS_SCAN, CROSS_MERGE, CROSS_UNROUTE = 0, 1, 2  # csrc/scan.h CrossMode


def _to_routes(t, H, W, routes, dtype=None):
    """(batch, K or 1, C, H * W) in position order (one image per route, or one for all) ->
    (batch, K, C, H * W), each route's in its scan order."""
    t = t.contiguous()
    out = torch.empty(t.shape[0], len(ROUTE_FLAGS[routes]), *t.shape[2:], device=t.device,
                      dtype=dtype or t.dtype)
    _cross(t, out, t, H, W, routes, CROSS_SCAN)
    return out


def _from_routes(t, H, W, routes, dtype):
    out = torch.empty(t.shape, device=t.device, dtype=dtype)
    _cross(t, out, out, H, W, routes, CROSS_UNROUTE)
    return out


def _merged(t, H, W, routes, dtype):
    """(batch, K, C, H * W) routes -> their sum at each position, (batch, C, H, W)."""
    batch, _, c, L = t.shape
    out = torch.empty(batch, c, H, W, device=t.device, dtype=dtype)
    _cross(t, out, out.view(batch, 1, c, L), H, W, routes, CROSS_MERGE)
    return out


def _cross_lanes_inputs(x, delta, B, C, routes):
    """The flat scan's u, delta (batch, K * C, L) and B, C (batch, K, N, L), in scan order."""
    H, W = x.shape[2:]
    to = functools.partial(_to_routes, H=H, W=W, routes=routes)
    return to(x.flatten(2)[:, None]).flatten(1, 2), to(delta).flatten(1, 2), to(B), to(C)


def _cross_lanes_bwd(split, dy, x, delta, A, B, C, D, bias, softplus, routes):
    H, W = x.shape[2:]
    f32 = dict(device=x.device, dtype=torch.float32)
    u, d, Bs, Cs = _cross_lanes_inputs(x, delta, B, C, routes)
    dys = _to_routes(dy.flatten(2)[:, None], H, W, routes,
                     None if dy.dtype == x.dtype else torch.float32).flatten(1, 2)
    A, D, bias = _f32(A), _f32(D), _f32(bias)
    states = torch.empty(_states_numel(u.shape, 1), **f32)
    if states.numel():  # the forward again, for the state entering each chunk
        scan_fwd(u, d, A, Bs, Cs, D, None, bias, softplus, None,
                 torch.empty(*u.shape[:2], 1, **f32), states=states)
    du, dd = torch.empty(u.shape, **f32), torch.empty_like(d)
    dA, dB, dC, dD, dbias = _lane_grads(split, states, None, dys, None, u, d, A, Bs, Cs, D, None,
                                        bias, softplus, du, dd, None, False)
    back = functools.partial(_from_routes, H=H, W=W, routes=routes)
    return (_merged(du.view(delta.shape), H, W, routes, x.dtype),
            back(dd.view(delta.shape), dtype=delta.dtype), dA, back(dB, dtype=B.dtype),
            back(dC, dtype=C.dtype), dD, dbias)


def cross_selective_scan_fwd(x, delta, A, B, C, D, delta_bias, delta_softplus, layout, routes,
                             out_dtype):
    plan, views = _cross_fused(x, delta, A, B, C, D, delta_bias, layout, routes, False)
    if plan is None:
        return _routes.cross_selective_scan_fwd(_this, x, delta, A, B, C, D, delta_bias,
                                                delta_softplus, layout, routes, out_dtype)
    u, d4, Af, Df, bias = views
    y = torch.empty(x.shape, device=x.device, dtype=out_dtype)
    _fused_fwd(plan, u, d4, Af, Df, bias, None, y.view(u.shape[1:]), delta_softplus,
               *x.shape[2:], _route_masks(routes), 1.0)
    return y


def cross_selective_scan_bwd(dy, x, delta, A, B, C, D, delta_bias, delta_softplus, layout,
                             routes):
    plan, views = _cross_fused(x, delta, A, B, C, D, delta_bias, layout, routes, True)
    on_lines = plan is not None and len(plan[0]) > 4
    split = None if on_lines else _cross_lanes(x, delta, A, B, C, layout)
    if split:
        x, delta, A, B, C, D, delta_bias = _routes.cross_inputs(x, delta, A, B, C, D, delta_bias)
        dx, ddelta, dA, dB, dC, dD, dbias = _cross_lanes_bwd(
            split, dy.contiguous(), x, delta, A, B, C, D, delta_bias, delta_softplus, routes)
        return (dx, ddelta, _routes.cast(dA, A), dB, dC, _routes.cast(dD, D),
                _routes.cast(dbias, delta_bias))
    if plan is None:
        return _routes.cross_selective_scan_bwd(_this, dy, x, delta, A, B, C, D, delta_bias,
                                                delta_softplus, layout, routes)
    u, d4, Af, Df, bias = views
    du, ddelta, _, dA, dB, dC, dD, dbias = _fused_bwd(
        plan, dy.contiguous().view(u.shape[1:]), u, d4, Af, Df, bias, None, delta_softplus,
        *x.shape[2:], _route_masks(routes), 1.0)
    back = lambda g, t: _routes.cast(g.squeeze(2).transpose(0, 1), t)  # noqa: E731
    return (du.view(x.shape), ddelta.transpose(0, 1), _routes.cast(dA.view(A.shape), A),
            back(dB, B), back(dC, C), _routes.cast(None if dD is None else dD.flatten(), D),
            _routes.cast(None if dbias is None else dbias.flatten(), delta_bias))


@functools.lru_cache(maxsize=None)  # (asked twice a call: ~10% of a backward's Python)
def _route_masks(routes):
    flags = ROUTE_FLAGS[routes]
    return (sum(int(rev) << k for k, (rev, _) in enumerate(flags)),
            sum(int(tr) << k for k, (_, tr) in enumerate(flags)), len(flags))


def cross_scan(x, layout, routes):
    x, H, W, image, out = _routes.cross_scan_buffers(x, layout, routes)
    _cross(x, out, image.unsqueeze(1), H, W, routes, CROSS_SCAN)
    return out


def cross_merge(y, H, W, layout, routes):
    y, out, image = _routes.cross_merge_buffers(y, H, W, layout)
    _cross(y, out, image.unsqueeze(1), H, W, routes, CROSS_MERGE)
    return out
