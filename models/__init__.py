"""Vision models built on ssops' ops (ssops.models): VMamba, Vim and, as the scan-free control,
MambaOut, under their official names, with the official parameter names and shapes.

    model = ssops.models.create("vmamba_tiny", num_classes=10, backend="triton")
    ssops.models.list_models()
"""
from __future__ import annotations

import torch

from ._layers import set_backend
from .mambaout import CONFIGS as _MAMBAOUT, mambaout
from .vim import CONFIGS as _VIM, vim
from .vmamba import CONFIGS as _VMAMBA, vmamba

# the papers' short names for their headline variants
ALIASES = {"vmamba_tiny": "vmamba_tiny_s1l8", "vmamba_small": "vmamba_small_s2l15",
           "vmamba_base": "vmamba_base_s2l15"}
_BUILDERS = {**{n: vmamba for n in _VMAMBA}, **{n: vim for n in _VIM},
             **{n: mambaout for n in _MAMBAOUT}}


# The papers' figures: parameters (millions, at the papers' precision) and FLOPs at 224 x 224
# (billions of multiply-adds, as the papers count them), where given.
PAPER = {
    "vmamba_tiny_s1l8": (30.2, 4.91), "vmamba_small_s2l15": (50.1, None),
    "vmamba_base_s2l15": (88.6, None), "vanilla_vmamba_tiny": (22.9, None),
    "vim_tiny": (7, None), "vim_small": (26, None), "vim_base": (98, None),
    "mambaout_femto": (7.3, None), "mambaout_tiny": (26.5, 4.5), "mambaout_small": (48.5, None),
    "mambaout_base": (84.8, None),
}


def complexity(name: str, img_size: int = 224):
    """(parameters, multiply-adds) of one image's forward, counted by FlopCounterMode (which
    counts the scans with ssops' FLOP formulas) on the meta device: nothing is computed."""
    from torch.utils.flop_counter import FlopCounterMode
    with torch.device("meta"):
        model = create(name).eval()
        x = torch.empty(1, 3, img_size, img_size)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    return sum(p.numel() for p in model.parameters()), counter.get_total_flops() // 2


def list_models():
    """Every name ``create`` accepts (official names, then aliases)."""
    return sorted(_BUILDERS) + sorted(ALIASES)


def create(name: str, num_classes: int = 1000, backend=None, **kwargs):
    """Builds model ``name`` (see ``list_models()``) with ``num_classes`` outputs.  ``backend``
    fixes the ssops backend its scans call ("cuda", "triton", "reference"); None follows
    ssops' selection (``use_backend`` / ``set_backend`` / ``SSOPS_BACKEND`` / auto).  Other
    keyword arguments go to the model's constructor (e.g. drop_path_rate, in_chans)."""
    official = ALIASES.get(name, name)
    if official not in _BUILDERS:
        raise ValueError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return set_backend(_BUILDERS[official](official, num_classes=num_classes, **kwargs), backend)


__all__ = ["create", "list_models", "set_backend", "complexity", "PAPER"]
