"""Load test of `segdeploy serve` on loopback, 1080p images: today's inline clicks (the embedding with
every click, binary masks of all 3 outputs and their low-res logits) against clicks by image id (the
embedding registered once, then image_id + prompt; COCO RLE of the best mask only), at 1, 8 and 32
concurrent gRPC clients, each on its own image. Reports request and response payload bytes per click,
p50/p99 latency, clicks/s and failures, beside Decoder.predict's own time in-process on the same graph;
writes benchmarks/results/serve-load-cpu.json and .png.

    python benchmarks/serve_load.py [CLICKS_PER_LEVEL]

The decoder is the multi-image graph with seeded random weights: its masks are noisier than a trained
model's, so their RLE is larger than a real click's would be. Bounded: loopback only, stops by itself.
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
ORIG_SIZE = (1080, 1920)
THREADS = 2
QUEUE_DELAY_US = 2000
RESULTS = Path(__file__).parent / "results"
MODES = ("inline", "by_id")


def _click(rng) -> np.ndarray:
    return np.array([[rng.uniform(0, ORIG_SIZE[1]), rng.uniform(0, ORIG_SIZE[0])]], np.float32)


def inline_client(url: str, index: int, count: int, out: dict) -> None:
    """Today's client: the embedding and orig_size with every click; every output comes back."""
    import tritonclient.grpc as grpc

    rng = np.random.default_rng(index)
    client = grpc.InferenceServerClient(url)
    embedding = (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32)
    for _ in range(count):
        feeds = {"image_embeddings": (embedding, "FP32"), "point_coords": (_click(rng)[None], "FP32"),
                 "point_labels": (np.ones((1, 1), np.float32), "FP32"), "orig_size": (np.array([ORIG_SIZE], np.int64), "INT64")}
        tensors = []
        for name, (array, datatype) in feeds.items():
            tensors.append(grpc.InferInput(name, list(array.shape), datatype))
            tensors[-1].set_data_from_numpy(array)
        started = time.perf_counter()
        try:
            result = client.infer("sam_decoder", tensors)
            out["latencies"].append(time.perf_counter() - started)
            out["request_bytes"].append(sum(array.nbytes for array, _ in feeds.values()))
            out["response_bytes"].append(sum(result.as_numpy(n).nbytes for n in ("masks", "scores", "low_res_masks")))
        except Exception as error:  # counted, never hidden
            out["failures"].append(str(error)[:200])
    client.close()


def by_id_client(url: str, index: int, count: int, out: dict) -> None:
    """The id-based client: register once (not timed), then image_id + click, RLE of the best mask."""
    from segdeploy.serving.client import SegdeployClient

    rng = np.random.default_rng(index)
    with SegdeployClient(url) as client:
        image_id = client.add_image((0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32), orig_size=ORIG_SIZE)
        for _ in range(count):
            started = time.perf_counter()
            try:
                client.predict(image_id, point_coords=_click(rng), point_labels=[1], best_only=True, low_res=False)
                out["latencies"].append(time.perf_counter() - started)  # includes decoding the RLE on the client
                out["request_bytes"].append(client.last_request_bytes)
                out["response_bytes"].append(client.last_response_bytes)
            except Exception as error:
                out["failures"].append(str(error)[:200])


def run_level(url: str, mode: str, clients: int, clicks: int) -> dict:
    out: dict[str, list] = {"latencies": [], "request_bytes": [], "response_bytes": [], "failures": []}
    target = inline_client if mode == "inline" else by_id_client
    per_client = max(1, clicks // clients)
    threads = [threading.Thread(target=target, args=(url, 1000 * clients + i, per_client, out)) for i in range(clients)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - started
    ms = np.array(out["latencies"]) * 1000.0
    median = lambda values: float(np.median(values)) if values else None  # noqa: E731
    return {
        "mode": mode, "clients": clients, "clicks": clients * per_client, "failed": len(out["failures"]), "seconds": wall,
        "clicks_per_s": len(ms) / wall, "p50_ms": float(np.percentile(ms, 50)) if len(ms) else None,
        "p99_ms": float(np.percentile(ms, 99)) if len(ms) else None,
        "request_bytes": median(out["request_bytes"]), "response_bytes": median(out["response_bytes"]),
        "response_bytes_max": max(out["response_bytes"]) if out["response_bytes"] else None, "first_failures": out["failures"][:3],
    }


def decoder_ms(source: Path, runs: int = 20) -> float:
    """Decoder.predict's own median time for one click at ORIG_SIZE, in-process, same threads."""
    from segdeploy import Decoder

    rng = np.random.default_rng(0)
    embedding = (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32)
    with Decoder.load(source, threads=THREADS) as decoder:
        times = []
        for run in range(runs + 3):
            started = time.perf_counter()
            decoder.predict(embedding, point_coords=_click(rng), point_labels=np.array([1]), orig_size=ORIG_SIZE)
            if run >= 3:
                times.append(time.perf_counter() - started)
    return float(np.median(times) * 1000.0)


def main(clicks: int) -> None:
    from segdeploy.contract import MaskOutput
    from segdeploy.export import ExportOptions, export_onnx

    rows = []
    with tempfile.TemporaryDirectory(prefix="segdeploy-serve-load-") as scratch:
        source = export_onnx(ExportOptions(out=Path(scratch) / "multi.onnx", multi_image=True, mask_output=MaskOutput.ALL)).path
        local_ms = decoder_ms(source)
        print(f"Decoder.predict in-process, one click at {ORIG_SIZE[0]}x{ORIG_SIZE[1]}: {local_ms:.1f} ms (median)", flush=True)
        options = ServeOptions(source=source, threads=THREADS, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                               max_batch_size=64, max_queue_delay_us=QUEUE_DELAY_US)
        with start_server(options) as server:
            for mode in MODES:
                run_level(server.grpc_url, mode, 8, 16)  # warm-up (batch shapes, arenas), not reported
                for clients in CLIENTS:
                    row = run_level(server.grpc_url, mode, clients, max(clicks, clients))
                    rows.append(row)
                    print(f"{mode:6s} clients={clients:3d} {row['clicks_per_s']:6.1f} clicks/s  p50 {row['p50_ms']:7.1f} ms  p99 {row['p99_ms']:7.1f} ms  "
                          f"request {row['request_bytes']:>9.0f} B  response {row['response_bytes']:>9.0f} B  failed {row['failed']}", flush=True)
    one = {r["mode"]: r for r in rows if r["clients"] == 1}
    data = {
        "machine": machine_info(THREADS), "orig_size": ORIG_SIZE, "queue_delay_us": QUEUE_DELAY_US, "clicks_per_level": clicks,
        "decoder_predict_ms": local_ms, "p50_one_client_over_decoder": {m: one[m]["p50_ms"] / local_ms for m in one}, "rows": rows,
        "note": "random-weight decoder: noisy masks, so RLE responses are larger than a trained model's",
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "serve-load-cpu.json").write_text(json.dumps(data, indent=2) + "\n")
    plot(rows, local_ms, RESULTS / "serve-load-cpu.png", data["machine"])
    print("p50 at one client / Decoder.predict: " + ", ".join(f"{m} {v:.2f}x" for m, v in data["p50_one_client_over_decoder"].items()))
    print(f"wrote {RESULTS / 'serve-load-cpu'}.json and .png")


def plot(rows: list[dict], local_ms: float, path: Path, machine: dict) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6), dpi=110)
    for mode, style in (("inline", "s--"), ("by_id", "o-")):
        mine = sorted((r for r in rows if r["mode"] == mode), key=lambda r: r["clients"])
        x = [r["clients"] for r in mine]
        axes[0].plot(x, [r["clicks_per_s"] for r in mine], style, label=mode)
        axes[1].plot(x, [r["p50_ms"] for r in mine], style, label=f"{mode} p50")
        axes[1].plot(x, [r["p99_ms"] for r in mine], style, alpha=0.5, label=f"{mode} p99")
        axes[2].plot(x, [r["request_bytes"] for r in mine], style, label=f"{mode} request")
        axes[2].plot(x, [r["response_bytes"] for r in mine], style, alpha=0.5, label=f"{mode} response")
    axes[1].axhline(local_ms, color="gray", lw=0.8, label="Decoder.predict")
    axes[2].set_yscale("log")
    for axis, title in zip(axes, ("clicks/s", "latency, ms", "payload bytes per click")):
        axis.set_xscale("log", base=2)
        axis.set_xlabel("concurrent clients")
        axis.set_title(title, fontsize=9)
        axis.grid(True, alpha=0.3)
        axis.legend(fontsize=7)
    figure.suptitle(f"segdeploy serve, 1080p clicks, {machine['cpu']}, {machine['threads']} threads (shared machine)", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    plt.close(figure)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 64)
