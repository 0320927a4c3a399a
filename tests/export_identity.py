"""Byte identity of exports across refactors: every family's graphs, in every form, target, signature,
flavor and precision, hashed (sha256 of the file) and compared with the manifest written before a
change. ``python tests/export_identity.py --write`` records the manifest; ``--check`` compares all of
them (tests/test_export_identity.py runs the same check inside the suite).

The bytes depend on the exporter's toolchain too, so the manifest records torch, onnx and
onnxscript's versions; under other versions the comparison would say nothing about our code.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import tempfile
from pathlib import Path

MANIFEST = Path(__file__).parent / "data" / "export_sha256.json"

# name -> ExportOptions fields (enum values as strings); one variant per family: variants of a family
# share one decoder shape and differ only in the metadata's variant name.
_FAMILY_CONFIGS = {
    "default": {},
    "trt": {"target": "tensorrt"},
    "plain-convtranspose": {"attention": "plain", "upscale": "convtranspose"},
    "plain-matmul": {"attention": "plain", "upscale": "matmul"},
    "fewtoken-convtranspose": {"attention": "fewtoken", "upscale": "convtranspose"},
    "onnx-attention-matmul": {"attention": "onnx", "upscale": "matmul", "opset": 23},
    "onnx-attention-convtranspose": {"attention": "onnx", "upscale": "convtranspose", "opset": 23},
    "fp16": {"precision": "fp16"},
    "fp16-trt": {"precision": "fp16", "target": "tensorrt"},
    "bf16": {"precision": "bf16"},
    "bf16-trt": {"precision": "bf16", "target": "tensorrt"},
    "single": {"mask_output": "single"},
    "all": {"mask_output": "all"},
    "nopost": {"postprocess": False},
    "multi-image": {"multi_image": True, "mask_output": "all"},
    "multi-image-trt-fp16": {"multi_image": True, "target": "tensorrt", "precision": "fp16"},
}
_OFFICIAL_CONFIGS = {
    "official-all": {"signature": "official", "mask_output": "all"},
    "official-best": {"signature": "official", "mask_output": "best"},
    "official-best-trt": {"signature": "official", "mask_output": "best", "target": "tensorrt"},
}
FAMILY_VARIANTS = {"sam1": "sam_vit_b", "sam2": "sam2.1_hiera_tiny"}
OFFICIAL_SIGNATURE_VARIANTS = {"sam1": "sam_vit_b"}


def configs() -> dict[str, dict]:
    """Every graph the manifest covers, by name."""
    result = {}
    for family, variant in FAMILY_VARIANTS.items():
        for name, fields in _FAMILY_CONFIGS.items():
            result[f"{family}/{name}"] = {"variant": variant, **fields}
    for family, variant in OFFICIAL_SIGNATURE_VARIANTS.items():
        for name, fields in _OFFICIAL_CONFIGS.items():
            result[f"{family}/{name}"] = {"variant": variant, **fields}
    return result


def toolchain() -> dict[str, str]:
    import onnx
    import onnxscript
    import torch

    return {"torch": torch.__version__, "onnx": onnx.__version__, "onnxscript": onnxscript.__version__}


def export_options(fields: dict) -> dict:
    """A manifest config's fields as ExportOptions keyword arguments (enum members, not strings)."""
    from segdeploy.contract import MaskOutput, Signature
    from segdeploy.forms import AttentionForm, Precision, Target, UpscaleForm

    kinds = {"mask_output": MaskOutput, "signature": Signature, "attention": AttentionForm,
             "upscale": UpscaleForm, "precision": Precision, "target": Target}
    return {k: kinds[k](v) if k in kinds else v for k, v in fields.items()}


def file_sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def export_sha256(fields: dict, folder: Path) -> str:
    """sha256 of the file ``segdeploy export`` writes for these options."""
    from segdeploy.export import ExportOptions, export_onnx

    path = folder / "graph.onnx"
    export_onnx(ExportOptions(out=path, **export_options(fields)))
    return file_sha256(path)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help="record the manifest from this tree")
    parser.add_argument("--check", action="store_true", help="compare this tree's exports with the manifest")
    args = parser.parse_args()
    manifest = json.loads(MANIFEST.read_text()) if MANIFEST.exists() else {}
    hashes, changed = {}, []
    with tempfile.TemporaryDirectory() as folder:
        for name, fields in configs().items():
            hashes[name] = export_sha256(fields, Path(folder))
            if args.check and manifest.get("graphs", {}).get(name) != hashes[name]:
                changed.append(name)
            print(f"{name}: {hashes[name]}", flush=True)
    if args.write:
        MANIFEST.write_text(json.dumps({"toolchain": toolchain(), "graphs": hashes}, indent=1, sort_keys=True) + "\n")
    if args.check:
        print(f"{len(hashes) - len(changed)}/{len(hashes)} identical" + (f"; changed: {', '.join(changed)}" if changed else ""))
        return 1 if changed or manifest.get("toolchain") != toolchain() else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
