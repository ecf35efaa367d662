"""Drop-in shims for code written against mamba_ssm or VMamba's kernels.

``ssops.compat.mamba_ssm`` mirrors ``mamba_ssm.ops.selective_scan_interface``;
``ssops.compat.vmamba`` mirrors VMamba's ``cross_scan_fn`` / ``cross_merge_fn`` /
``selective_scan_fn`` conventions; ``install_mamba_ssm()`` makes
``import mamba_ssm.ops.selective_scan_interface`` resolve to the shim.
"""
from __future__ import annotations

import importlib.util
import sys
import types

from . import mamba_ssm, vmamba  # noqa: F401

_MODULES = ("mamba_ssm", "mamba_ssm.ops", "mamba_ssm.ops.selective_scan_interface")


def install_mamba_ssm(force: bool = False) -> bool:
    """Make ``mamba_ssm.ops.selective_scan_interface`` import as ssops' shim.

    Leaves a real, importable mamba_ssm untouched unless ``force``.  Returns True when the
    shim is installed.
    """
    if not force and "mamba_ssm" not in sys.modules and importlib.util.find_spec("mamba_ssm"):
        return False
    if not force and isinstance(sys.modules.get("mamba_ssm"), types.ModuleType) and \
            not getattr(sys.modules["mamba_ssm"], "__ssops_shim__", False):
        return False
    package = types.ModuleType("mamba_ssm")
    package.__path__ = []  # a package, so its submodules import
    package.__ssops_shim__ = True
    ops = types.ModuleType("mamba_ssm.ops")
    ops.__path__ = []
    package.ops = ops
    ops.selective_scan_interface = mamba_ssm
    sys.modules.update({_MODULES[0]: package, _MODULES[1]: ops, _MODULES[2]: mamba_ssm})
    return True


def uninstall_mamba_ssm() -> None:
    """Remove the shim installed by ``install_mamba_ssm`` (a real mamba_ssm is left alone)."""
    if getattr(sys.modules.get("mamba_ssm"), "__ssops_shim__", False):
        for name in _MODULES:
            sys.modules.pop(name, None)


__all__ = ["mamba_ssm", "vmamba", "install_mamba_ssm", "uninstall_mamba_ssm"]
