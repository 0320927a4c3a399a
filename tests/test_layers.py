"""The package's shape (tools/check_layers.py): families are peers and the core knows none of them."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tools"))

import check_layers  # noqa: E402


@pytest.fixture(scope="module")
def found():
    return check_layers.problems()


@pytest.mark.parametrize("kind", ["import cycles", "upward imports", "cross-family imports", "family names outside families/ and the registry"])
def test_package_shape_holds(found, kind):
    assert found[kind] == [], "\n".join(found[kind])


def test_the_check_sees_what_it_forbids(tmp_path, monkeypatch):
    """Each rule fires on a module that breaks it (written into a copy of the package)."""
    import shutil

    copy = tmp_path / "segdeploy"
    shutil.copytree(check_layers.PACKAGE, copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "contract.py").write_text((copy / "contract.py").read_text() + "\n\ndef _late():\n    from segdeploy.export import ExportOptions\n")
    (copy / "forms.py").write_text((copy / "forms.py").read_text() + '\n\nNAMED = "sam2.1_hiera_tiny"\n')
    (copy / "families" / "sam2" / "rules.py").write_text((copy / "families" / "sam2" / "rules.py").read_text() + "\nfrom segdeploy.families.sam1 import rules as other  # noqa\n")
    (copy / "model" / "common.py").write_text((copy / "model" / "common.py").read_text() + "\n\ndef _back():\n    from segdeploy.families.sam1.model import SamDecoder\n")
    monkeypatch.setattr(check_layers, "PACKAGE", copy)
    monkeypatch.setattr(check_layers, "ROOT", tmp_path)
    found = check_layers.problems()
    assert any("segdeploy.contract" in c and "segdeploy.export" in c for c in found["import cycles"])
    assert any(p.startswith("segdeploy.contract:") and "segdeploy.export (lazily)" in p for p in found["upward imports"])
    assert any(p.startswith("segdeploy.model.common:") for p in found["upward imports"])
    assert any(p.startswith("segdeploy.families.sam2.rules:") for p in found["cross-family imports"])
    assert any(p.startswith("segdeploy.forms:") and "sam2.1_hiera_tiny" in p for p in found["family names outside families/ and the registry"])
