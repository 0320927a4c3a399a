"""What serving needs on the host without a server: the numpy mask resize equal to torch's bilinear,
and a serving path that never imports torch."""

from __future__ import annotations

import numpy as np
import pytest

from segdeploy.prompts import resize_bilinear


@pytest.mark.parametrize("shape,size", [((2, 3, 256, 256), (1080, 1920)), ((1, 4, 256, 256), (1, 1)), ((1, 1, 256, 256), (4096, 37)),
                                        ((1, 3, 200, 256), (1024, 1024)), ((1, 1, 7, 9), (3, 20)), ((1, 2, 256, 256), (256, 256))])
def test_numpy_bilinear_equals_torch(shape, size, fresh_seed):
    torch = pytest.importorskip("torch")
    from torch.nn import functional as F

    rng = np.random.default_rng(fresh_seed)
    logits = (12.0 * rng.standard_normal(shape)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(logits), size=size, mode="bilinear", align_corners=False).numpy()
    got = resize_bilinear(logits, size)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 2e-5 * max(1.0, np.abs(want).max())
