"""python -m ssops: info, check, bench run and report."""
import subprocess
import sys


def _run(*args):
    return subprocess.run([sys.executable, "-m", "ssops", *args], capture_output=True, text=True,
                          timeout=600)


def test_info_lists_every_backend():
    r = _run("info")
    assert r.returncode == 0, r.stderr
    for name in ("cuda", "triton", "reference"):
        assert f"  {name}" in r.stdout
    assert "reference  available" in r.stdout


def test_check_reference_passes():
    r = _run("check", "--backend", "reference", "--device", "cpu", "--dtypes", "float32,bfloat16")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "checks passed" in r.stdout
    assert r.stdout.count(" pass") >= 20 and "FAIL" not in r.stdout


def test_bench_runs():
    r = _run("bench", "--backend", "reference", "--device", "cpu")
    assert r.returncode == 0, r.stderr
    assert "selective_scan" in r.stdout and "cross_selective_scan" in r.stdout


def test_models_table():
    r = _run("models")
    assert r.returncode == 0, r.stderr
    assert "vmamba_tiny_s1l8" in r.stdout and "30.25" in r.stdout and "4.91" in r.stdout
