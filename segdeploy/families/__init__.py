"""Decoder families, one folder each, peers behind :class:`~segdeploy.families.base.Family`:
``sam1`` (SAM and MobileSAM) and ``sam2`` (SAM 2 and SAM 2.1). A family's folder holds everything
that differs between decoders: model wrapper and graph, I/O specs, case matrix, checkpoint key
mapping, prompt and postprocessing rules, baseline. The rest of segdeploy receives a ``Family``
object and never asks which one it is; names are looked up in :mod:`segdeploy.registry`.

This package imports nothing: a family's module is loaded by the registry on first use.
"""
