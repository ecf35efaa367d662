"""The ``triton`` backend (ssops.triton_kernels)."""


def why_unavailable():
    return "not implemented yet"
