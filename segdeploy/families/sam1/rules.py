"""SAM 1's pre- and postprocessing, as segment-anything's ``SamPredictor`` does them, for the runtime:

- coordinates: ``ResizeLongestSide.apply_coords`` (longest side to 1024, aspect kept, float sizes);
- prompts: clicks, then box corners; SAM's padding point (0,0) labelled -1 only without a box;
- masks (graphs that return only low-res logits: the multi-image flavor, ``--no-postprocess``):
  ``Sam.postprocess_masks``, with its float longest-side sizes;
- single mask: token 0.
"""

from __future__ import annotations

from segdeploy.prompts import LONGEST_SIDE_RULES as PROMPT_RULES  # noqa: F401 - SamPredictor's rules, shared
from segdeploy.prompts import preprocess_shape  # noqa: F401
from segdeploy.prompts import to_longest_side_frame as to_model_frame  # noqa: F401
from segdeploy.prompts import upscale_longest_side as upscale_to_original  # noqa: F401
