"""`segdeploy serve` with its image store, on real tritonservers: clicks by image id equal to
Decoder.predict in every mask format; an evicted id gets an error of its own (INVALID_ARG) while its
batch is answered; the store stays within its budget; two instances, and two servers over one real
Redis, answer clicks on images registered elsewhere; images through --encoder equal the encoder graph
run in-process; and the serving path runs without PyTorch."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pycocotools  # the test extra installs it and tritonclient: a broken install fails here, not skips
import pytest
import tritonclient.grpc

from segdeploy import Decoder
from segdeploy.serving.client import SegdeployClient, ServerError
from segdeploy.serving.server import ServeOptions, free_port, start_server

EMBEDDING_BYTES = 256 * 64 * 64 * 4
BUDGET = 2 * EMBEDDING_BYTES + (1 << 20)  # two images and their logits; a third evicts the oldest
SIZE = (48, 64)  # small images: the test is about the plumbing, the decoder is real


def _embedding(rng) -> np.ndarray:
    return (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32)


def _metric(server, name: str, reason: str | None = None) -> float:
    text = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
    lines = [line for line in text.splitlines() if line.startswith(name + "{") and 'model="sam_decoder"' in line]
    return sum(float(line.split()[-1]) for line in lines if reason is None or f'reason="{reason}"' in line)


@pytest.fixture(scope="module")
def encoder_graph(tmp_path_factory) -> Path:
    """A tiny SAM 1 image encoder: [1,3,1024,1024] -> [1,256,64,64] by one strided Conv."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    weight = numpy_helper.from_array((0.01 * rng.standard_normal((256, 3, 16, 16))).astype(np.float32), "w")
    node = helper.make_node("Conv", ["image", "w"], ["embedding"], kernel_shape=[16, 16], strides=[16, 16])
    graph = helper.make_graph([node], "tiny_encoder", [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, 1024, 1024])],
                              [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, [1, 256, 64, 64])], [weight])
    path = tmp_path_factory.mktemp("encoder") / "tiny_encoder.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    return path


@pytest.fixture(scope="module")
def store_server(exported_multi, encoder_graph):
    """Two instances over the default shared store, a small budget, an encoder, a long batching window."""
    options = ServeOptions(source=exported_multi.path, threads=1, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                           instances=2, image_store_bytes=BUDGET, encoder=encoder_graph, max_batch_size=8, max_queue_delay_us=100_000)
    with start_server(options) as server:
        yield server
    assert server.store_files and not any(Path(f"{path}{suffix}").exists() for path in server.store_files for suffix in ("", "-wal", "-shm")), \
        "a stopped server leaves its shared store behind"


@pytest.fixture(scope="module")
def reference(exported_multi):
    with Decoder.load(exported_multi.path) as decoder:
        yield decoder


def test_click_by_id_equals_decoder_predict_in_every_format(store_server, reference, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    embedding = _embedding(rng)
    coords, labels = np.array([[rng.uniform(0, SIZE[1]), rng.uniform(0, SIZE[0])]]), np.array([1.0])
    want = reference.predict(embedding, point_coords=coords, point_labels=labels, orig_size=SIZE)
    for url in (store_server.grpc_url, "http://" + store_server.http_url):
        with SegdeployClient(url) as client:
            derived = client.add_image(embedding, orig_size=SIZE)
            assert client.add_image(embedding, orig_size=SIZE) == derived, "an id derived from the content is stable"
            chosen = client.add_image(embedding, image_id=f"mine-{fresh_seed}", orig_size=SIZE)
            assert chosen == f"mine-{fresh_seed}"
            for image_id in (derived, chosen):
                rle = client.predict(image_id, point_coords=coords, point_labels=labels)
                binary = client.predict(image_id, point_coords=coords, point_labels=labels, mask_format="binary")
                low = client.predict(image_id, point_coords=coords, point_labels=labels, mask_format="low_res")
                for got in (rle, binary):
                    assert got.masks.dtype == bool and got.masks.shape == want.masks.shape
                    assert np.array_equal(got.masks, want.masks)
                    assert np.abs(got.scores - want.scores).max() <= 1e-5
                    assert np.abs(got.low_res_logits - want.low_res_logits).max() <= 1e-4
                assert low.masks is None and np.abs(low.low_res_logits - want.low_res_logits).max() <= 1e-4
                best = client.predict(image_id, point_coords=coords, point_labels=labels, best_only=True, low_res=False)
                column = int(np.argmax(want.scores))
                assert best.low_res_logits is None and np.array_equal(best.masks, want.masks[column : column + 1])
                single = client.predict(image_id, point_coords=coords, point_labels=labels, multimask_output=False)
                alone = reference.predict(embedding, point_coords=coords, point_labels=labels, orig_size=SIZE, multimask_output=False)
                assert np.array_equal(single.masks, alone.masks)
            # refinement: the previous click's best logits as mask_input, kept by the server
            refined = client.predict(chosen, point_coords=coords, point_labels=labels, use_previous_logits=True)
            previous = single.low_res_logits[int(np.argmax(single.scores))][None]
            want_refined = reference.predict(embedding, point_coords=coords, point_labels=labels, orig_size=SIZE, mask_input=previous)
            assert np.abs(refined.low_res_logits - want_refined.low_res_logits).max() <= 1e-4


def test_an_evicted_id_gets_its_own_error_and_its_batch_is_answered(store_server, fresh_seed):
    from segdeploy.serving.image_store import SharedImageStore

    rng = np.random.default_rng(fresh_seed)
    store = SharedImageStore(store_server.store_files[0], BUDGET)
    with SegdeployClient(store_server.grpc_url) as client:
        ids = []
        for index in range(4 * BUDGET // EMBEDDING_BYTES):  # 4x the budget through a 2-image store
            ids.append(client.add_image(_embedding(rng), image_id=f"img-{fresh_seed}-{index}", orig_size=SIZE))
            client.predict(ids[-1], point_coords=[[5, 5]], point_labels=[1], low_res=False)  # logits join the entry
            assert store.stats()["bytes"] <= BUDGET
    assert ids[0] not in store and ids[-1] in store and store.stats()["evictions"] > 0

    def click(image_id):
        with SegdeployClient(store_server.grpc_url) as client:
            try:
                return client.predict(image_id, point_coords=[[10, 10]], point_labels=[1], low_res=False)
            except ServerError as error:
                return error

    failures = _metric(store_server, "segdeploy_request_failure", reason="client")
    executions, requests = _metric(store_server, "nv_inference_exec_count"), _metric(store_server, "nv_inference_count")
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(click, [ids[-1], ids[0], ids[-2], ids[-1], ids[-2], ids[-1]]))
    error = answers[1]
    assert isinstance(error, ServerError) and repr(ids[0]) in str(error) and "register it again" in str(error) and "\n" not in str(error)
    assert all(not isinstance(a, Exception) and a.masks.shape == (3, *SIZE) for i, a in enumerate(answers) if i != 1), answers
    assert _metric(store_server, "nv_inference_exec_count") - executions < _metric(store_server, "nv_inference_count") - requests, "clicks were not batched"
    assert _metric(store_server, "segdeploy_request_failure", reason="client") - failures == 1, "a bad request counts as a client failure"
    # a client error over HTTP is a 400 with the one line, gRPC's is INVALID_ARGUMENT; the server stays ready
    body = json.dumps({"inputs": [{"name": "image_id", "shape": [1, 1], "datatype": "BYTES", "data": [ids[0]]},
                                  {"name": "point_coords", "shape": [1, 1, 2], "datatype": "FP32", "data": [1, 2]},
                                  {"name": "point_labels", "shape": [1, 1], "datatype": "FP32", "data": [1]}]}).encode()
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(urllib.request.Request(f"http://{store_server.http_url}/v2/models/sam_decoder/infer", body), timeout=30)
    assert caught.value.code == 400 and ids[0] in caught.value.read().decode()
    import grpc
    import tritonclient.grpc as grpc_client
    from tritonclient.utils import InferenceServerException

    inputs = [grpc_client.InferInput("image_id", [1, 1], "BYTES"), grpc_client.InferInput("box", [1, 4], "FP32")]
    inputs[0].set_data_from_numpy(np.array([[ids[0].encode()]], dtype=np.object_))
    inputs[1].set_data_from_numpy(np.array([[1, 2, 30, 40]], np.float32))
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.InferenceServerClient(store_server.grpc_url).infer("sam_decoder", inputs)
    assert caught.value.status() == str(grpc.StatusCode.INVALID_ARGUMENT)
    assert grpc_client.InferenceServerClient(store_server.grpc_url).is_model_ready("sam_decoder")


def test_two_instances_answer_clicks_on_images_the_other_registered(store_server, reference, fresh_seed):
    """Registrations and clicks spread over both instances (concurrent, batched): every click finds its image."""
    rng = np.random.default_rng(fresh_seed)
    embeddings = [_embedding(rng) for _ in range(2)]

    def flow(job):
        _, embedding = job
        with SegdeployClient(store_server.grpc_url) as client:
            image_id = client.add_image(embedding, orig_size=SIZE)
            return [client.predict(image_id, point_coords=[[20 + k, 20]], point_labels=[1], low_res=False) for k in range(4)]

    with ThreadPoolExecutor(4) as pool:  # 4 flows, 2 images: each image is registered twice and clicked 8 times
        results = list(pool.map(flow, [(i, embeddings[i % 2]) for i in range(4)]))
    for index, answers in enumerate(results):
        for k, answer in enumerate(answers):
            want = reference.predict(embeddings[index % 2], point_coords=np.array([[20 + k, 20]]), point_labels=np.array([1]), orig_size=SIZE)
            assert np.array_equal(answer.masks, want.masks)


def _png(rgb: np.ndarray) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(rgb).save(out, format="PNG")
    return out.getvalue()


def test_images_through_the_encoder_equal_the_encoder_graph_in_process(store_server, reference, encoder_graph, fresh_seed):
    import onnxruntime as ort
    from PIL import Image

    rng = np.random.default_rng(fresh_seed)
    rgb = rng.integers(0, 256, (60, 90, 3), dtype=np.uint8)
    # SAM's preprocessing written out here (ResizeLongestSide with PIL's bilinear, mean/std, pad)
    height, width = int(60 * 1024 / 90 + 0.5), 1024
    resized = np.asarray(Image.fromarray(rgb).resize((width, height), Image.BILINEAR), np.float32)
    padded = np.zeros((1, 3, 1024, 1024), np.float32)
    padded[0, :, :height, :width] = ((resized - [123.675, 116.28, 103.53]) / [58.395, 57.12, 57.375]).transpose(2, 0, 1)
    embedding = ort.InferenceSession(str(encoder_graph), providers=["CPUExecutionProvider"]).run(None, {"image": padded})[0]
    want = reference.predict(embedding, point_coords=np.array([[30.0, 20.0]]), point_labels=np.array([1]), orig_size=(60, 90))
    with SegdeployClient(store_server.grpc_url) as client:
        from_png = client.add_image(image=_png(rgb))
        from_raw = client.add_image(image=rgb, image_id=f"raw-{fresh_seed}")
        for image_id in (from_png, from_raw):
            got = client.predict(image_id, point_coords=[[30.0, 20.0]], point_labels=[1])
            assert np.array_equal(got.masks, want.masks)
            assert np.abs(got.low_res_logits - want.low_res_logits).max() <= 1e-3
        with pytest.raises(ServerError, match="neither PNG nor JPEG"):
            client._infer({"image": np.array([[b"not an image"]], dtype=np.object_)}, ["image_id"])


@pytest.fixture(scope="module")
def redis_url(tmp_path_factory):
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("no redis-server: apt-get install -y redis-server (make check-tools installs it)")
    port = free_port()
    folder = tmp_path_factory.mktemp("redis")
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(folder)],
                               stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    import redis

    deadline = time.monotonic() + 20
    while True:
        try:
            redis.Redis(port=port).ping()
            break
        except redis.ConnectionError:
            assert time.monotonic() < deadline and process.poll() is None, "redis-server did not start"
            time.sleep(0.1)
    yield f"redis://127.0.0.1:{port}/0"
    process.terminate()
    process.wait(10)


def test_two_servers_over_one_redis_answer_clicks_on_images_registered_elsewhere(exported_multi, reference, redis_url, fresh_seed):
    rng = np.random.default_rng(fresh_seed)
    embedding = _embedding(rng)
    servers = []
    try:
        for _ in range(2):
            options = ServeOptions(source=exported_multi.path, threads=1, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port(),
                                   image_store=redis_url, image_store_bytes=BUDGET)
            servers.append(start_server(options))
        with SegdeployClient(servers[0].grpc_url) as first, SegdeployClient(servers[1].grpc_url) as second:
            image_id = first.add_image(embedding, orig_size=SIZE)
            got = second.predict(image_id, point_coords=[[7.0, 9.0]], point_labels=[1])
            want = reference.predict(embedding, point_coords=np.array([[7.0, 9.0]]), point_labels=np.array([1]), orig_size=SIZE)
            assert np.array_equal(got.masks, want.masks)
            refined = first.predict(image_id, point_coords=[[7.0, 9.0]], point_labels=[1], use_previous_logits=True)  # logits kept by the other server
            previous = got.low_res_logits[int(np.argmax(got.scores))][None]
            want = reference.predict(embedding, point_coords=np.array([[7.0, 9.0]]), point_labels=np.array([1]), orig_size=SIZE, mask_input=previous)
            assert np.abs(refined.low_res_logits - want.low_res_logits).max() <= 1e-4
            with pytest.raises(ServerError, match="no image encoder.*--encoder"):  # without --encoder: one line
                first.add_image(image=np.zeros((4, 4, 3), np.uint8))
    finally:
        for server in servers:
            server.stop()
