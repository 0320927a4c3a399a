"""The sam2 package's released model configs, read and built without hydra or omegaconf.

``build_sam2`` composes a yaml config with hydra, resolves it with omegaconf and instantiates its
``model`` node recursively. The released configs (``configs/sam2/*.yaml``, ``configs/sam2.1/*.yaml``)
use only nested ``_target_`` nodes and plain values (no ``${...}`` interpolations, no defaults
lists), so a yaml reader with omegaconf's float rule and a recursive instantiate rebuild the same
SAM2Base. What ``build_sam.py`` itself decides (which config makes which checkpoint, the overrides
it adds) is read from its source, which imports hydra. Needs pyyaml, and iopath (the Hiera module's).
"""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path
from typing import Any

import yaml

from segdeploy.families.sam2.baseline import import_sam2

_FLOAT = re.compile(  # omegaconf's rule: plain YAML 1.1 reads "1e-6" (no dot) as a string
    r"""^(?:[-+]?(?:[0-9][0-9_]*)\.[0-9_]*(?:[eE][-+]?[0-9]+)?
    |[-+]?(?:[0-9][0-9_]*)(?:[eE][-+]?[0-9]+)
    |\.[0-9_]+(?:[eE][-+][0-9]+)?
    |[-+]?\.(?:inf|Inf|INF)
    |\.(?:nan|NaN|NAN))$""",
    re.X,
)
_OVERRIDE = re.compile(r"^\+\+model\.sam_mask_decoder_extra_args\.(\w+)=(.+)$")
HEAD_CLASSES = ("PromptEncoder", "MaskDecoder", "TwoWayTransformer")


class _Loader(yaml.SafeLoader):
    """SafeLoader with omegaconf's float resolver."""


_Loader.yaml_implicit_resolvers = {
    first: [r for r in resolvers if r[0] != "tag:yaml.org,2002:float"] for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789."))


def package_dir() -> Path:
    """The installed sam2 package's folder."""
    import_sam2()
    return Path(importlib.import_module("sam2").__path__[0])


def _source(relative: str) -> ast.Module:
    return ast.parse((package_dir() / relative).read_text())


def _function(tree: ast.AST, name: str) -> ast.FunctionDef:
    return next(node for node in ast.walk(tree) if isinstance(node, ast.FunctionDef) and node.name == name)


def released_configs() -> dict[str, Path]:
    """build_sam.py's HF_MODEL_ID_TO_FILENAMES: checkpoint name (file stem) -> its config file."""
    tree = _source("build_sam.py")
    table = next(
        node.value for node in tree.body
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "HF_MODEL_ID_TO_FILENAMES" for t in node.targets)
    )
    return {Path(checkpoint).stem: package_dir() / config for config, checkpoint in ast.literal_eval(table).values()}


def postprocessing_args() -> dict[str, Any]:
    """The mask decoder arguments build_sam2(apply_postprocessing=True) adds as hydra overrides."""
    strings = [n.value for n in ast.walk(_function(_source("build_sam.py"), "build_sam2")) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
    found = [_OVERRIDE.match(s) for s in strings]
    return {m.group(1): yaml.load(m.group(2), Loader=_Loader) for m in found if m}


def head_attributes() -> set[str]:
    """The SAM2Base attributes (``self.X``) that SAM2Base._build_sam_heads passes into the prompt
    encoder, the mask decoder and its transformer: everything a config can change about them."""
    used = set()
    for call in ast.walk(_function(_source("modeling/sam2_base.py"), "_build_sam_heads")):
        if isinstance(call, ast.Call) and getattr(call.func, "id", None) in HEAD_CLASSES:
            for node in ast.walk(call):
                if isinstance(node, ast.Attribute) and getattr(node.value, "id", None) == "self":
                    used.add(node.attr)
    return used


def read_config(path: Path) -> dict[str, Any]:
    """One config file as plain Python values; raises on an interpolation (none is expected)."""
    text = path.read_text()
    if "${" in text:
        raise ValueError(f"{path} uses interpolations, which this reader does not resolve")
    return yaml.load(text, Loader=_Loader)


def instantiate(node: Any) -> Any:
    """hydra's recursive instantiate: every mapping with ``_target_`` is called with its other
    entries, innermost first; other values pass through."""
    if isinstance(node, list):
        return [instantiate(item) for item in node]
    if not isinstance(node, dict):
        return node
    args = {key: instantiate(value) for key, value in node.items() if key != "_target_"}
    if "_target_" not in node:
        return args
    module, name = node["_target_"].rsplit(".", 1)
    return getattr(importlib.import_module(module), name)(**args)


def build_sam2_base(path: Path, postprocessing: bool = True):
    """SAM2Base (eval, CPU) from one config, as ``build_sam2(config, ckpt_path=None)`` builds it."""
    import_sam2()
    model = dict(read_config(path)["model"])
    if postprocessing:
        model["sam_mask_decoder_extra_args"] = {**model.get("sam_mask_decoder_extra_args", {}), **postprocessing_args()}
    return instantiate(model).eval()
