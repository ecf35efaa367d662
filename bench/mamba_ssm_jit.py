"""mamba_ssm's selective scan for the side-by-side benchmark, on a machine without internet.

Here (with internet): download the source distribution into a folder git ignores,
    mkdir -p .mamba_ssm && cd .mamba_ssm && pip download --no-deps --no-binary :all: \\
        mamba-ssm==2.3.1   # or fetch mamba_ssm-2.3.1.tar.gz from the registry by hand
    tar xzf mamba_ssm-*.tar.gz
then carry .mamba_ssm to the GPU machine and set MAMBA_SSM_SRC=.mamba_ssm/mamba_ssm-2.3.1.
``load()`` compiles only its selective-scan extension, for this GPU's architecture only
(`pip install` would build every kernel for every architecture), and makes
``mamba_ssm.ops.selective_scan_interface`` importable without the package's __init__ (which
imports its models).  bench/run.py calls it when MAMBA_SSM_SRC is set.
"""
from __future__ import annotations

import glob
import os
import sys
import types

import torch
from torch.utils.cpp_extension import load as load_extension

# the nvcc flags of mamba_ssm's setup.py, minus its architecture list
NVCC_FLAGS = ["-O3", "-std=c++17", "-U__CUDA_NO_HALF_OPERATORS__", "-U__CUDA_NO_HALF_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT16_OPERATORS__", "-U__CUDA_NO_BFLOAT16_CONVERSIONS__",
              "-U__CUDA_NO_BFLOAT162_OPERATORS__", "-U__CUDA_NO_BFLOAT162_CONVERSIONS__",
              "--expt-relaxed-constexpr", "--expt-extended-lambda", "--use_fast_math"]


def load(src=None):
    src = src or os.environ["MAMBA_SSM_SRC"]
    major, minor = torch.cuda.get_device_capability()
    csrc = os.path.join(src, "csrc", "selective_scan")
    module = load_extension(
        "selective_scan_cuda",
        sorted(glob.glob(os.path.join(csrc, "*.cpp")) + glob.glob(os.path.join(csrc, "*.cu"))),
        extra_cflags=["-O3", "-std=c++17"],
        extra_cuda_cflags=NVCC_FLAGS + [f"-gencode=arch=compute_{major}{minor},"
                                        f"code=sm_{major}{minor}"],
        extra_include_paths=[csrc], verbose=False)
    sys.modules["selective_scan_cuda"] = module
    package = types.ModuleType("mamba_ssm")  # the package without its __init__
    package.__path__ = [os.path.join(src, "mamba_ssm")]
    sys.modules.setdefault("mamba_ssm", package)
    return module
