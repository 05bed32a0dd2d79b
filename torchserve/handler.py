"""TorchServe handler for wms model archives (`wms export-onnx --mar DIR`).

It lets real TorchServe serve the same `model.onnx` that `wms-serve` serves: the model runs in
ONNX Runtime, and images are preprocessed as upstream's `valTransforms` do (DESIGN §5), with the
parameters read back from the model's own metadata (`preprocessing` JSON written by the exporter),
never assumed:

    RGB -> resize to input_width x input_height (Pillow bilinear, antialiased when shrinking)
        -> /255 -> contrast stretch (x - p_low) / (p_high - p_low + 1e-6) clipped to [0, 1],
           percentiles linear-interpolated over all values of the image
        -> median blur (median_kernel, edge-replicated) per channel on uint8(x * 255) (truncated)
        -> /255 -> CHW float32

The response for each request is a PNG mask (0 / 255) at the photo's size, as `wms-serve`
answers by default. A form field `size=model` (`curl -F data=@photo.jpg -F size=model`) asks for
the network's input size instead, as `wms-serve`'s `?size=model` or the same field does:
TorchServe 0.12's frontend hands a request's form fields to the handler but drops the query of
`/predictions/{model}` (it passes the query only on SageMaker's `/invocations`), so
`?size=model` never reaches this handler. A request whose `Accept` asks for JSON gets
`{"mask_base64", "metadata": {...}}` like `wms-serve`.

Needs `onnxruntime`, `numpy` and `Pillow` in TorchServe's Python (see requirements.txt in the
archive). `wms-serve` is the supported server; this handler exists for users who keep TorchServe.
"""

import base64
import io
import json
import os
import time

import numpy as np
import onnxruntime as ort

INPUT_NAME = "input"
OUTPUT_NAME = "logits"


def contrast_stretch(x, low, high):
    """(x - p_low) / (p_high - p_low + 1e-6), clipped to [0, 1]; x in [0, 1], HWC float64."""
    p_low, p_high = np.percentile(x, [low, high])
    return np.clip((x - p_low) / (p_high - p_low + 1e-6), 0.0, 1.0)


def median_blur(u8, k):
    """Per-channel k x k median of an HWC uint8 image, borders replicated (as cv2.medianBlur)."""
    if k <= 1:
        return u8
    r = k // 2
    padded = np.pad(u8, ((r, r), (r, r), (0, 0)), mode="edge")
    h, w = u8.shape[:2]
    windows = [padded[dy:dy + h, dx:dx + w] for dy in range(k) for dx in range(k)]
    # The median of an odd count of uint8 values is one of them: exact, no rounding.
    return np.median(np.stack(windows, axis=0), axis=0).astype(np.uint8)


def preprocess_rgb(rgb_u8, pre):
    """HWC uint8 RGB already resized to the network size -> CHW float32."""
    # float64 throughout, as upstream's numpy code: the uint8 truncation below depends on it.
    x = rgb_u8.astype(np.float64) / 255.0
    x = contrast_stretch(x, pre["percentile_low"], pre["percentile_high"])
    u8 = (x * 255.0).astype(np.uint8)
    u8 = median_blur(u8, int(pre["median_kernel"]))
    return np.ascontiguousarray((u8.astype(np.float64) / 255.0).astype(np.float32).transpose(2, 0, 1))


def decode_image(data, pre):
    """Image bytes -> (CHW float32 at the network size, (width, height) of the photo)."""
    from PIL import Image, ImageOps

    img = Image.open(io.BytesIO(data))
    img = ImageOps.exif_transpose(img).convert("RGB")
    size = img.size
    img = img.resize((int(pre["input_width"]), int(pre["input_height"])), Image.BILINEAR)
    return preprocess_rgb(np.asarray(img, dtype=np.uint8), pre), size


def mask_png(logits_1hw, size):
    """Logits -> (PNG of the foreground mask (sigmoid > 0.5, i.e. logit > 0) at `size`, or at
    the network's size when `size` is None; the mask's (width, height))."""
    from PIL import Image

    mask = Image.fromarray(np.where(logits_1hw[0] > 0.0, 255, 0).astype(np.uint8), mode="L")
    if size is not None and mask.size != size:
        mask = mask.resize(size, Image.NEAREST)
    buf = io.BytesIO()
    mask.save(buf, format="PNG")
    return buf.getvalue(), mask.size


class BadRequest(Exception):
    """A request the handler refuses; TorchServe answers it with `code` (see `_refuse`)."""

    def __init__(self, message, code=400):
        super().__init__(message)
        self.message = message
        self.code = code


def wants_model_size(row):
    """A `size` field of `model` -> True; absent, empty or `original` -> False (the photo's
    size, the default, as `wms-serve`). TorchServe passes each form field (and the query of
    `/invocations`) as a key of the request's row, as bytes (or str when decoded)."""
    value = row.get("size")
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    if value in (None, "", "original"):
        return False
    if value == "model":
        return True
    raise BadRequest(f"size={value[:40]!r}; expected size=original or size=model")


class WaterMetersHandler:
    """TorchServe custom handler: initialize(context) once, then handle(data, context)."""

    def __init__(self):
        self.session = None
        self.pre = None
        self.metadata = {}
        self.initialized = False

    def initialize(self, context):
        model_dir = context.system_properties.get("model_dir")
        serialized = context.manifest["model"]["serializedFile"]
        options = ort.SessionOptions()
        threads = os.environ.get("WMS_HANDLER_THREADS")
        if threads:
            options.intra_op_num_threads = int(threads)
        self.session = ort.InferenceSession(
            os.path.join(model_dir, serialized), options, providers=["CPUExecutionProvider"]
        )
        self.metadata = dict(self.session.get_modelmeta().custom_metadata_map)
        self.pre = json.loads(self.metadata["preprocessing"])
        self.initialized = True

    def inference(self, batch):
        """[N, 3, H, W] float32 -> logits [N, 1, H, W]."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: batch})[0]

    def handle(self, data, context):
        started = time.perf_counter()
        images, sizes, accepts = [], [], []
        for i, row in enumerate(data):
            body = row.get("data") or row.get("body") or row.get("image") or row.get("file")
            if isinstance(body, str):
                body = base64.b64decode(body)
            if body is None:
                raise BadRequest("no image in the request; hint: send the photo as the body")
            model_size = wants_model_size(row)
            chw, size = decode_image(bytes(body), self.pre)
            images.append(chw)
            sizes.append(None if model_size else size)
            accepts.append(self._accept(context, i))
        logits = self.inference(np.stack(images, axis=0))
        latency_ms = (time.perf_counter() - started) * 1000.0
        input_size = [int(self.pre["input_width"]), int(self.pre["input_height"])]
        out = []
        for i, (l, size, accept) in enumerate(zip(logits, sizes, accepts)):
            png, mask_size = mask_png(l, size)
            if "application/json" in accept:
                self._content_type(context, i, "application/json")
                out.append({
                    "mask_base64": base64.b64encode(png).decode("ascii"),
                    "metadata": {
                        "model_name": self.metadata.get("model_name", ""),
                        "model_version": self.metadata.get("version", ""),
                        "latency_ms": latency_ms,
                        "input_size": input_size,
                        "mask_size": list(mask_size),
                        "coverage": float((l[0] > 0.0).mean()),
                    },
                })
            else:
                self._content_type(context, i, "image/png")
                out.append(png)
        return out

    @staticmethod
    def _accept(context, i):
        """The request's `Accept`, whatever its spelling: TorchServe keeps the client's header
        names as sent, and HTTP/2 clients or hyper (`reqwest`) send them in lower case."""
        try:
            headers = context.get_all_request_header(i) or {}
            for name, value in headers.items():
                if isinstance(name, str) and name.lower() == "accept" and isinstance(value, str):
                    return value
            return ""
        except AttributeError:  # test doubles with get_request_header only
            pass
        try:
            return context.get_request_header(i, "Accept") or ""
        except Exception:  # older TorchServe contexts or test doubles without headers
            return ""

    @staticmethod
    def _content_type(context, i, value):
        """Says what the answer is (TorchServe sends no content type of its own for bytes)."""
        try:
            context.set_response_content_type(i, value)
        except Exception:  # test doubles without response headers
            pass


_service = WaterMetersHandler()


def _refuse(error):
    """TorchServe's own exception for an answer with a status code (`ts.utils.util`); a plain
    exception outside TorchServe (the tests call `handle` directly)."""
    try:
        from ts.utils.util import PredictionException
    except ImportError:
        return error
    return PredictionException(error.message, error.code)


def handle(data, context):
    """TorchServe's module-level entry point."""
    if not _service.initialized:
        _service.initialize(context)
    if data is None:
        return None
    try:
        return _service.handle(data, context)
    except BadRequest as e:
        raise _refuse(e) from e
