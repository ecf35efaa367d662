"""The cuda backend's C++/CUDA sources, installed as ssops.csrc so that ssops._cuda_backend can
compile them on first use where setup.py did not build the extension."""
