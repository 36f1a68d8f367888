"""``scmcl bench dists``: the chunked window-distance writer on random 128-d embeddings;
throughput and peak memory printed as figures, never asserted."""

from __future__ import annotations

import resource
import tempfile
import time
from pathlib import Path

import torch

from scmcl.device import resolve_device
from scmcl.scmc.dists import write_distance_matrix
from scmcl.scmc.models import EMBED_DIM


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_dists_bench(rows: int, cols: int, chunk: int, device: str = "cpu", directory: str | None = None) -> dict:
    dev = resolve_device(device)
    generator = torch.Generator().manual_seed(0)
    a = torch.tanh(torch.randn(rows, EMBED_DIM, generator=generator))
    b = torch.tanh(torch.randn(cols, EMBED_DIM, generator=generator))
    with tempfile.TemporaryDirectory(dir=directory) as tmp:
        write_distance_matrix(Path(tmp) / "warmup.npy", a[:chunk], b[:chunk], chunk, dev)  # allocator, kernels
        baseline = _peak_rss_mb()
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats(dev)
        start = time.perf_counter()
        write_distance_matrix(Path(tmp) / "d.npy", a, b, chunk, dev)
        seconds = time.perf_counter() - start
        size_mb = (Path(tmp) / "d.npy").stat().st_size / 2**20
    result = {"rows": rows, "cols": cols, "chunk": chunk, "device": str(dev), "seconds": seconds,
              "distances_per_s": rows * cols / seconds, "written_mb": size_mb,
              "peak_rss_mb": _peak_rss_mb(), "peak_rss_growth_mb": _peak_rss_mb() - baseline,
              "full_matrix_mb": rows * cols * 4 / 2**20, "chunk_block_mb": min(chunk, rows) * cols * 4 / 2**20}
    if dev.type == "cuda":
        result["peak_cuda_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
    return result


def format_bench(r: dict) -> str:
    lines = [f"dists {r['rows']} x {r['cols']} (chunk {r['chunk']} rows) on {r['device']}: {r['seconds']:.2f} s, "
             f"{r['distances_per_s'] / 1e6:.1f} M distances/s, {r['written_mb'] / r['seconds']:.0f} MB/s written",
             f"peak RSS {r['peak_rss_mb']:.0f} MB (+{r['peak_rss_growth_mb']:.0f} MB during the run; one chunk block "
             f"is {r['chunk_block_mb']:.0f} MB, the whole matrix {r['full_matrix_mb']:.0f} MB)"]
    if "peak_cuda_mb" in r:
        lines.append(f"peak CUDA memory {r['peak_cuda_mb']:.0f} MB")
    return "\n".join(lines)
