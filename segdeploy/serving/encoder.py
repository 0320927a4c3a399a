"""`serve --encoder`: images in, the image's decoder inputs out, with SAM's preprocessing (longest side
to 1024 with PIL's bilinear resize, SAM's pixel mean/std, zero padding to 1024x1024 at the bottom and
right), then an image-encoder graph on onnxruntime. Any encoder whose input is [1,3,1024,1024] float32
and whose outputs are the served family's per-image inputs (a SAM 1 encoder: [1,256,64,64]) works."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

from segdeploy.contract import MODEL_INPUT_SIZE
from segdeploy.errors import BadInputError, MissingDependencyError

PIXEL_MEAN = np.array([123.675, 116.28, 103.53], np.float32)
PIXEL_STD = np.array([58.395, 57.12, 57.375], np.float32)
SIGNATURES = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff")  # PNG, JPEG


def decode_image(data: bytes, orig_size: tuple[int, int] | None = None) -> np.ndarray:
    """uint8 RGB [H,W,3] from PNG/JPEG file bytes, or from raw RGB bytes of orig_size (H, W)."""
    if data.startswith(SIGNATURES):
        try:
            from PIL import Image
        except ImportError:
            raise MissingDependencyError("decoding PNG/JPEG needs pillow: pip install 'segdeploy[serve]'") from None
        try:
            with Image.open(io.BytesIO(data)) as image:
                return np.asarray(image.convert("RGB"))
        except Exception as error:
            raise BadInputError(f"image is not a readable PNG/JPEG ({error})") from None
    if orig_size is None:
        raise BadInputError("image is neither PNG nor JPEG; raw RGB needs orig_size (H, W) with H*W*3 bytes")
    height, width = (int(n) for n in orig_size)
    if height <= 0 or width <= 0 or len(data) != height * width * 3:
        raise BadInputError(f"raw RGB image of orig_size {height}x{width} needs {max(height, 0) * max(width, 0) * 3} bytes, got {len(data)}")
    return np.frombuffer(data, np.uint8).reshape(height, width, 3)


def resized_shape(height: int, width: int, side: int = MODEL_INPUT_SIZE) -> tuple[int, int]:
    """(H, W) after the longest-side resize, with SAM's float arithmetic (ResizeLongestSide)."""
    scale = side * 1.0 / max(height, width)
    return int(height * scale + 0.5), int(width * scale + 0.5)


def preprocess(rgb: np.ndarray, side: int = MODEL_INPUT_SIZE) -> np.ndarray:
    """SAM's image preprocessing: [1,3,side,side] float32 from uint8 RGB [H,W,3]."""
    from PIL import Image

    height, width = rgb.shape[:2]
    new_height, new_width = resized_shape(height, width, side)
    resized = np.asarray(Image.fromarray(np.ascontiguousarray(rgb)).resize((new_width, new_height), Image.BILINEAR), np.float32)
    out = np.zeros((1, 3, side, side), np.float32)
    out[0, :, :new_height, :new_width] = ((resized - PIXEL_MEAN) / PIXEL_STD).transpose(2, 0, 1)
    return out


class ImageEncoder:
    """An image-encoder graph on onnxruntime whose outputs are, in order, the served family's per-image inputs."""

    def __init__(self, path: str | Path, specs: list, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise BadInputError(f"encoder not found: {path}")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as error:
            raise BadInputError(f"--encoder {path.name} is not a loadable ONNX graph ({str(error).splitlines()[0][:200]})") from None
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        want_input = [1, 3, MODEL_INPUT_SIZE, MODEL_INPUT_SIZE]
        want_outputs = [[1, *spec.dims[1:]] for spec in specs]
        got_outputs = [list(o.shape) for o in outputs]
        if len(inputs) != 1 or list(inputs[0].shape) != want_input or inputs[0].type != "tensor(float)" or got_outputs != want_outputs:
            raise BadInputError(
                f"--encoder {path.name} takes {[list(i.shape) for i in inputs]} and returns {got_outputs}; the served decoder needs an "
                f"encoder from float32 {want_input} to {want_outputs} ({', '.join(spec.name for spec in specs)})"
            )
        self.input_name = inputs[0].name
        self.names = [spec.name for spec in specs]

    def encode(self, rgb: np.ndarray) -> dict[str, np.ndarray]:
        """The image's decoder inputs by name, without the leading 1."""
        outputs = self.session.run(None, {self.input_name: preprocess(rgb)})
        return {name: np.ascontiguousarray(output[0], np.float32) for name, output in zip(self.names, outputs)}
