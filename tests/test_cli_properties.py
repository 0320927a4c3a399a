"""Property tests over each command's options through typer's CliRunner: whatever a user types, the
answer is a result (exit 0, or 1 for a failed check) or one line and exit 2; never a traceback, a
hang or another exit code. Examples per command are printed at the end of the run."""

from __future__ import annotations

import signal

import pytest
from fuzz_counts import TRIED
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from segdeploy.cli import app

runner = CliRunner()
SETTINGS = settings(max_examples=12, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                    phases=[Phase.explicit, Phase.generate])  # no shrinking: a failure prints its command
JUNK = st.sampled_from(["", "x", "1.5", "nan", "inf", "-0", "1e9", "0x10", " 3", "١", "9" * 30, "-" + "9" * 30, "--help-me"])


def ints(low: int, high: int | None = None) -> st.SearchStrategy[str]:
    """An int option's text: below its range, above it, a few valid values, or junk."""
    parts = [st.integers(max_value=low - 1), st.integers(low, low + 2)]
    if high is not None:
        parts.append(st.integers(min_value=high + 1))
    return st.one_of(*[p.map(str) for p in parts], JUNK)


def texts(*good: str) -> st.SearchStrategy[str]:
    return st.one_of(st.sampled_from(good), JUNK, st.text(alphabet="0123456789x:,-abc ", max_size=12))


@pytest.fixture(scope="module")
def paths(exported, tmp_path_factory) -> dict[str, str]:
    folder = tmp_path_factory.mktemp("fuzz")
    (folder / "empty.onnx").write_bytes(b"")
    (folder / "junk.onnx").write_bytes(b"\x08\x07garbage" * 10)
    (folder / "text.plan").write_text("not a plan")
    (folder / "a_dir.onnx").mkdir()
    return {"graph": str(exported.path), "missing": str(folder / "missing.onnx"), "empty": str(folder / "empty.onnx"),
            "junk": str(folder / "junk.onnx"), "plan": str(folder / "text.plan"), "dir": str(folder / "a_dir.onnx"),
            "out": str(folder / "out")}


def path_choice(paths: dict[str, str]) -> st.SearchStrategy[str]:
    return st.sampled_from(sorted(paths.values()))


class Hang(Exception):
    pass


def check(command: str, args: list[str], allowed=(0, 2)) -> None:
    """Run the command; assert it ends as a user expects."""
    TRIED[command] += 1

    def hang(*_):
        raise Hang(f"{command} {args} ran past 60 s")

    previous = signal.signal(signal.SIGALRM, hang)
    signal.alarm(60)
    try:
        result = runner.invoke(app, [command, *args])
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    shown = f"segdeploy {command} {' '.join(args)}\n{result.output}"
    assert result.exception is None or isinstance(result.exception, SystemExit), f"{shown}\n{result.exception!r}"
    assert "Traceback" not in result.output, shown
    assert result.exit_code in allowed, shown
    if result.exit_code == 2:
        lines = [line for line in result.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and lines[0].startswith("error: "), shown


def options(draw, table: dict[str, st.SearchStrategy[str]], base: dict[str, str], count: int = 2) -> list[str]:
    """``base`` with up to ``count`` options replaced by drawn values."""
    chosen = draw(st.lists(st.sampled_from(sorted(table)), min_size=1, max_size=count, unique=True))
    values = dict(base)
    for name in chosen:
        values[name] = draw(table[name])
    return [part for name, value in values.items() for part in (name, value)]


@SETTINGS
@given(data=st.data())
def test_export(paths, tmp_path_factory, data):
    table = {
        "--seed": ints(0, 2**63 - 1), "--opset": ints(17, 23), "--variant": texts("vit_b", "mobile_sam", "nope"),
        "--mask-output": texts("multi", "single", "all", "best"), "--target": texts("onnxruntime", "tensorrt"),
        "--attention": texts("plain", "fewtoken", "onnx"), "--upscale": texts("matmul", "convtranspose"),
        "--precision": texts("fp32", "fp16", "bf16"), "--signature": texts("segdeploy", "official"),
        "--checkpoint": path_choice(paths), "--out": st.sampled_from([paths["dir"], paths["plan"] + "/x.onnx", paths["out"] + "/e.onnx"]),
    }
    args = options(data.draw, table, {"--out": paths["out"] + "/e.onnx"})
    check("export", args + data.draw(st.sampled_from([[], ["--multi-image"], ["--no-postprocess"]])))


@SETTINGS
@given(data=st.data())
def test_verify(paths, data):
    table = {"--cases": ints(1, 10000), "--seed": ints(0, 2**63 - 1), "--threads": ints(1, 1024),
             "--onnx": path_choice(paths), "--engine": path_choice(paths), "--checkpoint": path_choice(paths),
             "--backend": texts("onnxruntime", "onnx-reference", "tensorrt")}
    base = {"--onnx": paths["graph"], "--cases": "1", "--seed": "1"}
    args = options(data.draw, table, base)
    if "--backend" in args and args[args.index("--backend") + 1] == "onnx-reference":
        args += ["--cases", "1"]  # the numpy evaluator is slow: one case
    check("verify", args, allowed=(0, 1, 2))


@SETTINGS
@given(data=st.data())
def test_info_lint_inspect(paths, data):
    command = data.draw(st.sampled_from(["info", "lint", "inspect"]))
    args = [data.draw(path_choice(paths))]
    if command == "lint":
        args += options(data.draw, {"--target": texts("tensorrt", "onnxruntime"), "--trt-version": texts("10.14", "8.6", "99", "10")}, {})
    if command == "inspect":
        args += ["--onnx", data.draw(path_choice(paths))]
    check(command, args + data.draw(st.sampled_from([[], ["--json"]])), allowed=(0, 1, 2) if command == "lint" else (0, 2))


@SETTINGS
@given(data=st.data())
def test_bench(paths, tmp_path_factory, data):
    table = {"--threads": ints(1, 1024), "--runs": ints(1, 100000), "--warmup": ints(0, 10000), "--images": ints(1, 4096),
             "--prompts": texts("1", "1,2", "0", "5000", "-1", "1,,2"), "--points": texts("2", "1,3", "65", "0"),
             "--orig-size": texts("32x32", "1x5000", "0x5", "30000x30000", "64", "8x8x8"),
             "--backend": texts("onnxruntime", "torch", "tensorrt", "aoti"), "--onnx": path_choice(paths),
             "--baseline": texts("official", "/nonexistent.onnx"), "--name": texts("b", "../x", ""),
             "--out-dir": st.sampled_from([paths["out"] + "/bench", paths["plan"]])}
    base = {"--onnx": paths["graph"], "--prompts": "1", "--points": "2", "--runs": "1", "--warmup": "0", "--orig-size": "32x32",
            "--out-dir": paths["out"] + "/bench"}
    check("bench", options(data.draw, table, base))


@SETTINGS
@given(data=st.data())
def test_build_engine(paths, data):
    table = {"--prompts": texts("1:16:64", "0:1:2", "4:2:1", "1:2", "x"), "--points": texts("1:4:16", "1"),
             "--orig-size": texts("16:1024:4096", "1x5000", "0", "64x64:32x32:16x16"), "--images": texts("1:4:16", "0:0:0"),
             "--opt-level": ints(0, 5), "--workspace": ints(1, 1 << 20), "--hardware-compat": texts("none", "ampere+", "x"),
             "--runtime": texts("tensorrt", "aoti"), "--device": texts("cpu", "cuda"), "--onnx": path_choice(paths),
             "--trt-version": texts("10.14", "8.6", "x"), "--out": texts("e.plan", "e.pt2")}
    flags = data.draw(st.lists(st.sampled_from(["--fp16", "--bf16", "--fp32", "--weak-typing", "--allow-lint-errors"]), max_size=2, unique=True))
    check("build-engine", options(data.draw, table, {"--onnx": paths["graph"]}) + flags + ["--print-trtexec"])


@SETTINGS
@given(data=st.data())
def test_triton_repo(paths, tmp_path_factory, data):
    table = {"--max-batch-size": ints(1, None), "--max-queue-delay-us": ints(0, None), "--instances": ints(1, None),
             "--backend": texts("python", "onnxruntime", "tensorrt"), "--kind": texts("KIND_CPU", "KIND_GPU"),
             "--out": st.sampled_from([paths["plan"], paths["dir"], "fresh"])}
    args = options(data.draw, table, {"--out": "fresh"})
    where = args.index("--out") + 1
    if args[where] == "fresh":
        args[where] = str(tmp_path_factory.mktemp("repo"))
    check("triton-repo", [data.draw(path_choice(paths))] + args)
