"""`segdeploy serve` on a real tritonserver (loopback, free ports): concurrent good and bad requests
over HTTP and gRPC, answers equal to Decoder.predict, dynamic batching, clean SIGTERM; and the
model repositories `segdeploy triton-repo` writes, parsed strictly with Triton's own ModelConfig."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from segdeploy import Decoder
from segdeploy.cli import app
from segdeploy.serving.server import free_port
from segdeploy.registry import get_family

SAM1 = get_family("sam1")

import tritonclient.http  # noqa: E402,F401 - the test extra installs it: a missing one is a failure, not a skip
runner = CliRunner()
MAX_BATCH = 8


def _pids_with(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if text in (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"):
                    found.append(int(entry.name))
            except OSError:
                pass
    return found


@pytest.fixture(scope="module")
def server(exported_multi):
    ports = [free_port() for _ in range(3)]
    command = [sys.executable, "-m", "segdeploy", "serve", str(exported_multi.path), "--threads", "2",
               "--http-port", str(ports[0]), "--grpc-port", str(ports[1]), "--metrics-port", str(ports[2]),
               "--max-batch-size", str(MAX_BATCH), "--max-queue-delay-us", "200000"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{ports[0]}/v2/models/sam_decoder/ready", timeout=2) as response:
                if response.status == 200:
                    break
        except OSError:
            time.sleep(0.5)
        assert process.poll() is None, process.stdout.read()
    else:
        process.kill()
        pytest.fail("segdeploy serve did not get ready")
    yield process, ports
    if process.poll() is None:  # a test failed before the SIGTERM test: stop it the way users do
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()


def _request(module, embedding, size, coords=None, labels=None, box=None, dtype_override=None, rows=1):
    """One request; ``rows`` > 1 repeats it along the batch axis (one request of that many prompts)."""
    inputs = []

    def add(name, array, datatype):
        array = np.repeat(array, rows, 0) if rows > 1 and name != "image_embeddings" else array
        tensor = module.InferInput(name, list(array.shape), datatype)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)

    add("image_embeddings", embedding, "FP32")
    if coords is not None:
        add("point_coords", coords.astype(dtype_override or np.float32)[None], "FP64" if dtype_override else "FP32")
        add("point_labels", labels.astype(np.float32)[None], "FP32")
    if box is not None:
        add("box", box.astype(np.float32)[None], "FP32")
    if size is not None:
        add("orig_size", np.array([size], np.int64), "INT64")
    return inputs


def _metric(ports, name: str) -> float:
    text = urllib.request.urlopen(f"http://127.0.0.1:{ports[2]}/metrics", timeout=5).read().decode()
    return sum(float(line.split()[-1]) for line in text.splitlines() if line.startswith(name + "{") and 'model="sam_decoder"' in line)


def test_concurrent_good_and_bad_requests(server, exported_multi, fresh_seed):
    import tritonclient.grpc as grpc_client
    import tritonclient.http as http_client

    process, ports = server
    rng = np.random.default_rng(fresh_seed)
    sizes = [(480, 640), (1024, 1024), (720, 1280)]
    good = []
    for i in range(12):
        size = sizes[i % 3]
        embedding = (0.5 * rng.standard_normal((1, 256, 64, 64))).astype(np.float32)
        coords = np.array([[rng.uniform(0, size[1]), rng.uniform(0, size[0])]])
        box = np.array([10.0, 20.0, size[1] / 2, size[0] / 2]) if i % 4 == 0 else None
        good.append((embedding, size, coords, np.array([1.0]), box))
    nan_embedding = good[0][0].copy()
    nan_embedding[0, 0, 0, 0] = np.nan
    # each bad request with what its error must say (a request refused for another reason fails the test)
    bad = [
        ("NaN", dict(embedding=nan_embedding, size=(480, 640), coords=good[0][2], labels=np.array([1.0]))),
        ("label", dict(embedding=good[1][0], size=(480, 640), coords=good[1][2], labels=np.array([7.0]))),
        ("box", dict(embedding=good[2][0], size=(480, 640), box=np.array([50.0, 50.0, 10.0, 10.0]))),
        ("missing", dict(embedding=good[3][0], size=None, coords=good[3][2], labels=np.array([1.0]))),
        ("dtype", dict(embedding=good[4][0], size=(480, 640), coords=good[4][2], labels=np.array([1.0]), dtype_override=np.float64)),
        ("too many", dict(embedding=np.repeat(good[5][0], MAX_BATCH + 1, 0), size=(480, 640), coords=good[5][2], labels=np.array([1.0]), rows=MAX_BATCH + 1)),
    ]
    said = {"NaN": "NaN", "label": "valid labels", "box": "x0 <= x1", "missing": "orig_size", "dtype": "FP64", "too many": "batch"}
    def send(job):  # one client per request: tritonclient's HTTP client must stay on its own thread
        kind, index, args = job
        module = http_client if index % 2 else grpc_client
        client = module.InferenceServerClient(f"127.0.0.1:{ports[0] if index % 2 else ports[1]}")
        try:
            result = client.infer("sam_decoder", _request(module, **args))
            return kind, index, {name: result.as_numpy(name) for name in ("masks", "scores", "low_res_masks")}
        except Exception as error:  # tritonclient raises InferenceServerException per failed request
            return kind, index, error
        finally:
            client.close()  # an idle open connection holds tritonserver's exit for its --exit-timeout-secs

    jobs = [("good", i, dict(embedding=e, size=s, coords=c, labels=l, box=b)) for i, (e, s, c, l, b) in enumerate(good)]
    jobs += [(f"bad {name}", 100 + i, args) for i, (name, args) in enumerate(bad)]
    rng.shuffle(jobs)
    requests_before, executions_before = _metric(ports, "nv_inference_count"), _metric(ports, "nv_inference_exec_count")
    with ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(send, jobs))
    executed = _metric(ports, "nv_inference_exec_count") - executions_before
    served = _metric(ports, "nv_inference_count") - requests_before
    assert served >= len(good) and executed < served, f"{served} requests in {executed} executions: no dynamic batching"

    with Decoder.load(exported_multi.path) as reference:
        for kind, index, answer in answers:
            if kind.startswith("bad"):
                assert isinstance(answer, Exception), f"{kind} request was answered"
                assert said[kind[4:]] in str(answer), f"{kind} request refused for another reason: {answer}"
                continue
            assert not isinstance(answer, Exception), f"good request {index} failed: {answer}"
            embedding, size, coords, labels, box = good[index]
            want = reference.predict(embedding, point_coords=coords, point_labels=labels, box=box, orig_size=size)
            assert answer["masks"].dtype == bool and answer["masks"].shape == (1, *want.masks.shape)
            assert np.abs(answer["low_res_masks"][0] - want.low_res_logits).max() <= 1e-4
            assert np.abs(answer["scores"][0] - want.scores).max() <= 1e-5
            assert (answer["masks"][0] == want.masks).mean() >= 0.9999
    with http_client.InferenceServerClient(f"127.0.0.1:{ports[0]}") as http:
        assert http.is_server_live() and http.is_model_ready("sam_decoder"), "the server keeps serving after bad requests"
    assert process.poll() is None


def test_sigterm_leaves_no_server_process(server):
    process, ports = server
    marker = f"--http-port={ports[0]}"
    assert _pids_with(marker), "tritonserver should be running"
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=60)
    assert process.returncode == 0, output
    assert "stopped" in output
    time.sleep(0.5)
    assert not _pids_with(marker), "a tritonserver process outlived SIGTERM"


def test_a_killed_serve_takes_its_server_along(exported):
    """SIGKILL gives `segdeploy serve` no chance to stop tritonserver: the server must go by itself."""
    http = free_port()
    command = [sys.executable, "-m", "segdeploy", "serve", str(exported.path), "--http-port", str(http),
               "--grpc-port", str(free_port()), "--metrics-port", str(free_port())]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert "serving sam_decoder" in process.stdout.readline()
    marker = f"--http-port={http}"
    assert _pids_with(marker)
    process.kill()
    process.wait()
    deadline = time.monotonic() + 30
    while _pids_with(marker) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _pids_with(marker), "tritonserver outlived a killed segdeploy serve"


def test_serve_refuses_a_taken_port_in_one_line(tmp_path):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = runner.invoke(app, ["serve", "--http-port", str(port), "--grpc-port", str(free_port()), "--metrics-port", str(free_port())])
    assert result.exit_code == 2 and "cannot listen" in result.output and "Traceback" not in result.output


def parameters_of(config) -> dict[str, str]:
    return {k: v.string_value for k, v in config.parameters.items()}


def _parse_config(path: Path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())  # strict: unknown fields raise


@pytest.mark.parametrize("backend", ["python", "onnxruntime"])
def test_triton_repo_configs_parse_strictly_and_match_the_graph(backend, exported, exported_multi, tmp_path):
    from segdeploy.contract import GraphLayout, MaskOutput

    for graph, layout in ((exported.path, GraphLayout(MaskOutput.MULTI, family=SAM1)), (exported_multi.path, GraphLayout(MaskOutput.ALL, False, True, family=SAM1))):
        out = tmp_path / f"{backend}-{graph.stem}"
        result = runner.invoke(app, ["triton-repo", str(graph), "--out", str(out), "--backend", backend, "--instances", "2"])
        assert result.exit_code == 0, result.output
        config = _parse_config(out / "sam_decoder" / "config.pbtxt")
        assert config.name == "sam_decoder" and config.instance_group[0].count == 2
        types = {"TYPE_FP32": "float32", "TYPE_INT64": "int64", "TYPE_BOOL": "bool"}
        from tritonclient.grpc import model_config_pb2

        def described(tensors):
            return [(t.name, types[model_config_pb2.DataType.Name(t.data_type)], tuple(t.dims)) for t in tensors]

        if backend == "onnxruntime":
            assert config.backend == "onnxruntime" and config.max_batch_size == 0 and not config.HasField("dynamic_batching")
            expect = lambda specs: [(s.name, s.dtype, tuple(d if isinstance(d, int) else -1 for d in s.dims)) for s in specs]  # noqa: E731
            assert described(config.input) == expect(layout.inputs())
            assert described(config.output) == expect(layout.outputs())
            assert (out / "sam_decoder" / "1" / "model.onnx").read_bytes() == graph.read_bytes()
        else:
            assert config.backend == "python" and config.max_batch_size == 64
            assert config.dynamic_batching.max_queue_delay_microseconds == 2000
            from segdeploy.serving.model_config import SERVE_INPUTS, SERVE_OUTPUTS

            old_schema = ["image_embeddings", "high_res_feats_0", "high_res_feats_1", "point_coords", "point_labels", "box", "mask_input", "orig_size", "multimask_output"]
            from segdeploy.serving.model_config import image_tensors

            names = [i.name for i in config.input]
            assert [name for name in names if name in old_schema] == old_schema, "the old request schema is a subset of the new one"
            assert names == [t.name for t in (*image_tensors(), *SERVE_INPUTS)]
            assert all(i.optional for i in config.input), "a click by image_id carries no embedding, a registration no prompt"
            assert [o.name for o in config.output] == [t.name for t in SERVE_OUTPUTS]
            assert parameters_of(config)["segdeploy_image_store"] == "shared" and int(parameters_of(config)["segdeploy_image_store_bytes"]) == 2 << 30
            assert (out / "sam_decoder" / "1" / graph.name).is_file() and (out / "sam_decoder" / "1" / "model.py").is_file()
            assert parameters_of(config)["segdeploy_source"] == graph.name


def test_triton_repo_errors(exported, tmp_path):
    result = runner.invoke(app, ["triton-repo", str(exported.path), "--out", str(tmp_path), "--backend", "tensorrt"])
    assert result.exit_code == 2 and ".plan" in result.output
    assert runner.invoke(app, ["triton-repo", str(exported.path), "--out", str(tmp_path)]).exit_code == 0
    again = runner.invoke(app, ["triton-repo", str(exported.path), "--out", str(tmp_path)])
    assert again.exit_code == 2 and "not empty" in again.output


def test_tensorrt_repo_marks_the_shape_tensor(exported, tmp_path):
    from segdeploy.contract import GraphLayout, MaskOutput
    from segdeploy.serving.model_config import contract_tensors, render_config

    text = render_config(backend="tensorrt", inputs=contract_tensors(GraphLayout(MaskOutput.MULTI, family=SAM1).inputs(), tensorrt=True),
                         outputs=contract_tensors(GraphLayout(MaskOutput.MULTI, family=SAM1).outputs()), max_batch_size=0, queue_delay_us=None)
    path = tmp_path / "config.pbtxt"
    path.write_text(text)
    config = _parse_config(path)
    assert [i.name for i in config.input if i.is_shape_tensor] == ["orig_im_size"]


def test_libpython_check_names_the_problem(monkeypatch):
    import sysconfig

    from segdeploy.errors import BadInputError
    from segdeploy.serving import server

    monkeypatch.setattr(sysconfig, "get_config_var", lambda name: None)
    with pytest.raises(BadInputError, match="shared libpython"):
        server.libpython_dir()
    assert os.path.basename(sys.executable)


def test_serve_answers_sam2_requests_with_their_high_res_features(sam2_multi, fresh_seed):
    """A SAM 2 graph behind serve: requests carry the two projected high-res maps; without them, an error."""
    import tritonclient.grpc as grpc_client

    from segdeploy.serving.server import ServeOptions, start_server

    rng = np.random.default_rng(fresh_seed)
    features = [(0.5 * rng.standard_normal(shape)).astype(np.float32) for shape in ((1, 256, 64, 64), (1, 32, 256, 256), (1, 64, 128, 128))]
    coords, size = np.array([[200.0, 150.0]]), (480, 640)
    options = ServeOptions(source=sam2_multi.path, threads=2, http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    with start_server(options) as server, Decoder.load(sam2_multi.path) as reference:
        client = grpc_client.InferenceServerClient(server.grpc_url)
        inputs = _request(grpc_client, features[0], size, coords=coords, labels=np.array([1.0]))
        with pytest.raises(Exception, match="high_res_feats"):
            client.infer("sam_decoder", inputs)
        for name, array in (("high_res_feats_0", features[1]), ("high_res_feats_1", features[2])):
            inputs.append(grpc_client.InferInput(name, list(array.shape), "FP32"))
            inputs[-1].set_data_from_numpy(array)
        answer = client.infer("sam_decoder", inputs)
        client.close()  # an idle open connection would hold the server's stop for its exit timeout
        want = reference.predict(tuple(features), point_coords=coords, point_labels=np.array([1.0]), orig_size=size)
        assert np.abs(answer.as_numpy("low_res_masks")[0] - want.low_res_logits).max() <= 1e-4
        assert (answer.as_numpy("masks")[0] == want.masks).mean() >= 0.9999
        # by id: the three maps registered once (the store keeps the family's image inputs), then clicks
        from segdeploy.serving.client import SegdeployClient, ServerError

        with SegdeployClient(server.grpc_url) as by_id:
            with pytest.raises(ServerError, match="high_res_feats"):
                by_id.add_image(features[0], orig_size=size)
            image_id = by_id.add_image(tuple(features), orig_size=size)
            got = by_id.predict(image_id, point_coords=coords, point_labels=[1])
            assert (got.masks == want.masks).mean() >= 0.9999 and np.abs(got.low_res_logits - want.low_res_logits).max() <= 1e-4


def test_triton_repo_carries_the_image_store_and_the_encoder(exported_multi, tmp_path):
    encoder = tmp_path / "encoder.onnx"
    encoder.write_bytes(b"an encoder graph")
    out = tmp_path / "repo"
    result = runner.invoke(app, ["triton-repo", str(exported_multi.path), "--out", str(out), "--image-store", "redis://10.0.0.5:6379/2",
                                 "--image-store-bytes", "1GiB", "--encoder", str(encoder)])
    assert result.exit_code == 0, result.output
    parameters = parameters_of(_parse_config(out / "sam_decoder" / "config.pbtxt"))
    assert parameters["segdeploy_image_store"] == "redis://10.0.0.5:6379/2" and parameters["segdeploy_image_store_bytes"] == str(1 << 30)
    assert parameters["segdeploy_encoder"] == "encoder.onnx" and (out / "sam_decoder" / "1" / "encoder.onnx").read_bytes() == b"an encoder graph"
    bad = runner.invoke(app, ["triton-repo", str(exported_multi.path), "--out", str(tmp_path / "bad"), "--image-store-bytes", "lots"])
    assert bad.exit_code == 2 and "bad size" in bad.output


def test_readme_documents_the_served_contract():
    """The README's table is model_config.contract_table(): the contract is written in one place."""
    from segdeploy.serving.model_config import contract_table

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert contract_table() in readme, "README's served-contract table is stale: paste model_config.contract_table()"


def test_a_triton_repo_repository_loads_in_tritonserver_and_answers(exported_multi, tmp_path, rng):
    """The python-backend repository `triton-repo` writes, loaded as a server of its own would load it
    (segdeploy on the server's PYTHONPATH), answers a click as Decoder.predict does. Faults: a
    config the server rejects, a model.py or parameters the stub cannot load, or a wrong graph copy
    each end in CheckFailedError here. (The onnxruntime and tensorrt backends' repositories are not
    loaded: the wheel's tritonserver has the Python backend only; their configs are parsed strictly
    above.)"""
    from segdeploy import Decoder
    from segdeploy.serving.client import SegdeployClient
    from segdeploy.serving.server import ServeOptions, _python_paths, serve_repository

    out = tmp_path / "repo"
    store = f"shared:{tmp_path / 'store.sqlite'}"
    result = runner.invoke(app, ["triton-repo", str(exported_multi.path), "--out", str(out), "--image-store", store])
    assert result.exit_code == 0, result.output
    options = ServeOptions(http_port=free_port(), grpc_port=free_port(), metrics_port=free_port())
    embedding = rng.standard_normal((1, 256, 64, 64)).astype(np.float32)
    click, size = np.array([[300.0, 200.0]]), (480, 640)
    with serve_repository(out, options, python_paths=_python_paths()) as server, SegdeployClient(server.grpc_url) as client:
        image_id = client.add_image(embedding, orig_size=size)
        served = client.predict(image_id, point_coords=click, point_labels=[1], best_only=False, low_res=True)
    with Decoder.load(exported_multi.path) as decoder:
        local = decoder.predict(embedding, point_coords=click, point_labels=np.array([1]), orig_size=size)
    assert served.masks.shape == local.masks.shape == (3, *size)
    assert np.array_equal(served.masks, local.masks) and np.allclose(served.scores, local.scores, atol=1e-6)
