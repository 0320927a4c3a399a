"""Load test of `segdeploy serve` on loopback: 1, 8 and 32 concurrent clients, each sending single-click
requests on its own image (gRPC), a fixed number of requests per level, with Triton's dynamic batching
on and off in the same run. Reports prompts/s and p50/p99 latency; writes
benchmarks/results/serve-load-cpu.json and .png.

    python benchmarks/serve_load.py [REQUESTS_PER_LEVEL] [BACKEND]

BACKEND: onnxruntime (default: the multi-image graph, exported into a temporary folder) or torch
(eager PyTorch, random weights). Bounded: every request goes to 127.0.0.1 and the run stops by itself.
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
from segdeploy.serving.server import ServeOptions, free_port, start_server

CLIENTS = (1, 8, 32)
ORIG_SIZE = (480, 640)
THREADS = 2
QUEUE_DELAY_US = 5000
RESULTS = Path(__file__).parent / "results"


def client_requests(port: int, index: int, count: int, latencies: list[float], failures: list[str]) -> None:
    """One client: its own image, ``count`` single clicks, one after another."""
    import tritonclient.grpc as grpc

    rng = np.random.default_rng(index)
    client = grpc.InferenceServerClient(f"127.0.0.1:{port}")
    embedding = (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32)
    for _ in range(count):
        tensors = []
        for name, array, datatype in (
            ("image_embeddings", embedding, "FP32"),
            ("point_coords", np.array([[[rng.uniform(0, ORIG_SIZE[1]), rng.uniform(0, ORIG_SIZE[0])]]], np.float32), "FP32"),
            ("point_labels", np.ones((1, 1), np.float32), "FP32"),
            ("orig_size", np.array([ORIG_SIZE], np.int64), "INT64"),
        ):
            tensor = grpc.InferInput(name, list(array.shape), datatype)
            tensor.set_data_from_numpy(array)
            tensors.append(tensor)
        started = time.perf_counter()
        try:
            client.infer("sam_decoder", tensors)
            latencies.append(time.perf_counter() - started)
        except Exception as error:  # counted, never hidden
            failures.append(str(error)[:200])
    client.close()


def run_level(port: int, clients: int, requests: int) -> dict:
    latencies: list[float] = []
    failures: list[str] = []
    per_client = max(1, requests // clients)
    threads = [threading.Thread(target=client_requests, args=(port, i, per_client, latencies, failures)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = np.array(latencies) * 1000.0
    return {
        "clients": clients, "requests": clients * per_client, "failed": len(failures), "seconds": wall,
        "prompts_per_s": len(latencies) / wall, "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None, "first_failures": failures[:3],
    }


def main(requests: int, backend: str) -> None:
    rows = []
    with tempfile.TemporaryDirectory(prefix="segdeploy-serve-load-") as scratch:
        source = None
        if backend == "onnxruntime":
            from segdeploy.export import ExportOptions, export_onnx

            source = export_onnx(ExportOptions(out=Path(scratch) / "multi.onnx", multi_image=True)).path
        for batching in (True, False):
            options = ServeOptions(
                source=source, backend="auto" if source else "torch", threads=THREADS, http_port=free_port(), grpc_port=free_port(),
                metrics_port=free_port(), max_batch_size=64, max_queue_delay_us=QUEUE_DELAY_US if batching else None,
            )
            with start_server(options) as server:
                run_level(options.grpc_port, max(CLIENTS), 2 * max(CLIENTS))  # warm-up (batch shapes, arenas), not reported
                for clients in CLIENTS:
                    row = run_level(options.grpc_port, clients, requests)
                    row["dynamic_batching"] = batching
                    rows.append(row)
                    print(f"batching={'on ' if batching else 'off'} clients={clients:3d} {row['prompts_per_s']:7.1f} prompts/s "
                          f"p50 {row['p50_ms']:8.1f} ms  p99 {row['p99_ms']:8.1f} ms  failed {row['failed']}", flush=True)
                del server
    on = {r["clients"]: r for r in rows if r["dynamic_batching"]}
    off = {r["clients"]: r for r in rows if not r["dynamic_batching"]}
    ratios = {str(c): on[c]["prompts_per_s"] / off[c]["prompts_per_s"] for c in CLIENTS}
    data = {
        "machine": machine_info(THREADS), "backend": backend, "orig_size": ORIG_SIZE, "queue_delay_us": QUEUE_DELAY_US,
        "requests_per_level": requests, "rows": rows, "batching_on_over_off": ratios,
    }
    stem = f"serve-load-cpu-{backend}"
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{stem}.json").write_text(json.dumps(data, indent=2) + "\n")
    plot(rows, RESULTS / f"{stem}.png", data["machine"], backend)
    print("batching on / off, prompts/s:", {c: f"{r:.2f}x" for c, r in ratios.items()})
    print(f"wrote {RESULTS / stem}.json and .png")


def plot(rows: list[dict], path: Path, machine: dict, backend: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(9, 3.6), dpi=110)
    for batching, style in ((True, "o-"), (False, "s--")):
        mine = sorted((r for r in rows if r["dynamic_batching"] is batching), key=lambda r: r["clients"])
        label = "dynamic batching" if batching else "no batching"
        left.plot([r["clients"] for r in mine], [r["prompts_per_s"] for r in mine], style, label=label)
        right.plot([r["clients"] for r in mine], [r["p99_ms"] for r in mine], style, label=label)
    for axis, title in ((left, "prompts/s"), (right, "p99 latency, ms")):
        axis.set_xscale("log", base=2)
        axis.set_ylim(bottom=0)
        axis.set_xlabel("concurrent clients")
        axis.set_title(title, fontsize=9)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=8)
    figure.suptitle(f"segdeploy serve ({backend}), {machine['cpu']}, {machine['threads']} threads", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 96, sys.argv[2] if len(sys.argv) > 2 else "onnxruntime")
