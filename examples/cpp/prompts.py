"""Inputs for the C++ example, and a check of its outputs against the Python runner.

    python examples/cpp/prompts.py write PACKAGE.pt2 prompts.bin [--case 5] [--seed 0]
    build/cpp/segdeploy_aoti PACKAGE.pt2 prompts.bin outputs.bin
    python examples/cpp/prompts.py check PACKAGE.pt2 prompts.bin outputs.bin [--atol 1e-4]

`write` draws one row of verify's case matrix (a batch of prompts of the package's family and flavor) and
writes it as a tensor file (segdeploy/aoti/tensorfile.py); `check` runs the same package through
segdeploy's AotiRunner on those inputs and prints the largest difference per output (exit 1 when
one exceeds --atol).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from segdeploy.aoti.sidecar import read_sidecar
from segdeploy.aoti.tensorfile import read_tensors, write_tensors
from segdeploy.errors import SegdeployError
from segdeploy.runners.aoti_runner import AotiRunner


def write(package: Path, out: Path, case: int, seed: int) -> None:
    layout = read_sidecar(package).layout
    drawn = layout.family.draw_cases(np.random.default_rng(seed), case + 1, layout)[-1]
    write_tensors(out, drawn.feeds)
    shapes = ", ".join(f"{name} {list(array.shape)}" for name, array in drawn.feeds.items())
    print(f"wrote {out}: {drawn.spec.name!r}: {shapes}")


def check(package: Path, inputs: Path, outputs: Path, atol: float) -> bool:
    feeds, got = read_tensors(inputs), read_tensors(outputs)
    with AotiRunner.from_package(package) as runner:
        expected = runner.infer(feeds)
    ok = sorted(got) == sorted(expected)
    if not ok:
        print(f"outputs {sorted(got)} are not the package's {sorted(expected)}")
    for name in sorted(set(got) & set(expected)):
        same_shape = got[name].shape == expected[name].shape
        error = float(np.abs(got[name] - expected[name]).max()) if same_shape else float("inf")
        ok &= error <= atol
        print(f"{name:16} {list(got[name].shape)}  max abs difference {error:.2e}  {'ok' if error <= atol else 'FAIL'}")
    return ok


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True)
    writing = commands.add_parser("write", help="draw a batch of prompts into a tensor file")
    writing.add_argument("package", type=Path)
    writing.add_argument("out", type=Path)
    writing.add_argument("--case", type=int, default=5, help="row of verify's case matrix (default 5: ragged mixed prompts)")
    writing.add_argument("--seed", type=int, default=0)
    checking = commands.add_parser("check", help="compare the C++ outputs with the Python runner's")
    checking.add_argument("package", type=Path)
    checking.add_argument("inputs", type=Path)
    checking.add_argument("outputs", type=Path)
    checking.add_argument("--atol", type=float, default=1e-4)
    args = parser.parse_args(argv)
    try:
        if args.command == "write":
            write(args.package, args.out, args.case, args.seed)
            return 0
        return 0 if check(args.package, args.inputs, args.outputs, args.atol) else 1
    except SegdeployError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code


if __name__ == "__main__":
    sys.exit(main())
