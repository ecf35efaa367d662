"""The benchmarks' clocks: ssops._bench.time_ms times the GPU's work and not the host's latency;
bench/models.py's CUDA-graph inference step computes the eager step."""
import pathlib
import sys
import time

import pytest
import torch

import ssops.models as M
from ssops._bench import _spin_cycles_per_ms, time_ms

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "bench"))


def test_cpu_timer_times_the_call():
    assert 5 <= time_ms(lambda: time.sleep(0.005), warmup=0, repeat=3) < 100


@pytest.mark.gpu
def test_spin_timer_leaves_out_the_hosts_latency():
    """A 0.5 ms kernel that the host launches 3 ms into the call times 0.5 ms (within 10%: the
    GPU's clock may shift between calibration and run); started straight after a synchronize,
    the run counts the host's 3 ms too."""
    torch.cuda.init()
    cycles = int(0.5 * _spin_cycles_per_ms(torch.cuda.current_device()))

    def late_kernel():
        time.sleep(0.003)
        torch.cuda._sleep(cycles)
    assert time_ms(lambda: torch.cuda._sleep(cycles)) == pytest.approx(0.5, rel=0.1)
    assert time_ms(late_kernel) == pytest.approx(0.5, rel=0.1)
    assert time_ms(late_kernel, spin=False) > 3


@pytest.mark.gpu
def test_graphed_inference_step_is_the_eager_step():
    """The replayed graph reads the input written after its capture: its fp16 logits are the
    eager step's (same kernels; 1e-2 covers float atomics' order in a few fp16 ulps) and not
    those of the input it was captured on."""
    import models  # bench/models.py
    torch.manual_seed(0)
    model = M.create("vmamba_tiny").cuda().eval()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    eager = models.inference_step(model, x)
    replay = models.inference_step(model, x, graph=True)
    before = eager().float()
    x.copy_(torch.randn_like(x))
    want = eager().float()
    torch.testing.assert_close(replay().float(), want, rtol=1e-2, atol=1e-2)
    assert not torch.allclose(before, want, rtol=1e-2, atol=1e-2)
