"""Train an ssops model with PyTorch's DistributedDataParallel (one process per GPU).

    torchrun --nproc_per_node=NUM_GPUS examples/train.py --model vmamba_tiny --steps 50
    python examples/train.py --model vim_tiny --device cpu --img-size 32 --steps 5  # no GPU

Data: random images with random labels ("synthetic", for throughput) or scikit-learn's bundled
handwritten digits upsampled to --img-size ("digits", no download).  Mixed precision:
bfloat16 autocast on CUDA.  Prints loss and images/s (all ranks together) from rank 0.
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

import ssops.models


def batches(kind, batch, img_size, device, rank, world):
    """An endless stream of (images, labels), each rank drawing a different part."""
    if kind == "synthetic":
        gen = torch.Generator(device=device).manual_seed(rank)
        while True:
            yield (torch.randn(batch, 3, img_size, img_size, device=device, generator=gen),
                   torch.randint(0, 1000, (batch,), device=device, generator=gen))
    from sklearn.datasets import load_digits
    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32)[:, None].expand(-1, 3, -1, -1)
    x = F.interpolate(x, size=img_size, mode="bilinear", align_corners=False)
    x, y = ((x - x.mean()) / x.std()).to(device), torch.tensor(d.target, device=device)
    while True:
        for i in torch.randperm(len(x) // batch // world * world)[rank::world].tolist():
            yield x[i * batch:(i + 1) * batch], y[i * batch:(i + 1) * batch]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--model", default="vmamba_tiny", choices=ssops.models.list_models())
    p.add_argument("--data", default="synthetic", choices=["synthetic", "digits"])
    p.add_argument("--batch", type=int, default=64, help="per GPU")
    p.add_argument("--img-size", type=int, default=224)
    p.add_argument("--steps", type=int, default=50)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--backend", default=None, help="ssops backend (default: auto)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = p.parse_args()

    distributed = "RANK" in os.environ  # started by torchrun
    if distributed:
        dist.init_process_group("nccl" if args.device == "cuda" else "gloo")
    rank, world = (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)
    device = torch.device(args.device, int(os.environ.get("LOCAL_RANK", 0))
                          if args.device == "cuda" else None)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.manual_seed(0)  # the same initial weights on every rank

    num_classes = 10 if args.data == "digits" else 1000
    kwargs = {} if args.model.startswith(("vmamba", "vanilla", "mambaout")) else \
        dict(img_size=args.img_size)
    model = ssops.models.create(args.model, num_classes=num_classes, backend=args.backend,
                                **kwargs).to(device)
    if distributed:
        model = DistributedDataParallel(model,
                                        device_ids=[device] if device.type == "cuda" else None)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.05)
    data = batches(args.data, args.batch, args.img_size, device, rank, world)

    model.train()
    start, timed = None, 0
    for step in range(args.steps):
        x, y = next(data)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if step == min(4, args.steps - 1):  # the first steps compile and autotune kernels
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
        elif start is not None:
            timed += 1
        if rank == 0 and (step % 10 == 0 or step == args.steps - 1):
            print(f"step {step:4d}  loss {loss.item():.4f}", flush=True)
    if device.type == "cuda":
        torch.cuda.synchronize()
    if rank == 0 and timed:
        rate = timed * args.batch * world / (time.perf_counter() - start)
        print(f"{args.model}: {rate:.0f} images/s over {timed} steps on {world} process(es) "
              f"({device.type}, batch {args.batch} per process)")
    if distributed:
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
