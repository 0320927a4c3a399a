"""`segdeploy serve`'s documented options reach the server it starts: the options the CLI builds (start
captured, no server started) and the Python-backend repository written from them, parsed strictly
with Triton's ModelConfig. The real server runs in tests/test_serving*.py."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from segdeploy.cli import app

runner = CliRunner()


class _Stopped:
    http_url = grpc_url = metrics_url = "127.0.0.1:0"

    def wait(self) -> int:
        raise KeyboardInterrupt  # as Ctrl-C would

    def stop(self) -> int:
        return 0


@pytest.fixture
def started(monkeypatch):
    """Runs `serve ARGS` with start_server captured; returns the ServeOptions it was given."""
    import segdeploy.serving.server as server

    seen = []
    monkeypatch.setattr(server, "start_server", lambda options, progress=None: seen.append(options) or _Stopped())

    def run(*args: str):
        result = runner.invoke(app, ["serve", *args])
        assert result.exit_code == 0 and "stopped" in result.output, result.output
        return seen[-1]

    return run


def _config(options, tmp_path):
    from google.protobuf import text_format
    from tritonclient.grpc import model_config_pb2

    from segdeploy.serving.server import write_repository

    folder = write_repository(tmp_path / "repo", options, python_paths=None)
    config = text_format.Parse((folder / "sam_decoder" / "config.pbtxt").read_text(), model_config_pb2.ModelConfig())
    return config, {key: value.string_value for key, value in config.parameters.items()}


def test_serve_with_no_model_serves_random_weights(started, tmp_path):
    options = started()
    config, parameters = _config(options, tmp_path)
    assert options.source is None and parameters["segdeploy_source"] == ""
    assert config.HasField("dynamic_batching") and config.max_batch_size == 64 and config.instance_group[0].count == 1


def test_serve_options_reach_the_repository(started, exported, tmp_path):
    options = started(str(exported.path), "--no-dynamic-batching", "--instances", "3", "--backend", "torch",
                      "--checkpoint", "w.pth", "--threads", "2", "--address", "0.0.0.0", "--max-batch-size", "8", "--max-call-bytes", "1GiB")
    assert options.address == "0.0.0.0" and options.max_queue_delay_us is None
    config, parameters = _config(options, tmp_path)
    assert not config.HasField("dynamic_batching") and config.instance_group[0].count == 3 and config.max_batch_size == 8
    assert parameters["segdeploy_source"] == str(exported.path)
    assert json.loads(parameters["segdeploy_options"]) == {"backend": "torch", "threads": 2, "checkpoint": "w.pth", "max_call_bytes": 1 << 30}

