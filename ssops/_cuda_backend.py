"""The ``cuda`` backend: the compiled extension built from csrc/ (not written yet)."""


def why_unavailable():
    return "no CUDA kernels yet: csrc/ holds no extension to build (see the CUDA backend issue)"
