"""Memory of `segdeploy serve` under load: 32 concurrent gRPC clients, each on its own image of the
largest output size the request limits allow (8192x8192, 67 megapixels), clicking by image id. The
resident memory of the whole server (tritonserver and its Python-backend processes, summed from
/proc every 50 ms) is sampled before and during the load; the peak is reported beside the per-call
budget (``--max-call-bytes``, default 2 GiB).

    python benchmarks/serve_memory.py [CLICKS_PER_CLIENT] [--format rle|binary]

Writes benchmarks/results/serve-memory-cpu.json. Loopback only; stops by itself.
"""

from __future__ import annotations

import json
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from segdeploy.bench import machine_info
from segdeploy.limits import MAX_OUTPUT_SIDE, RequestLimits
from segdeploy.runtime.memory import DEFAULT_MAX_CALL_BYTES
from segdeploy.serving.server import ServeOptions, free_port, start_server

CLIENTS = 32
THREADS = 2
RESULTS = Path(__file__).parent / "results"


def largest_square() -> tuple[int, int]:
    """The largest square orig_size the default request limits accept."""
    limits = RequestLimits()
    side = min(MAX_OUTPUT_SIDE, int(limits.max_output_pixels**0.5))
    return side, side


def tree_rss(root: int) -> int:
    """Resident bytes of ``root`` and every process below it."""
    children: dict[int, list[int]] = {}
    for status in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = status.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(status.parent.name))
    total, todo = 0, [root]
    while todo:
        pid = todo.pop()
        todo += children.get(pid, [])
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
        except OSError:
            pass
    return total


def sample(root: int, stop: threading.Event, out: list[int]) -> None:
    while not stop.is_set():
        out.append(tree_rss(root))
        time.sleep(0.05)


def client(url: str, index: int, clicks: int, size: tuple[int, int], mask_format: str, out: dict) -> None:
    from segdeploy.serving.client import SegdeployClient

    rng = np.random.default_rng(index)
    with SegdeployClient(url, timeout_s=600) as segdeploy:
        image_id = segdeploy.add_image((0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32), orig_size=size)
        for _ in range(clicks):
            click = np.array([[rng.uniform(0, size[1]), rng.uniform(0, size[0])]], np.float32)
            try:
                answer = segdeploy.predict(image_id, point_coords=click, point_labels=[1], best_only=True, low_res=False, mask_format=mask_format)
                out["answered"] += 1
                out["mask_shape"] = tuple(answer.masks.shape) if getattr(answer, "masks", None) is not None else None
            except Exception as error:  # counted, never hidden
                out["failures"].append(str(error)[:200])


def main(clicks: int, mask_format: str) -> None:
    from segdeploy.contract import MaskOutput
    from segdeploy.export import ExportOptions, export_onnx

    size = largest_square()
    with tempfile.TemporaryDirectory(prefix="segdeploy-serve-memory-") as scratch:
        source = export_onnx(ExportOptions(out=Path(scratch) / "multi.onnx", multi_image=True, mask_output=MaskOutput.ALL)).path
        options = ServeOptions(source=source, threads=THREADS, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
        with start_server(options) as server:
            time.sleep(2.0)
            idle = tree_rss(server.process.pid)
            samples: list[int] = []
            stop = threading.Event()
            sampler = threading.Thread(target=sample, args=(server.process.pid, stop, samples))
            sampler.start()
            out: dict = {"answered": 0, "failures": [], "mask_shape": None}
            started = time.perf_counter()
            threads = [threading.Thread(target=client, args=(server.grpc_url, i, clicks, size, mask_format, out)) for i in range(CLIENTS)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            seconds = time.perf_counter() - started
            stop.set()
            sampler.join()
    peak = max(samples)
    data = {
        "machine": machine_info(THREADS), "clients": CLIENTS, "clicks_per_client": clicks, "orig_size": size, "mask_format": mask_format,
        "max_call_bytes": DEFAULT_MAX_CALL_BYTES, "idle_rss": idle, "peak_rss": peak, "peak_growth": peak - idle,
        "samples": len(samples), "seconds": seconds, "answered": out["answered"], "failed": len(out["failures"]),
        "first_failures": out["failures"][:3], "mask_shape": out["mask_shape"],
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"serve-memory-cpu-{mask_format}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    print(f"{CLIENTS} clients x {clicks} clicks at {size[0]}x{size[1]} ({mask_format}): {out['answered']} answered, {len(out['failures'])} failed "
          f"in {seconds:.0f} s; server RSS idle {idle / 2**30:.2f} GiB, peak {peak / 2**30:.2f} GiB (+{(peak - idle) / 2**30:.2f} GiB; "
          f"budget per call {DEFAULT_MAX_CALL_BYTES / 2**30:.0f} GiB); {len(samples)} samples")
    print(f"wrote {path}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    fmt = sys.argv[sys.argv.index("--format") + 1] if "--format" in sys.argv else "rle"
    args = [a for a in args if a != fmt]
    main(int(args[0]) if args else 2, fmt)
