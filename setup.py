"""ssops: state-space scan operators for PyTorch.

The CUDA extension ``ssops._C`` (csrc/) is built when ``SSOPS_BUILD_CUDA`` is 1, or is
``auto`` (the default) and torch with CUDA and a CUDA toolkit are importable at build time
(``pip install --no-build-isolation .``; ``TORCH_CUDA_ARCH_LIST`` picks the architectures).
Otherwise the package installs as pure Python, and the cuda backend compiles csrc/ on first
use where nvcc is available, or says why it is unavailable.
"""
import glob
import os

from setuptools import setup

PACKAGES = {
    "ssops": "ssops",
    "ssops.compat": "ssops/compat",
    "ssops.csrc": "csrc",
    "ssops.reference": "reference",
    "ssops.triton_kernels": "triton_kernels",
    "ssops.models": "models",
}


def cuda_extension():
    """([ssops._C], cmdclass) when the extension should and can be built, else ([], {})."""
    mode = os.environ.get("SSOPS_BUILD_CUDA", "auto")
    if mode not in ("0", "1", "auto"):
        raise ValueError(f"SSOPS_BUILD_CUDA must be 0, 1 or auto, got {mode!r}")
    if mode == "0":
        return [], {}
    try:
        import torch
        from torch.utils.cpp_extension import CUDA_HOME, BuildExtension, CUDAExtension
        missing = None if torch.version.cuda and CUDA_HOME else "a CUDA build of torch and nvcc"
    except ImportError:
        missing = "torch at build time (pip install --no-build-isolation)"
    if missing:
        if mode == "1":
            raise RuntimeError(f"SSOPS_BUILD_CUDA=1 needs {missing}")
        return [], {}
    sources = sorted(glob.glob("csrc/*.cu")) + ["csrc/ops.cpp"]
    ext = CUDAExtension("ssops._C", sources, extra_compile_args={
        "cxx": ["-O3"], "nvcc": ["-O3", "--use_fast_math"]})
    return [ext], {"build_ext": BuildExtension}


ext_modules, cmdclass = cuda_extension()

setup(
    name="ssops",
    version="0.1.0",
    description="State-space scan operators (selective scan, bidirectional scan, SS2D cross "
                "scan) for PyTorch, with CUDA, Triton and reference backends",
    python_requires=">=3.10",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
    package_data={"ssops.csrc": ["*.cu", "*.cuh", "*.h", "*.cpp"]},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
    install_requires=["torch>=2.4"],
    extras_require={
        # The suite runs the Triton kernels in Triton's interpreter (TRITON_INTERPRET=1); it
        # passes with Triton 3.6 (the GPU machine's) and 3.9.  numpy<2.4: Triton 3.6's
        # interpreter calls int() on 1-element arrays.  scikit-learn: its bundled digits set
        # for the models' training test (no download).
        "test": ["pytest>=7", "hypothesis>=6", "pytest-benchmark>=4", "numpy<2.4",
                 "triton>=3.0", "scikit-learn>=1.0"],
        "triton": ["triton>=3.0"],
    },
    entry_points={"console_scripts": ["ssops=ssops.__main__:main"]},
)
