"""``segdeploy.client``: the client of `segdeploy serve` (register an image once, click by its id;
``predict`` returns a ``Prediction``, as ``Decoder.predict`` does). Needs the ``serve`` extra."""

from segdeploy.serving.client import SegdeployClient, ServerError

__all__ = ["SegdeployClient", "ServerError"]
