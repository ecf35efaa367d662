"""Where eager VMamba-T inference spends its host (Python) time, batch 128, fp16 autocast.

Prints, after warm-up: the synchronising ops torch's sync debug mode finds in one step; the
host's time to enqueue 1 and 3 steps on an idle GPU beside the time until they are done (equal
times: the GPU waited for the host); the Python functions of 3 steps by their own time.

    python bench/host_profile.py [fused|unfused]   (unfused: the SS2D core as VMamba's 3 ops)
"""
import cProfile
import functools
import pstats
import sys
import warnings

import torch

import ssops
import ssops.models as M
from models import inference_step, unfused_cross_selective_scan
from ssops._bench import enqueue_ms

if len(sys.argv) > 1 and sys.argv[1] == "unfused":
    ssops.cross_selective_scan = functools.partial(unfused_cross_selective_scan, einsum=False)
model = M.create("vmamba_tiny").cuda().eval()
x = torch.randn(128, 3, 224, 224, device="cuda")
step = inference_step(model, x)

for _ in range(6):
    step()
torch.cuda.synchronize()
torch.cuda.set_sync_debug_mode("warn")  # (it sees torch's own synchronising ops only)
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    step()
    torch.cuda.synchronize()
torch.cuda.set_sync_debug_mode(0)
syncs = [w for w in caught if "Synchronization debug mode is a prototype" not in str(w.message)]
print(f"synchronising ops in one step: {len(syncs)}")
for w in syncs[:4]:
    print("  ", str(w.message)[:100], w.filename, w.lineno)
for n in (1, 3):
    host, done = enqueue_ms(step, n)
    print(f"{n} steps: host enqueue {host:.1f} ms, until done {done:.1f} ms")
profiler = cProfile.Profile()
profiler.enable()
for _ in range(3):
    step()
profiler.disable()
torch.cuda.synchronize()
pstats.Stats(profiler).sort_stats("tottime").print_stats(14)
