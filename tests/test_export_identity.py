"""Exports stay byte-identical across refactors: every family, form, target, signature, flavor and
precision hashed against tests/data/export_sha256.json (written by ``python tests/export_identity.py
--write`` before the refactor the manifest guards)."""

from __future__ import annotations

import json

import pytest

import export_identity

MANIFEST = json.loads(export_identity.MANIFEST.read_text())


@pytest.fixture(scope="module")
def same_toolchain():
    here, made = export_identity.toolchain(), MANIFEST["toolchain"]
    if {k: v.split("+")[0] for k, v in here.items()} != {k: v.split("+")[0] for k, v in made.items()}:  # a CPU or CUDA build of one torch
        pytest.fail(f"the manifest was made with {made}, this environment has {here}: the bytes also depend on the exporter;"
                    " `make test` installs the pinned versions (pyproject's test extra, the Makefile's TORCH_SPEC)", pytrace=False)


@pytest.mark.parametrize("name", sorted(export_identity.configs()))
def test_export_is_byte_identical(name, same_toolchain, export_graph):
    """The session's shared export of these options (other tests verify the same files)."""
    fields = export_identity.configs()[name]
    path = export_graph(**export_identity.export_options(fields)).path
    assert export_identity.file_sha256(path) == MANIFEST["graphs"][name], f"{name} ({fields}) changed"


def test_manifest_covers_every_config():
    assert set(MANIFEST["graphs"]) == set(export_identity.configs())
