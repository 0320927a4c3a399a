"""Every command in README.md's fenced code blocks runs as documented, on a CPU machine, in a fresh folder.

Shell blocks (unlabelled, ``sh``, ``bash``, ``shell``, ``console``) run line by line in document order,
all in one temporary folder that is the working directory, so ``export/``, ``engines/`` and
``benchmarks/results/`` land there and nothing is read from the repository's own ``export/``. A line
may chain commands with ``&&``; globs expand as the shell would. The graphs hold the default random
weights. ``python`` blocks run as scripts with this interpreter, in the same folder and order. A shell block
with lines starting ``$ `` is a transcript: those lines are the commands, the lines under one are
what it prints, and they must appear in its output (an ``error:`` line shown means exit 2, that line).

A command fails the test when it exits non-zero or prints a Python traceback. A ``segdeploy`` command
runs as a process of its own forked from one that has imported torch, onnx and onnxruntime already
(tests/forked_cli.py: its own folder, environment, output and exit code; ~2.5 s less per command).
Beyond that:

- ``SMALL_FLAGS`` appends flags per subcommand so sizes stay small (typer keeps an option's last value),
  so a new README command is covered without touching this file.
- A command that needs TensorRT and a GPU (``needs_tensorrt``) must stop with exit 2 and one
  ``error:`` line naming the TensorRT extra where they are missing; where they are present it is
  skipped (``make test-gpu``). A ``.plan`` such a command reads is given a stand-in file and sidecar
  when none exists (no build here can write one), so it fails for the missing TensorRT, not for the
  missing file.
- ``pip install`` lines are not run (a test never installs packages); the extras they name must exist.
- A line ending in `` &`` (a server, ``segdeploy serve``) starts in the background: the test waits for
  its first line of output (the server says where it listens once it is ready), runs the blocks after
  it against it, and at the end sends SIGTERM, which must stop it with exit 0 and no traceback.
- ``make TARGET`` runs the target's recipe from the Makefile in this environment (its ``setup``
  prerequisite, which creates .venv, is not run). ``make test`` is skipped: it is the suite this test
  is part of.
- A ``--checkpoint FILE`` that does not exist is created as a decoder-only checkpoint of seeded random
  weights (seed 1) under that name, so loading it, the sha256 check and verify run for real instead of
  stopping at "checkpoint not found".
- A placeholder ``DIR/<name>`` becomes the newest matching file under DIR (``<graph>``: .onnx,
  ``<plan>``: .plan), or a missing path with that suffix where DIR has none.
- An export whose parsed options (defaults filled in) match one already run is not run again
  (exports are deterministic, byte-identical); its file is touched, so "the newest under export/"
  picks it as a rerun would.
- What the session already built is reused, not built again: an AOTInductor build of a graph whose
  bytes and ranges equal the session's package (tests/conftest.py ``package``) copies that package
  and its sidecar to the command's output (the sidecar then names this folder's graph); the C++
  example's ``cmake -S examples/cpp -B DIR`` copies the session's build (``cpp_example``) to DIR, and
  ``cmake --build DIR`` finds it built. The commands that use them (verify, bench, the C++ binary,
  ``prompts.py``) run for real.

``SEGDEPLOY_README`` points the test at another README (e.g. a copy with a command broken on purpose).
"""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import signal
import subprocess
import threading
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import _has_tensorrt_and_gpu
from forked_cli import run_segdeploy

ROOT = Path(__file__).resolve().parent.parent
README = Path(os.environ.get("SEGDEPLOY_README", ROOT / "README.md"))
SHELL_LANGUAGES = {"", "sh", "bash", "shell", "console"}
SMALL_FLAGS = {
    "verify": ["--cases", "2"],
    "bench": ["--prompts", "1", "--points", "2", "--runs", "1", "--warmup", "0", "--orig-size", "64x64"],
}
PLACEHOLDER_SUFFIXES = {"graph": ".onnx", "onnx": ".onnx", "plan": ".plan", "engine": ".plan"}
SKIPPED_MAKE_TARGETS = {"test": "the test suite this test is part of", "test-gpu": "needs a GPU and TensorRT"}
TIMEOUT_S = 300
TRACEBACK = "Traceback (most recent call last)"


@dataclass
class Block:
    language: str
    text: str
    line: int  # line number of the block's first content line


@dataclass
class Outcome:
    line: int
    command: str
    exit_code: int | None = None  # None: not run
    seconds: float = 0.0
    note: str = ""
    problem: str | None = None


def fenced_blocks(markdown: str) -> list[Block]:
    """The fenced code blocks of a markdown text, with their language and first line number."""
    blocks, current, language, start = [], None, "", 0
    for number, line in enumerate(markdown.splitlines(), 1):
        if line.startswith("```"):
            if current is None:
                current, language, start = [], line[3:].strip().lower(), number + 1
            else:
                blocks.append(Block(language, "\n".join(current), start))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def needs_tensorrt(argv: list[str]) -> bool:
    """segdeploy commands that need TensorRT and a GPU (the README says: exit 2 without them);
    AOTInductor builds (``--runtime aoti``) and ``.pt2`` engines run on the CPU."""
    if argv[:1] != ["segdeploy"] or len(argv) < 2:
        return False
    options = dict(zip(argv, argv[1:]))
    if options.get("--runtime") == "aoti" or options.get("--engine", "").endswith(".pt2"):
        return False
    build = argv[1] == "build-engine" and "--print-trtexec" not in argv
    backend_tensorrt = any(a == "--backend" and b == "tensorrt" for a, b in zip(argv, argv[1:]))
    return build or argv[1] == "inspect" or "--engine" in argv or backend_tensorrt


def make_recipe(target: str, makefile: Path) -> list[str]:
    """The target's recipe lines with the Makefile's variables expanded."""
    text = makefile.read_text()
    variables = dict(re.findall(r"^(\w+)\s*[:?]?=\s*(.*?)\s*$", text, re.M))
    match = re.search(rf"^{re.escape(target)}:.*\n((?:\t.*\n?)*)", text, re.M)
    if match is None:
        raise ValueError(f"no target {target!r} in {makefile}")

    def expand(text: str) -> str:
        return re.sub(r"\$\((\w+)\)", lambda m: expand(variables.get(m.group(1), "")), text)

    return [expand(line).strip() for line in match.group(1).splitlines()]


def export_key(argv: list[str]) -> tuple | None:
    """A `segdeploy export` command's parsed options, defaults filled in (`--opset 17` and none give
    the same key, as they give the same file); None for other commands or ones that do not parse."""
    if argv[:2] != ["segdeploy", "export"]:
        return None
    import typer.main

    from segdeploy.cli import app

    command = typer.main.get_command(app).commands["export"]
    try:
        params = command.make_context("export", list(argv[2:])).params
    except Exception:  # a usage error: click's, or the click typer vendors
        return None
    return tuple(sorted((name, str(value)) for name, value in params.items()))


def write_random_checkpoint(path: Path, variant: str | None) -> None:
    """A decoder-only checkpoint of seeded random weights (.safetensors or torch.save)."""
    import torch

    from segdeploy.registry import default_variant, load_decoder

    state = {k: v.contiguous() for k, v in load_decoder(variant or default_variant(), None, 1)[0].state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".safetensors":
        from safetensors.torch import save_file

        save_file(state, str(path))
    else:
        torch.save(state, path)


class ReadmeChecker:
    """Runs a README's commands in ``workdir`` and records one Outcome per command."""

    def __init__(self, workdir: Path, tensorrt_here: bool = False, package: Path | None = None, cpp_build: Path | None = None) -> None:
        self.workdir = workdir
        self.tensorrt_here = tensorrt_here
        self.package = package  # an AOTInductor package the session built (its sidecar says from what)
        self.cpp_build = cpp_build  # the session's build folder of examples/cpp
        self.env = dict(os.environ, PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
        self.exports: dict[tuple[str, ...], Path] = {}
        self.outcomes: list[Outcome] = []
        self.background: list[tuple[Outcome, subprocess.Popen, list[str]]] = []

    def check(self, markdown: str) -> list[Outcome]:
        try:
            for block in fenced_blocks(markdown):
                if block.language in SHELL_LANGUAGES:
                    for number, line, shown in shell_lines(block):
                        self.run_line(line, number, shown)
                elif block.language == "python":
                    self.run_python(block)
        finally:
            self.stop_background()
        return self.outcomes

    def start_background(self, argv: list[str], number: int) -> None:
        """Start a server command; wait for its first line of output (it prints once ready)."""
        argv = self.expand(argv)
        outcome = Outcome(number, shlex.join(argv) + " &", note="in the background")
        self.outcomes.append(outcome)
        process = subprocess.Popen(argv, cwd=self.workdir, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        lines: list[str] = []
        first_line = threading.Event()

        def read() -> None:
            for line in process.stdout:
                lines.append(line)
                first_line.set()
            first_line.set()

        threading.Thread(target=read, daemon=True).start()
        if not first_line.wait(TIMEOUT_S) or process.poll() is not None:
            outcome.problem = f"background command did not come up (exit {process.poll()}): " + tail("".join(lines))
            process.kill()
            return
        self.background.append((outcome, process, lines))

    def stop_background(self) -> None:
        for outcome, process, lines in self.background:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(60)
            except subprocess.TimeoutExpired:
                process.kill()
                outcome.problem = "did not stop within 60 s of SIGTERM"
                continue
            time.sleep(0.2)  # the reader thread takes the last lines
            outcome.exit_code = process.returncode
            output = "".join(lines)
            if TRACEBACK in output:
                outcome.problem = "printed a traceback: " + tail(output)
            elif process.returncode != 0:
                outcome.problem = f"exit {process.returncode} after SIGTERM: " + tail(output)
        self.background = []

    def run_line(self, line: str, number: int, shown: Sequence[str]) -> None:
        """Run a line's commands; ``shown`` is the output the README prints for its last one."""
        try:
            words = shlex.split(line, comments=True)
        except ValueError as error:
            self.outcomes.append(Outcome(number, line, problem=f"cannot be parsed as a shell line: {error}"))
            return
        if words and words[-1] == "&":
            self.start_background(words[:-1], number)
            return
        commands, current = [], []
        for word in [*words, "&&"] if words else []:
            if word == "&&":
                commands.append(current)
                current = []
            else:
                current.append(word)
        commands = [argv for argv in commands if argv]
        for index, argv in enumerate(commands):
            if not self.run_command(argv, number, shown if index == len(commands) - 1 else []):
                return  # `&&`: the rest of the line runs only after a success

    def run_command(self, argv: list[str], number: int, shown: Sequence[str] = ()) -> bool:
        """Run one command (or what it stands for); False when a chain must stop there."""
        outcome = Outcome(number, shlex.join(argv))
        self.outcomes.append(outcome)
        if argv[0] == "pip":
            named = [group.split(",") for word in argv for group in re.findall(r"segdeploy\[([\w,-]+)\]", word)]
            extras = {extra for group in named for extra in group}
            unknown = extras - set(importlib.metadata.metadata("segdeploy").get_all("Provides-Extra") or [])
            outcome.note = "not run: installs packages"
            outcome.problem = f"unknown extras {sorted(unknown)}" if unknown else None
            return True
        if argv[0] == "make":
            target = next((word for word in argv[1:] if "=" not in word), "setup")
            if target in SKIPPED_MAKE_TARGETS:
                outcome.note = f"not run: {SKIPPED_MAKE_TARGETS[target]}"
                return True
            outcome.note = "runs its recipe (below)"
            return all(self.run_command(shlex.split(line), number) for line in make_recipe(target, ROOT / "Makefile"))
        argv = self.expand(argv)
        outcome.command = shlex.join(argv)
        if needs_tensorrt(argv) and self.tensorrt_here:
            outcome.note = "not run: TensorRT is here (make test-gpu)"
            return True
        if needs_tensorrt(argv):
            self.stand_in_plans(argv)
        reused = self.reuse(argv)
        if reused:
            outcome.note = reused
            return True
        key = export_key(argv)
        if key in self.exports:
            self.exports[key].touch()
            outcome.note = "same export ran before; touched its file"
            return True
        started = time.perf_counter()
        try:
            if argv[0] == "segdeploy":  # its own process, forked with the heavy imports done (tests/forked_cli.py)
                result = run_segdeploy(argv, cwd=self.workdir, env=self.env, timeout=TIMEOUT_S)
            else:
                result = subprocess.run(argv, cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S)
        except (OSError, subprocess.TimeoutExpired) as error:
            outcome.problem = f"did not run: {error}"
            return False
        outcome.seconds = time.perf_counter() - started
        outcome.exit_code = result.returncode
        outcome.problem = self.judge(argv, result, shown)
        written = re.search(r"^wrote (\S+)", result.stdout, re.M)
        if key is not None and result.returncode == 0 and written:
            self.exports[key] = self.workdir / written.group(1)
        return result.returncode == 0 and outcome.problem is None

    def reuse(self, argv: list[str]) -> str | None:
        """Stand in for a build the session already made (see the module docstring); the note, or None."""
        import json
        import shutil

        options = dict(zip(argv, argv[1:]))
        if self.cpp_build is not None and argv[:2] == ["cmake", "-S"] and options.get("-S", "").endswith("examples/cpp") and "-B" in options:
            shutil.copytree(self.cpp_build.parent, self.workdir / options["-B"], dirs_exist_ok=True)
            return "reused the session's build of examples/cpp"
        if self.cpp_build is not None and argv[:2] == ["cmake", "--build"] and (self.workdir / argv[2] / self.cpp_build.name).exists():
            return "built already (the session's build)"
        if self.package is None or argv[:2] != ["segdeploy", "build-engine"] or options.get("--runtime") != "aoti":
            return None
        from conftest import AOTI_RANGES

        from segdeploy.weights import file_sha256

        graph = self.workdir / options["--onnx"] if "--onnx" in options else max(
            (self.workdir / "export").glob("*.onnx"), key=lambda p: p.stat().st_mtime, default=None)
        sidecar = json.loads(self.package.with_suffix(".json").read_text())
        ranges = [word for word in argv[2:] if word not in ("--runtime", "aoti")]
        if graph is None or not graph.is_file() or ranges != AOTI_RANGES or file_sha256(graph) != sidecar["onnx_sha256"]:
            return None
        out = self.workdir / "engines" / f"{graph.stem}_aoti_cpu.pt2"
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(self.package, out)
        out.with_suffix(".json").write_text(json.dumps({**sidecar, "onnx_path": str(graph.relative_to(self.workdir))}, indent=2))
        return f"reused the session's identical AOTInductor package (same graph bytes, same ranges) as {out.relative_to(self.workdir)}"

    def stand_in_plans(self, argv: list[str]) -> None:
        """A ``.plan`` a TensorRT command reads that no build here could write: a stand-in file and a
        sidecar naming the newest export, so the command gets past "engine not found" to what the
        README promises (the TensorRT it lacks)."""
        from test_tensorrt_cpu import sidecar

        from segdeploy.weights import file_sha256

        graph = max((self.workdir / "export").glob("*.onnx"), key=lambda p: p.stat().st_mtime, default=None)
        reads = argv[2:] if argv[1] == "inspect" else [b for a, b in zip(argv, argv[1:]) if a == "--engine"]
        for word in reads:
            plan = self.workdir / word
            if graph is None or plan.suffix != ".plan" or plan.exists():
                continue
            plan.parent.mkdir(parents=True, exist_ok=True)
            plan.write_bytes(b"a stand-in: no TensorRT here to build the real plan")
            plan.with_suffix(".json").write_text(sidecar(onnx_path=str(graph.relative_to(self.workdir)), onnx_sha256=file_sha256(graph)).to_json())

    def expand(self, argv: list[str]) -> list[str]:
        """Paths to this environment's tools, globs, placeholders, missing checkpoints, small sizes."""
        program = Path(argv[0])
        argv = [program.name if program.parent.name == "bin" else argv[0], *argv[1:]]
        if argv[0] in ("python", "python3"):
            argv[0] = sys.executable
        expanded = [argv[0]]
        for word in argv[1:]:
            if re.fullmatch(r"(?:[^<>]*/)?<\w+>", word):
                expanded.append(self.fill_placeholder(word))
            elif word.startswith("examples/"):  # the repository's examples, from the fresh folder
                expanded.append(str(ROOT / word))
            elif any(c in word for c in "*?["):
                expanded += sorted(str(p.relative_to(self.workdir)) for p in self.workdir.glob(word)) or [word]
            else:
                expanded.append(word)
        options = dict(zip(expanded, expanded[1:]))
        if "--checkpoint" in options and not (self.workdir / options["--checkpoint"]).exists():
            write_random_checkpoint(self.workdir / options["--checkpoint"], options.get("--variant"))
        if argv[0] == "segdeploy" and len(argv) > 1:
            expanded += SMALL_FLAGS.get(argv[1], [])
        return expanded

    def fill_placeholder(self, word: str) -> str:
        folder, _, name = word.rpartition("/")
        name = name.strip("<>")
        suffix = PLACEHOLDER_SUFFIXES.get(name, "")
        files = sorted((self.workdir / (folder or ".")).glob(f"*{suffix}"), key=lambda p: p.stat().st_mtime)
        return str(files[-1].relative_to(self.workdir)) if files else word.replace("<", "").replace(">", "") + suffix

    def judge(self, argv: list[str], result: subprocess.CompletedProcess, shown: Sequence[str] = ()) -> str | None:
        """The problem with a command's result, or None."""
        output = result.stdout + result.stderr
        if TRACEBACK in output:
            return "printed a traceback: " + tail(output)
        missing = [line for line in shown if line.strip() not in output]
        if missing:
            return f"does not print what the README shows: {missing[0]!r}; it printed: " + tail(output)
        if any(line.startswith("error: ") for line in shown):
            lines = result.stderr.strip().splitlines()
            if result.returncode != 2 or len(lines) != 1:
                return f"README shows an error: expected exit 2 and that one line, got exit {result.returncode}: " + tail(output)
            return None
        if needs_tensorrt(argv):
            lines = result.stderr.strip().splitlines()
            if result.returncode != 2 or len(lines) != 1 or not lines[0].startswith("error: ") or "segdeploy[tensorrt]" not in lines[0]:
                return f"needs TensorRT: expected exit 2 and one 'error:' line naming the TensorRT extra, got exit {result.returncode}: " + tail(output)
            return None
        return None if result.returncode == 0 else f"exit {result.returncode}: " + tail(output)

    def run_python(self, block: Block) -> None:
        script = self.workdir / f"readme_block_line{block.line}.py"
        script.write_text(block.text + "\n")
        outcome = Outcome(block.line, f"python block at line {block.line}")
        self.outcomes.append(outcome)
        started = time.perf_counter()
        try:
            result = subprocess.run([sys.executable, script.name], cwd=self.workdir, env=self.env, capture_output=True, text=True, timeout=TIMEOUT_S)
        except subprocess.TimeoutExpired as error:
            outcome.problem = f"did not finish: {error}"
            return
        outcome.seconds = time.perf_counter() - started
        outcome.exit_code = result.returncode
        outcome.problem = self.judge([sys.executable, script.name], result) or unprinted(block.text, result.stdout)


def printed_comments(code: str) -> list[str]:
    """What a Python block's ``print(...)  # shown`` lines say they print, in order."""
    return [m.group(1).strip() for m in re.finditer(r"^[ \t]*print\(.*\)[ \t]*#[ \t]*(.+)$", code, re.M)]


def unprinted(code: str, stdout: str) -> str | None:
    """The first shown output that the block does not print (each in a later line than the one before)."""
    lines = stdout.splitlines()
    position = 0
    for shown in printed_comments(code):
        while position < len(lines) and shown not in lines[position]:
            position += 1
        if position == len(lines):
            return f"does not print what the README shows: {shown!r}; it printed: " + tail(stdout)
        position += 1
    return None


def shell_lines(block: Block) -> list[tuple[int, str, list[str]]]:
    """(line number, command line, the output shown after it) for each command of a shell block.

    A block with lines starting ``$ `` is a transcript: those lines are commands, the others the
    output the command above them prints. Otherwise every non-empty line is a command.
    """
    lines = block.text.splitlines()
    transcript = any(line.startswith("$ ") for line in lines)
    commands: list[tuple[int, str, list[str]]] = []
    for offset, line in enumerate(lines):
        if transcript and not line.startswith("$ "):
            if commands and line.strip():
                commands[-1][2].append(line)
        elif line.strip():
            commands.append((block.line + offset, line.removeprefix("$ "), []))
    return commands


def tail(text: str, lines: int = 4) -> str:
    return " | ".join(text.strip().splitlines()[-lines:])[-600:]


def render(outcomes: list[Outcome]) -> str:
    rows = []
    for o in outcomes:
        status = "FAIL " + o.problem if o.problem else (o.note or f"exit {o.exit_code}")
        rows.append(f"README:{o.line:<4} {o.seconds:5.1f}s  {o.command}  -> {status}")
    return "\n".join(rows)


def check_readme(readme: Path, workdir: Path, package: Path | None = None, cpp_build: Path | None = None) -> list[Outcome]:
    """Run every command of ``readme`` in ``workdir``; one Outcome per command, problems included."""
    return ReadmeChecker(workdir, tensorrt_here=_has_tensorrt_and_gpu(), package=package, cpp_build=cpp_build).check(readme.read_text())


def test_every_readme_command_runs(tmp_path, package, cpp_example):
    outcomes = check_readme(README, tmp_path, package, cpp_example)
    print(render(outcomes))
    problems = [o for o in outcomes if o.problem]
    assert not problems, "README commands that do not work as documented:\n" + render(problems)
    ran = [o.command for o in outcomes if o.exit_code is not None]
    assert any(c.startswith("segdeploy export") for c in ran) and any(c.startswith("segdeploy verify") for c in ran)


BROKEN_README = """\
# A README with mistakes

```
segdeploy --version          # fine
segdeploy info --no-such-option x.onnx
segdeploy build-engine --help
pip install 'segdeploy[nonexistent]'
```

```text
this is output, not a command
```

```
$ segdeploy --version
segdeploy 0.0.0-not-this
```

```python
import segdeploy_has_no_such_module
```

```python
print((3, 4))  # (3, 4)
print("shape", (2, 256, 256))  # (3, 256, 256)
```
"""


def test_checker_reports_broken_commands(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(BROKEN_README)
    work = tmp_path / "work"
    work.mkdir()
    outcomes = {o.line: o for o in ReadmeChecker(work, tensorrt_here=False).check(readme.read_text())}
    assert sorted(outcomes) == [4, 5, 6, 7, 15, 20, 24]  # the text block is not run
    assert outcomes[4].problem is None and outcomes[4].exit_code == 0
    assert outcomes[5].problem.startswith("exit 2")
    assert outcomes[6].problem.startswith("needs TensorRT: expected exit 2 and one 'error:' line")  # help text, exit 0
    assert outcomes[7].problem == "unknown extras ['nonexistent']"
    assert outcomes[15].problem.startswith("does not print what the README shows: 'segdeploy 0.0.0-not-this'")
    assert outcomes[20].problem.startswith("printed a traceback") and "segdeploy_has_no_such_module" in outcomes[20].problem
    assert outcomes[24].problem.startswith("does not print what the README shows: '(3, 256, 256)'")  # the first print matched


def test_printed_comments_are_matched_in_order():
    code = "x = 1\nprint(x)  # 1\nfor i in range(2):\n    print(i, 'b')  # b\nprint('end')\n\n# a comment line, not what a print shows\n"
    assert printed_comments(code) == ["1", "b"]
    assert unprinted(code, "1\n0 b\n1 b\nend\n") is None
    assert unprinted(code, "0 b\n1\n") is not None  # 'b' must come after '1'



def test_make_demo_expands_to_its_recipe():
    recipe = make_recipe("demo", ROOT / "Makefile")
    assert recipe and all(line.startswith(".venv/bin/segdeploy ") for line in recipe)


def test_tensorrt_commands_are_recognised():
    assert needs_tensorrt(["segdeploy", "build-engine"]) and not needs_tensorrt(["segdeploy", "build-engine", "--print-trtexec"])
    assert needs_tensorrt(["segdeploy", "bench", "--backend", "tensorrt"]) and not needs_tensorrt(["segdeploy", "bench"])
    assert not needs_tensorrt(["segdeploy", "build-engine", "--runtime", "aoti"])
    assert not needs_tensorrt(["segdeploy", "verify", "--engine", "engines/x.pt2"])
    assert needs_tensorrt(["segdeploy", "verify", "--engine", "engines/x.plan"])


@pytest.mark.parametrize("language", ["", "bash", "python", "text"])
def test_fenced_blocks_keep_language_and_line(language):
    blocks = fenced_blocks(f"intro\n\n```{language}\nfirst\nsecond\n```\n")
    assert [(b.language, b.text, b.line) for b in blocks] == [(language, "first\nsecond", 4)]


def test_an_export_is_keyed_by_its_parsed_options():
    fp16 = ["segdeploy", "export", "--target", "tensorrt", "--precision", "fp16"]
    assert export_key(fp16) == export_key([*fp16, "--opset", "17"])  # the default, spelled out
    assert export_key(fp16) != export_key(["segdeploy", "export"])
    assert export_key(["segdeploy", "export", "--no-such-option"]) is None and export_key(["segdeploy", "info"]) is None
