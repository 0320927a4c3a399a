"""The registry of decoder families: where a family *name* enters segdeploy (a CLI option, a variant,
a graph's or sidecar's metadata, a checkpoint's keys, a foreign graph's inputs) it becomes a
:class:`~segdeploy.families.base.Family` here, and nowhere else. Every other module receives the
family object.

Importing this module is light: a family's module is imported on first use, and its heavy
dependencies (torch) only inside the methods that need them.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from functools import cache
from typing import TYPE_CHECKING

from segdeploy.errors import BadInputError

if TYPE_CHECKING:
    from pathlib import Path

    from segdeploy.contract import GraphLayout
    from segdeploy.families.base import Family
    from segdeploy.weights import WeightsInfo

# Adding a family: its folder under segdeploy/families/ and its name here.
FAMILY_NAMES = ("sam1", "sam2", "hq")
# Graphs, sidecars and packages written before families existed carry no family key: this one's.
DEFAULT_FAMILY = "sam1"
META_KEY = "family"


@cache
def get_family(name: str) -> Family:
    """The family called ``name``; BadInputError for an unknown one."""
    if name not in FAMILY_NAMES:
        raise BadInputError(f"unknown decoder family {name!r}; this segdeploy knows {', '.join(FAMILY_NAMES)}")
    return importlib.import_module(f"segdeploy.families.{name}").FAMILY


def families() -> tuple[Family, ...]:
    """Every family, in registry order."""
    return tuple(get_family(name) for name in FAMILY_NAMES)


def default_family() -> Family:
    return get_family(DEFAULT_FAMILY)


def default_variant() -> str:
    """The variant a command uses when none is given: the default family's default."""
    return default_family().default_variant


def all_variants() -> tuple[str, ...]:
    """Every variant name of every family, the default family's first."""
    return tuple(v for family in families() for v in family.variant_names)


def family_of_variant(variant: str, options: Mapping[str, str] | None = None) -> Family:
    """The family a variant belongs to, bound to it and to export ``options``; BadInputError naming
    every variant for an unknown one."""
    for family in families():
        if variant in family.variant_names:
            return family.bind({**(options or {}), "variant": variant})
    raise BadInputError(f"unknown variant {variant!r}; choose one of {', '.join(all_variants())}")


def family_from_metadata(metadata: Mapping[str, str], source: str = "the graph") -> Family:
    """The family a graph's (or sidecar's) metadata names; absent: the default family."""
    name = metadata.get(META_KEY) or DEFAULT_FAMILY
    if name not in FAMILY_NAMES:
        raise BadInputError(f"{source} is a {name!r} decoder, which this segdeploy does not know ({', '.join(FAMILY_NAMES)})")
    return get_family(name).bind(metadata)


def family_metadata(family: Family) -> dict[str, str]:
    """The metadata that names ``family``: nothing for the default family, so its graphs stay as
    they were before families existed."""
    return ({} if family.name == DEFAULT_FAMILY else {META_KEY: family.name}) | family.bound_metadata()


def family_of_checkpoint(keys: Iterable[str]) -> Family | None:
    """The family whose checkpoint key layout ``keys`` follow, if any."""
    keys = list(keys)
    for family in families():
        if family.owns_checkpoint(keys):
            return family
    return None


def load_decoder(variant: str | None = None, checkpoint: Path | None = None, seed: int = 0) -> tuple[object, WeightsInfo]:
    """The eager decoder of ``variant`` (default: the default family's default) from ``checkpoint``
    or seeded random weights; a checkpoint of another family is refused in one line that names a
    variant of that family."""
    from segdeploy.limits import check_seed
    from segdeploy.weights import CheckpointLayoutError

    check_seed(seed)
    variant = variant or default_variant()
    family = family_of_variant(variant)
    try:
        return family.load_decoder(variant, checkpoint, seed)
    except CheckpointLayoutError as error:
        owner = family_of_checkpoint(error.keys)
        if owner is None or owner is family:
            raise
        raise BadInputError(
            f"{checkpoint} is a {owner.title} checkpoint ({owner.checkpoint_prefixes[-1]}* keys); "
            f"pass a {owner.title} variant, e.g. --variant {owner.default_variant}"
        ) from None


def layout_from_io(input_names: list[str], outputs: Mapping[str, list], input_dtypes: Mapping[str, str] | None = None) -> GraphLayout:
    """The layout a graph, engine or package declares by its inputs and outputs (no metadata): the
    first family, most specific per-image inputs first, that recognises it."""
    for family in sorted(families(), key=lambda f: -len(f.image_inputs)):
        if set(family.image_inputs) <= set(input_names):
            return family.layout_from_io(input_names, outputs, dict(input_dtypes or {}))
    raise BadInputError(f"inputs {input_names} are no decoder family's ({', '.join(FAMILY_NAMES)})")
