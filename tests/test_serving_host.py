"""What serving needs on the host without a server: the numpy mask resize equal to torch's bilinear,
and a serving path that never imports torch."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from segdeploy.prompts import resize_bilinear


@pytest.mark.parametrize("shape,size", [((2, 3, 256, 256), (1080, 1920)), ((1, 4, 256, 256), (1, 1)), ((1, 1, 256, 256), (4096, 37)),
                                        ((1, 3, 200, 256), (1024, 1024)), ((1, 1, 7, 9), (3, 20)), ((1, 2, 256, 256), (256, 256))])
def test_numpy_bilinear_equals_torch(shape, size, fresh_seed):
    import torch
    from torch.nn import functional as F

    rng = np.random.default_rng(fresh_seed)
    logits = (12.0 * rng.standard_normal(shape)).astype(np.float32)
    want = F.interpolate(torch.from_numpy(logits), size=size, mode="bilinear", align_corners=False).numpy()
    got = resize_bilinear(logits, size)
    assert got.shape == want.shape and got.dtype == np.float32
    assert np.abs(got - want).max() <= 2e-5 * max(1.0, np.abs(want).max())


BLOCKER = '''
import os, sys
class _NoTorch:
    """Makes `import torch` fail, as in an environment without PyTorch; notes every attempt."""
    def find_spec(self, name, path=None, target=None):
        if name == "torch" or name.startswith("torch."):
            with open(os.path.join(os.environ["SEGDEPLOY_NO_TORCH_LOG"], f"attempt-{os.getpid()}"), "a") as log:
                log.write(name + "\\n")
            raise ImportError(f"No module named {name!r} (blocked: serving without PyTorch)")
        return None
sys.meta_path.insert(0, _NoTorch())
open(os.path.join(os.environ["SEGDEPLOY_NO_TORCH_LOG"], f"process-{os.getpid()}"), "w").close()
'''


def test_serve_answers_clicks_without_torch(exported_multi, tmp_path, fresh_seed):
    """`segdeploy serve` with `import torch` made to fail in the serve process and in its Python-backend
    stub (the stub's model.py runs the same hook first): a registration and clicks in every mask format
    are answered, and no process of the server tried to import torch."""
    import os
    import signal
    import subprocess
    import sys
    import time
    import urllib.request

    import tritonclient.grpc  # noqa: F401 - the test extra installs it: a broken install fails here, not skips

    from segdeploy.serving.server import free_port

    hook, log = tmp_path / "no_torch.py", tmp_path / "log"
    log.mkdir()
    hook.write_text(BLOCKER)
    driver = tmp_path / "serve_without_torch.py"
    driver.write_text(
        f"exec(open({str(hook)!r}).read())\n"
        "import sys\n"
        "import segdeploy.serving.server as server\n"
        f"server.MODEL_PY = {f'exec(open({str(hook)!r}).read())' + chr(10)!r} + server.MODEL_PY  # the stub's interpreter too\n"
        "from segdeploy.cli import app\n"
        "sys.argv[0] = 'segdeploy'\n"
        "app()\n"
    )
    root = str(Path(__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=root, SEGDEPLOY_NO_TORCH_LOG=str(log))
    ports = [free_port() for _ in range(3)]
    command = [sys.executable, str(driver), "serve", str(exported_multi.path), "--threads", "1", "--http-port", str(ports[0]),
               "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]), "--image-store-bytes", "64MB"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/models/sam_decoder/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None and time.monotonic() < deadline, process.stdout.read() if process.poll() is not None else "not ready"
            time.sleep(0.5)
        from segdeploy.serving.client import SegdeployClient

        rng = np.random.default_rng(fresh_seed)
        embedding = (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32)
        from segdeploy import Decoder

        with Decoder.load(exported_multi.path) as reference:
            want = reference.predict(embedding, point_coords=[[50, 60]], point_labels=[1], orig_size=(300, 200))
        with SegdeployClient(f"127.0.0.1:{ports[1]}") as client:
            image_id = client.add_image(embedding, orig_size=(300, 200))
            for mask_format in ("rle", "binary", "low_res"):
                got = client.predict(image_id, point_coords=[[50, 60]], point_labels=[1], mask_format=mask_format)
                assert np.abs(got.scores - want.scores).max() <= 1e-5, mask_format
                assert np.abs(got.low_res_logits - want.low_res_logits).max() <= 1e-4, mask_format
                if mask_format != "low_res":  # the same masks, up to a pixel whose logit rounds across 0
                    assert got.masks.shape == want.masks.shape and (got.masks != want.masks).mean() <= 1e-4, mask_format
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    processes = sorted(p.name for p in log.iterdir() if p.name.startswith("process-"))
    attempts = {p.name: p.read_text() for p in log.iterdir() if p.name.startswith("attempt-")}
    assert len(processes) >= 2, f"the blocker ran in {processes}: the Python-backend stub did not run it"
    assert not attempts, f"torch imported while serving: {attempts}"


def test_predict_batch_best_only_is_the_best_column_of_predict(exported_multi, fresh_seed):
    """best_only picks the highest-scoring mask before the host resize; it equals predict's column."""
    from segdeploy import Decoder, Prompt

    rng = np.random.default_rng(fresh_seed)
    embedding = (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32)
    prompts = [Prompt(embedding, (90, 120), np.array([[rng.uniform(0, 120), rng.uniform(0, 90)]]), np.array([1]), multimask_output=multi)
               for multi in (True, True, False)]
    with Decoder.load(exported_multi.path) as decoder:
        got = decoder.predict_batch(prompts, best_only=[True, False, True])
        for prompt, result, best in zip(prompts, got, (True, False, True)):
            want = decoder.predict(embedding, point_coords=prompt.point_coords, point_labels=prompt.point_labels, orig_size=prompt.orig_size,
                                   multimask_output=prompt.multimask_output)
            column = slice(int(np.argmax(want.scores)), int(np.argmax(want.scores)) + 1) if best else slice(None)
            assert np.array_equal(result.masks, want.masks[column]) and np.array_equal(result.scores, want.scores[column])
            assert np.array_equal(result.low_res_logits, want.low_res_logits[column])


def test_bad_requests_are_invalid_arg_and_server_failures_internal(exported_multi, fresh_seed):
    """The Python-backend model's execute() with a stand-in for triton_python_backend_utils: an unknown
    id is INVALID_ARG, a decoder that fails is INTERNAL, each counted by its reason; a good click in the
    same batch as the bad one is answered."""
    from types import SimpleNamespace

    from segdeploy import Decoder
    from segdeploy.serving.image_store import MemoryImageStore
    from segdeploy.serving.triton_model import Failures, Model, TritonPythonModel

    class Error:
        INVALID_ARG, INTERNAL = "INVALID_ARG", "INTERNAL"

        def __init__(self, message, code=None):
            self.message, self.code = message, code

    class Counter:
        def __init__(self, labels):
            self.labels, self.value = labels, 0.0

        def increment(self, value):
            self.value += value

    class Family:
        COUNTER = "counter"

        def __init__(self, **kwargs):
            pass

        def Metric(self, labels):
            return Counter(labels)

    tensor = lambda name, array: SimpleNamespace(name=name, as_numpy=lambda: array)
    pb = SimpleNamespace(TritonError=Error, MetricFamily=Family, Tensor=tensor,
                         InferenceResponse=lambda output_tensors=None, error=None: SimpleNamespace(outputs=output_tensors, error=error),
                         get_input_tensor_by_name=lambda request, name: request.get(name))
    rng = np.random.default_rng(fresh_seed)
    store = MemoryImageStore(64 << 20)
    store.put("known", {"image_embeddings": (0.5 * rng.standard_normal((256, 64, 64))).astype(np.float32), "orig_size": np.array([30, 40])})

    def click(image_id):
        return {"image_id": tensor("image_id", np.array([[image_id.encode()]], dtype=np.object_)),
                "point_coords": tensor("point_coords", np.array([[[5.0, 6.0]]], np.float32)),
                "point_labels": tensor("point_labels", np.array([[1.0]], np.float32))}

    with Decoder.load(exported_multi.path) as decoder:
        model = TritonPythonModel()
        model.pb_utils, model.model, model.failures, model.calls = pb, Model(decoder, store), Failures(pb, "sam_decoder", "0"), 0
        good, bad = model.execute([click("known"), click("gone")])
        assert good.error is None and {t.name for t in good.outputs} == {"scores", "masks_rle", "image_id"}
        assert bad.error.code == "INVALID_ARG" and "'gone'" in bad.error.message
        decoder.predict_batch = lambda *args, **kwargs: (_ for _ in ()).throw(RuntimeError("out of memory"))
        (failed,) = model.execute([click("known")])
        assert failed.error.code == "INTERNAL" and "out of memory" in failed.error.message
    assert model.failures.counters["client"].value == 1 and model.failures.counters["server"].value == 1


def test_a_batch_of_large_answers_is_answered_in_groups_under_a_quarter_of_the_budget(rng):
    """Fault: answer_groups putting every click in one group (the masks of 32 clicks at 8192x8192
    held at once: 3.76 GiB peak RSS in benchmarks/serve_memory.py, budget 2 GiB)."""
    from segdeploy import Prompt
    from segdeploy.serving.triton_model import Click, answer_bytes, answer_groups

    budget = 2 << 30
    sizes = [(8192, 8192), (64, 64), (4000, 3000), (8192, 8192), (1080, 1920)] * 8
    clicks = [Click(i, [Prompt(None, size, multimask_output=bool(rng.integers(2)))] * int(rng.integers(1, 3)), None, "rle", bool(rng.integers(2)), False)
              for i, size in enumerate(sizes)]
    groups = answer_groups(clicks, budget)
    assert [click for group in groups for click in group] == clicks  # all, in order
    assert len(groups) > 1
    for group in groups:
        assert len(group) == 1 or sum(answer_bytes(click) for click in group) <= budget // 4
    big = Click(0, [Prompt(None, (8192, 8192), multimask_output=True)], None, "binary", False, False)
    assert answer_bytes(big) == 2 * 3 * 8192 * 8192 and answer_groups([big, big], 1 << 20) == [[big], [big]]
