"""ssops._bench.time_ms's two timers side by side in one run, on ssops' cuda pairs and the
same-run baselines of bench/run.py (mamba_ssm built from MAMBA_SSM_SRC):

- "sync": each run starts straight after a synchronize (``spin=False``), so it also counts the
  host's latency to the run's first launch -- all of a one-launch op's Python path, little of a
  pipeline's;
- "spin": each run starts behind a spin kernel the host outruns (``spin=True``, the default),
  so the events time the GPU's work alone.

Rounds alternate which timer goes first; medians over rounds, with ssops' host time a call.

    MAMBA_SSM_SRC=... python bench/timer_ab.py [--cases ss2d_s1,...] [--rounds 3] [--out DIR]
"""
from __future__ import annotations

import argparse
import statistics

import run
from results_io import run_info, save
from ssops._bench import host_ms, time_ms

TIMERS = {"sync": False, "spin": True}


def baseline_times(name, tensors):
    """(fwd ms, bwd ms) of the case's baseline in run.py, timed with run.cuda_time_ms."""
    if name in run.SS2D_CASES:
        return run.vmamba_unfused_times(*tensors.values())[:2]
    if name in run.BIDI_CASES:
        return run.vim_mamba_ssm_times(*tensors.values())
    return run.mamba_ssm_times(*tensors.values())


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", default="mamba_lm,vim_s_bidi,ss2d_s1,ss2d_s2,ss2d_s3,ss2d_s4")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--out", default="bench/results")
    args = p.parse_args()
    assert run._mamba_ssm_scan() is not None, "set MAMBA_SSM_SRC (bench/mamba_ssm_jit.py)"
    cases = args.cases.split(",")
    pairs = {name: run.case_pair(name, "cuda") for name in cases}
    times = {(timer, name): [] for timer in TIMERS for name in cases}
    for r in range(args.rounds):
        order = list(TIMERS) if r % 2 == 0 else list(TIMERS)[::-1]
        for timer in order:
            run.cuda_time_ms = lambda fn, spin=TIMERS[timer]: time_ms(fn, 5, 30, spin=spin)
            for name, pair in pairs.items():
                t = (run.cuda_time_ms(pair.fwd), run.cuda_time_ms(pair.bwd),
                     *baseline_times(name, pair.tensors),
                     host_ms(pair.fwd), host_ms(pair.bwd))
                times[timer, name].append(t)
                print(f"round {r} {timer} {name:11} ssops {t[0]:7.3f} {t[1]:7.3f}  "
                      f"baseline {t[2]:7.3f} {t[3]:7.3f}  host {t[4]:.3f} {t[5]:.3f}", flush=True)
    print(f"\nmedians of {args.rounds} rounds (ms)\n{'case':11} {'timer':5} {'ssops fwd':>9} "
          f"{'bwd':>7} {'base fwd':>9} {'bwd':>7} {'x fwd':>6} {'x bwd':>6} {'x both':>6}"
          f"  host fwd  bwd")
    summary = {}
    for name in cases:
        for timer in TIMERS:
            fwd, bwd, base_fwd, base_bwd, host_fwd, host_bwd = (
                statistics.median(x) for x in zip(*times[timer, name]))
            s = dict(fwd_ms=fwd, bwd_ms=bwd, baseline_fwd_ms=base_fwd, baseline_bwd_ms=base_bwd,
                     host_fwd_ms=host_fwd, host_bwd_ms=host_bwd, speedup_fwd=base_fwd / fwd,
                     speedup_bwd=base_bwd / bwd,
                     speedup_fwd_bwd=(base_fwd + base_bwd) / (fwd + bwd))
            summary.setdefault(name, {})[timer] = s
            print(f"{name:11} {timer:5} {fwd:9.3f} {bwd:7.3f} {base_fwd:9.3f} {base_bwd:7.3f} "
                  f"{s['speedup_fwd']:6.2f} {s['speedup_bwd']:6.2f} {s['speedup_fwd_bwd']:6.2f}"
                  f"  {host_fwd:8.3f} {host_bwd:.3f}")
    save(dict(run_info(), rounds=args.rounds,
              shapes={name: pair.shape for name, pair in pairs.items()},
              times={f"{timer}/{name}": ts for (timer, name), ts in times.items()},
              summary=summary), "timer_ab", args.out)


if __name__ == "__main__":
    main()
