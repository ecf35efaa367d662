"""ssops: state-space scan operators for PyTorch.

The CUDA extension (csrc/) is optional: the package installs as pure Python wherever it is
not built, and the cuda backend then says why it is unavailable.
"""
from setuptools import setup

PACKAGES = {
    "ssops": "ssops",
    "ssops.compat": "ssops/compat",
    "ssops.reference": "reference",
    "ssops.triton_kernels": "triton_kernels",
    "ssops.models": "models",
}

setup(
    name="ssops",
    version="0.1.0",
    description="State-space scan operators (selective scan, bidirectional scan, SS2D cross "
                "scan) for PyTorch, with CUDA, Triton and reference backends",
    python_requires=">=3.10",
    packages=list(PACKAGES),
    package_dir=PACKAGES,
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
