"""Property tests over Decoder.predict / predict_batch arguments: any value a caller may pass
(shapes, dtypes, NaN/inf, empty, huge, negative, lists, tuples, generators, torch tensors) gives a
Prediction of the promised shapes or one-line BadInputError; nothing else escapes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from fuzz_counts import TRIED
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from segdeploy import Decoder, Prompt
from segdeploy.errors import BadInputError

SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None,
                    phases=[Phase.explicit, Phase.generate])
DTYPES = st.sampled_from([np.float32, np.float64, np.float16, np.int64, np.int8, np.uint8, np.bool_, np.complex64, np.object_, np.str_])
SPECIAL = st.sampled_from([np.nan, np.inf, -np.inf, -1e30, 1e30, -5.0, 0.0, 7.5])


def arrays(shape=None) -> st.SearchStrategy:
    shapes = hnp.array_shapes(min_dims=0, max_dims=4, min_side=0, max_side=5) if shape is None else st.just(shape)
    numeric = hnp.arrays(np.float64, shapes, elements=st.one_of(st.floats(-100, 100), SPECIAL))
    return st.one_of(
        numeric, numeric.map(lambda a: a.tolist()), numeric.map(lambda a: (x for x in a.reshape(-1))),
        st.tuples(shapes, DTYPES).map(lambda sd: np.zeros(sd[0], sd[1])), numeric.map(lambda a: torch.from_numpy(a)),
        st.sampled_from([None, "points", 3, object(), [[1, 2], [3]], {"x": 1}]),
    )


def points(n: int) -> st.SearchStrategy:
    return st.one_of(arrays((n, 2)), arrays())


EMBEDDING = np.random.default_rng(0).standard_normal((256, 64, 64)).astype(np.float32)
EMBEDDINGS = st.one_of(
    st.just(EMBEDDING), st.just(EMBEDDING[None]), st.just(torch.from_numpy(EMBEDDING)),
    st.sampled_from([EMBEDDING.astype(np.int32), EMBEDDING[:128], np.full((256, 64, 64), np.nan, np.float32), None, "img", [1.0]]),
)
SIZES = st.one_of(
    st.tuples(st.integers(1, 48), st.integers(1, 48)), st.tuples(st.integers(-2**70, 2**70), st.integers(-2**70, 2**70)),
    st.sampled_from([(0, 5), (2**40, 2**40), (30000, 30000), (1, 5000), (16.0, 16.0), (16.5, 16), ("16", "16"), (16,), (1, 2, 3), None, np.array([20, 30])]),
)


@st.composite
def prompts(draw) -> Prompt:
    """A valid prompt with up to two of its fields replaced by anything a caller might pass."""
    n = draw(st.integers(0, 4))
    height, width = draw(st.tuples(st.integers(1, 48), st.integers(1, 48)))
    fields = {
        "embedding": EMBEDDING, "orig_size": (height, width),
        "point_coords": draw(hnp.arrays(np.float32, (n + 1, 2), elements=st.floats(0, 48, width=32))),
        "point_labels": draw(st.lists(st.sampled_from([0, 1]), min_size=n + 1, max_size=n + 1)),
        "box": draw(st.sampled_from([None, [1, 2, 30, 40]])), "mask_input": draw(st.sampled_from([None, np.zeros((1, 256, 256), np.float32)])),
        "multimask_output": draw(st.sampled_from([True, False])),
    }
    wild = {
        "embedding": EMBEDDINGS, "orig_size": SIZES, "point_coords": st.one_of(st.none(), points(n)),
        "point_labels": st.one_of(st.none(), arrays((n,)), st.lists(st.sampled_from([0, 1, -1, 2, 3, 5]), min_size=n, max_size=n)),
        "box": st.one_of(arrays((4,)), st.just([30, 40, 1, 2])), "mask_input": arrays(), "multimask_output": st.sampled_from([0, 1, None, "no"]),
    }
    for name in draw(st.lists(st.sampled_from(sorted(wild)), max_size=2, unique=True)):
        fields[name] = draw(wild[name])
    return Prompt(**fields)


@pytest.fixture(scope="module")
def decoder(exported_all):
    with Decoder.load(exported_all.path) as loaded:
        yield loaded


def _answer(call):
    try:
        return call()
    except BadInputError as error:
        assert "\n" not in str(error) and str(error), repr(error)
        return None


@SETTINGS
@given(prompt=prompts())
def test_predict_answers_or_refuses_in_one_line(decoder, prompt):
    TRIED["Decoder.predict"] += 1
    result = _answer(lambda: decoder.predict(prompt.embedding, point_coords=prompt.point_coords, point_labels=prompt.point_labels,
                                             box=prompt.box, mask_input=prompt.mask_input, orig_size=prompt.orig_size,
                                             multimask_output=prompt.multimask_output))
    TRIED["Decoder.predict (answered)"] += result is not None
    if result is not None:
        masks = 3 if prompt.multimask_output else 1
        height, width = (int(v) for v in np.asarray(prompt.orig_size))
        assert result.masks.shape == (masks, height, width) and result.masks.dtype == np.bool_
        assert result.scores.shape == (masks,) and np.isfinite(result.scores).all()
        assert result.low_res_logits.shape == (masks, 256, 256)


@SETTINGS
@given(batch=st.lists(prompts(), max_size=4), kind=st.sampled_from(["list", "tuple", "generator"]), logits=st.booleans())
def test_predict_batch_answers_or_refuses_in_one_line(decoder, batch, kind, logits):
    TRIED["Decoder.predict_batch"] += 1
    given_batch = {"list": list, "tuple": tuple, "generator": iter}[kind](batch)
    results = _answer(lambda: decoder.predict_batch(given_batch, return_logits=logits))
    TRIED["Decoder.predict_batch (answered)"] += results is not None
    if results is not None:
        assert len(results) == len(batch)
        for prompt, result in zip(batch, results):
            assert result.masks.dtype == (np.float32 if logits else np.bool_)
            assert result.masks.shape[1:] == tuple(int(v) for v in np.asarray(prompt.orig_size))
