"""The session's exports, each made once by whichever process claims it first: the test process (the
``export_graph`` fixture) or the background process (tests/background_builds.py), which exports the
identity manifest's 35 graphs on the core the suite leaves idle while the early tests run. conftest
moves the tests that read those graphs (its READS_BACKGROUND_EXPORTS) late.

A claim is a file created with O_EXCL; the claimant writes the export's report (pickled) next to the
graph, and any other process asking for the same options waits for that report. Exports are
deterministic, so which process made a graph does not change its bytes (the identity test hashes them).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import time
from dataclasses import replace
from pathlib import Path

WAIT_S = 600.0


def normalized(options):
    """ExportOptions with the form the export would resolve filled in: one key per distinct graph."""
    from segdeploy.forms import DEFAULT_FORMS, default_upscale

    attention = options.attention or DEFAULT_FORMS[options.target][0]
    upscale = options.upscale or default_upscale(options.target, options.precision, options.opset)
    return replace(options, attention=attention, upscale=upscale)


class SharedExports:
    """Exports in ``folder``, shared between the processes of one test session."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)

    def name(self, options) -> str:
        return hashlib.sha256(repr(normalized(options)).encode()).hexdigest()[:20]

    def get(self, options, alive=lambda: True):
        """The ExportReport of ``options`` (``out`` unset): exported here when no one has claimed it,
        else the claimant's. ``alive()`` False means the other claimant can no longer finish."""
        from segdeploy.export import export_onnx

        assert options.out is None, "shared exports choose the file"
        name = self.name(options)
        record = self.folder / f"{name}.pkl"
        try:
            os.close(os.open(self.folder / f"{name}.claim", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            return self._wait(record, alive)
        try:
            outcome = export_onnx(replace(normalized(options), out=self.folder / f"{name}.onnx"))
        except Exception as error:  # recorded for a process waiting on this claim, then raised here
            outcome = error
        partial = record.with_suffix(".part")
        partial.write_bytes(pickle.dumps(outcome))
        partial.rename(record)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome

    def _wait(self, record: Path, alive):
        deadline = time.monotonic() + WAIT_S
        while not record.exists():
            if not alive():
                raise AssertionError(f"the process exporting {record.stem} ended before it finished")
            if time.monotonic() > deadline:
                raise AssertionError(f"{record.stem} not exported after {WAIT_S:.0f} s")
            time.sleep(0.1)
        outcome = pickle.loads(record.read_bytes())
        if isinstance(outcome, Exception):
            raise AssertionError(f"the shared export failed: {type(outcome).__name__}: {outcome}")
        return outcome


def export_all_identity_configs(exports: SharedExports) -> None:
    """The background process's first step: every graph of the identity manifest."""
    import export_identity

    from segdeploy.export import ExportOptions

    for _, fields in sorted(export_identity.configs().items()):
        try:
            exports.get(ExportOptions(**export_identity.export_options(fields)))
        except Exception:  # noqa: BLE001 - recorded for the test that asks for it
            pass
