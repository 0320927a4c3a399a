"""Decoder families: each one (``sam1``: SAM and MobileSAM; ``sam2``: SAM 2 and SAM 2.1) keeps its
model, I/O contract, case matrix, checkpoint key mapping and pre/postprocessing rules in its own
folder, behind the :class:`~segdeploy.families.base.Family` interface. Export, verify, bench, the
TensorRT profiles and the runtime read a graph's family from its ``family`` metadata key (absent
means ``sam1``, so every graph written before families existed stays a SAM 1 graph).

Importing this package is light: a family's module is imported on first use, and its heavy
dependencies (torch) only inside the methods that need them.
"""

from __future__ import annotations

import importlib
from functools import cache
from typing import TYPE_CHECKING

from segdeploy.errors import BadInputError

if TYPE_CHECKING:
    from segdeploy.families.base import Family

FAMILY_NAMES = ("sam1", "sam2")
DEFAULT_FAMILY = "sam1"
META_KEY = "family"


@cache
def get_family(name: str) -> Family:
    """The family called ``name``; BadInputError for an unknown one."""
    if name not in FAMILY_NAMES:
        raise BadInputError(f"unknown decoder family {name!r}; this segdeploy knows {', '.join(FAMILY_NAMES)}")
    return importlib.import_module(f"segdeploy.families.{name}").FAMILY


def all_variants() -> tuple[str, ...]:
    """Every variant name of every family, SAM 1's first."""
    return tuple(v for name in FAMILY_NAMES for v in _variant_names(name))


def family_of_variant(variant: str) -> str:
    """The family a variant belongs to; BadInputError naming every variant for an unknown one."""
    for name in FAMILY_NAMES:
        if variant in _variant_names(name):
            return name
    raise BadInputError(f"unknown variant {variant!r}; choose one of {', '.join(all_variants())}")


def family_from_metadata(metadata: dict[str, str], source: str = "the graph") -> str:
    """The family a graph's metadata names (absent: sam1)."""
    name = metadata.get(META_KEY) or DEFAULT_FAMILY
    if name not in FAMILY_NAMES:
        raise BadInputError(f"{source} is a {name!r} decoder, which this segdeploy does not know ({', '.join(FAMILY_NAMES)})")
    return name


def _variant_names(name: str) -> tuple[str, ...]:
    """Variant names without importing a family's model (they live in its light contract module)."""
    if name == "sam1":
        from segdeploy.contract import VARIANT_NAMES

        return VARIANT_NAMES
    return importlib.import_module(f"segdeploy.families.{name}.contract").VARIANT_NAMES
