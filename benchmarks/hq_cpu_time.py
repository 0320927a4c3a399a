"""HQ-SAM: CPU time per prompt of our default graph against segment_anything_hq's own export
(SamOnnxModel, one prompt per call), onnxruntime CPU, one intra-op thread, rounds interleaved.

CPU time (time.process_time of this process, one thread) rather than wall time: on a shared VM the
wall time of a call drifts several-fold with other jobs, its CPU time much less. Usage:
    PYTHONPATH=. python benchmarks/hq_cpu_time.py [VARIANT] [ROUNDS]
"""

from __future__ import annotations

import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from segdeploy.export import ExportOptions, export_onnx
from segdeploy.families.hq.baseline import export_official
from segdeploy.families.hq.weights import load_decoder
from segdeploy.registry import family_of_variant


def session(path: Path) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def cpu_ms(run, repeats: int = 1) -> float:
    start = time.process_time()
    for _ in range(repeats):
        run()
    return 1e3 * (time.process_time() - start)


def main(variant: str = "hq_vit_b", rounds: int = 5) -> dict:
    channels = family_of_variant(variant).channels
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as folder:
        ours = session(export_onnx(ExportOptions(variant=variant, out=Path(folder) / "ours.onnx")).path)
        theirs = session(export_official(load_decoder(variant, None, 0)[0], Path(folder) / "official.onnx"))
        emb = (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32)
        interm = (0.5 * rng.standard_normal((1, 64, 64, channels))).astype(np.float32)

        def feeds(batch: int) -> dict:
            return {
                "image_embeddings": emb, "interm_embeddings": interm,
                "point_coords": (rng.random((batch, 3, 2)) * 1024).astype(np.float32),
                "point_labels": np.tile(np.array([[1, 0, -1]], np.float32), (batch, 1)),
                "mask_input": np.zeros((batch, 1, 256, 256), np.float32), "has_mask_input": np.zeros(batch, np.float32),
                "orig_im_size": np.array([1024, 1024], np.int64),
            }

        official = feeds(1) | {"interm_embeddings": np.broadcast_to(interm[None], (4, 1, 64, 64, channels)).copy(),
                               "orig_im_size": np.array([1024.0, 1024.0], np.float32)}
        one, sixteen = feeds(1), feeds(16)
        times: dict[str, list[float]] = {"ours B=1": [], "ours B=16 per prompt": [], "official per prompt": []}
        for run in (lambda: ours.run(None, one), lambda: ours.run(None, sixteen), lambda: theirs.run(None, official)):
            run()  # warm-up
        for _ in range(rounds):
            times["official per prompt"].append(cpu_ms(lambda: theirs.run(None, official), 2) / 2)
            times["ours B=1"].append(cpu_ms(lambda: ours.run(None, one), 2) / 2)
            times["ours B=16 per prompt"].append(cpu_ms(lambda: ours.run(None, sixteen)) / 16)
    median = {name: statistics.median(values) for name, values in times.items()}
    base = median["official per prompt"]
    result = {"variant": variant, "rounds": rounds, "cpu_ms_median": median,
              "ratio_b1": median["ours B=1"] / base, "ratio_b16_per_prompt": median["ours B=16 per prompt"] / base, "samples": times}
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}, indent=1))
    return result


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "hq_vit_b", int(sys.argv[2]) if len(sys.argv) > 2 else 5)
