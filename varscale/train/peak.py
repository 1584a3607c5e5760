"""Matmul peak of this machine, measured once and cached, as the denominator of MFU.

MFU here is achieved training FLOP/s over the best FLOP/s a large square matmul reaches on
the same machine, with the same number of threads and dtype. It is an honest "how close to
the hardware's practical ceiling" number; it is not the vendor's spec-sheet peak.

The cache (``~/.cache/varscale/peak.json``, or ``$VARSCALE_CACHE``) is keyed by host, CPU /
GPU model, device, dtype, thread count and torch version, so a different machine or thread
count measures again. ``VARSCALE_PEAK_FLOPS`` overrides the measurement (e.g. in tests).
"""
from __future__ import annotations

import json
import os
import platform
import socket
import time
from pathlib import Path

import torch

from varscale.schema import atomic_write_json


def _cache_path() -> Path:
    root = os.environ.get("VARSCALE_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "varscale")
    return Path(root) / "peak.json"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _key(device: str, dtype: str, threads: int) -> str:
    model = torch.cuda.get_device_name() if device.startswith("cuda") else _cpu_model()
    return f"{socket.gethostname()}|{model}|{device}|{dtype}|t{threads}|torch{torch.__version__}"


def measure(device: str = "cpu", dtype: str = "fp32", n: int = 1024, seconds: float = 0.5) -> float:
    """Best FLOP/s of an n x n matmul over ~``seconds`` of repeats."""
    dt = {"fp32": torch.float32, "bf16": torch.bfloat16}[dtype]
    a = torch.randn(n, n, device=device, dtype=dt)
    b = torch.randn(n, n, device=device, dtype=dt)
    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    for _ in range(2):  # warm the kernels (oneDNN/AMX pick their path on first use)
        a @ b
    sync()
    best = float("inf")
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end:
        t0 = time.perf_counter()
        a @ b
        sync()
        best = min(best, time.perf_counter() - t0)
    return 2.0 * n ** 3 / best


def peak_flops(device: str = "cpu", dtype: str = "fp32", threads: int | None = None) -> float:
    """Cached matmul peak (FLOP/s) for this machine, device, dtype and thread count."""
    env = os.environ.get("VARSCALE_PEAK_FLOPS")
    if env:
        return float(env)
    threads = threads or torch.get_num_threads()
    key = _key(device, dtype, threads)
    path = _cache_path()
    try:
        cache = json.loads(path.read_text())
    except (OSError, ValueError):
        cache = {}
    if key in cache:
        return float(cache[key])
    value = measure(device, dtype)
    cache[key] = value
    try:
        atomic_write_json(path, cache)
    except OSError:  # a read-only home must not stop training
        pass
    return value


if __name__ == "__main__":
    torch.set_num_threads(int(os.environ.get("VARSCALE_THREADS", torch.get_num_threads())))
    for dt in ("fp32", "bf16"):
        print(f"{dt}: {peak_flops('cpu', dt) / 1e9:.1f} GFLOP/s ({torch.get_num_threads()} threads)")
