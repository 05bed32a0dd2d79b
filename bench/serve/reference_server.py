"""Reference server for `make bench-serve`: what upstream serves with — PyTorch eager on the same
weights, upstream preprocessing (Pillow decode + EXIF transpose, Pillow bilinear resize to the
network size, /255, 2/98 percentile contrast stretch, cv2 3x3 median blur on uint8), FastAPI +
uvicorn, one request per forward pass. Falls back to the stdlib ThreadingHTTPServer when FastAPI
is not importable (the printed line says which).

Usage:
  reference_server.py init --out model.pth [--seed 0]     random upstream weights (state_dict)
  reference_server.py serve --weights model.pth --port N  serve POST /predictions/{m} (raw body)
                                                          and POST /predict (multipart `file`)
"""

import argparse
import io
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

INPUT_SIZE = 512  # upstream valTransforms: Resize((512, 512))


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
    )


class WaterMetersUNet(nn.Module):
    """Upstream architecture (DESIGN §5): enc1..4, bottleneck, dec4..1, final 1x1 conv."""

    def __init__(self, in_channels=3, base_filters=16, out_channels=1):
        super().__init__()
        b = base_filters
        self.enc1, self.enc2 = block(in_channels, b), block(b, 2 * b)
        self.enc3, self.enc4 = block(2 * b, 4 * b), block(4 * b, 8 * b)
        self.bottleneck = block(8 * b, 16 * b)
        self.dec4, self.dec3 = block(16 * b + 8 * b, 8 * b), block(8 * b + 4 * b, 4 * b)
        self.dec2, self.dec1 = block(4 * b + 2 * b, 2 * b), block(2 * b + b, b)
        self.final = nn.Conv2d(b, out_channels, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(F.max_pool2d(e1, 2))
        e3 = self.enc3(F.max_pool2d(e2, 2))
        e4 = self.enc4(F.max_pool2d(e3, 2))
        bn = self.bottleneck(F.max_pool2d(e4, 2))
        up = lambda t, skip: F.interpolate(t, size=skip.shape[2:], mode="bilinear", align_corners=False)
        d4 = self.dec4(torch.cat([up(bn, e4), e4], 1))
        d3 = self.dec3(torch.cat([up(d4, e3), e3], 1))
        d2 = self.dec2(torch.cat([up(d3, e2), e2], 1))
        d1 = self.dec1(torch.cat([up(d2, e1), e1], 1))
        return self.final(d1)


def init_weights(out, seed):
    torch.manual_seed(seed)
    model = WaterMetersUNet()
    # Random BatchNorm statistics, so eval mode is not the identity.
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0.0, 0.2)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.6, 1.4)
            m.bias.data.normal_(0.0, 0.1)
            m.num_batches_tracked.fill_(1000)
    torch.save(model.state_dict(), out)


def preprocess(data):
    """Upstream valTransforms on image bytes -> [1, 3, 512, 512] float32 and the photo size."""
    import cv2
    from PIL import Image, ImageOps

    img = ImageOps.exif_transpose(Image.open(io.BytesIO(data))).convert("RGB")
    size = img.size
    img = img.resize((INPUT_SIZE, INPUT_SIZE), Image.BILINEAR)
    x = np.asarray(img).astype(np.float64) / 255.0
    p2, p98 = np.percentile(x, [2, 98])
    x = np.clip((x - p2) / (p98 - p2 + 1e-6), 0.0, 1.0)
    x = cv2.medianBlur((x * 255).astype(np.uint8), 3).astype(np.float64) / 255.0
    return torch.from_numpy(x.astype(np.float32).transpose(2, 0, 1)).unsqueeze(0), size


class Predictor:
    def __init__(self, weights):
        self.model = WaterMetersUNet()
        self.model.load_state_dict(torch.load(weights, map_location="cpu"))
        self.model.eval()

    def png(self, data):
        from PIL import Image

        x, _ = preprocess(data)
        with torch.inference_mode():
            logits = self.model(x)[0, 0].numpy()
        mask = Image.fromarray(np.where(logits > 0.0, 255, 0).astype(np.uint8), mode="L")
        buf = io.BytesIO()
        mask.save(buf, format="PNG")
        return buf.getvalue()


def serve_fastapi(pred, port):
    import uvicorn
    from fastapi import FastAPI, File, Request, UploadFile
    from fastapi.responses import JSONResponse, Response

    app = FastAPI()

    @app.get("/ping")
    def ping():
        return {"status": "Healthy"}

    @app.post("/predictions/{model}")
    async def predictions(model: str, request: Request):
        import anyio

        data = await request.body()
        try:
            png = await anyio.to_thread.run_sync(pred.png, data)
        except Exception as e:  # upstream answers 500 on bad input
            return JSONResponse({"error": str(e)}, status_code=500)
        return Response(png, media_type="image/png")

    # Sync endpoint: FastAPI runs it in its thread pool, as upstream's is.
    @app.post("/predict")
    def predict(file: UploadFile = File(...)):
        return Response(pred.png(file.file.read()), media_type="image/png")

    print("reference: FastAPI + uvicorn", file=sys.stderr, flush=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning")


def serve_stdlib(pred, port):
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    class H(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _send(self, code, ctype, body):
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self):
            self._send(200, "application/json", b'{"status": "Healthy"}')

        def do_POST(self):
            data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                self._send(200, "image/png", pred.png(data))
            except Exception as e:
                self._send(500, "text/plain", str(e).encode())

    print("reference: stdlib ThreadingHTTPServer (FastAPI not installed)", file=sys.stderr, flush=True)
    ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()


def main():
    ap = argparse.ArgumentParser()
    sub = ap.add_subparsers(dest="cmd", required=True)
    i = sub.add_parser("init")
    i.add_argument("--out", required=True)
    i.add_argument("--seed", type=int, default=0)
    s = sub.add_parser("serve")
    s.add_argument("--weights", required=True)
    s.add_argument("--port", type=int, required=True)
    a = ap.parse_args()
    if a.cmd == "init":
        init_weights(a.out, a.seed)
        return
    pred = Predictor(a.weights)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        serve_stdlib(pred, a.port)
    else:
        serve_fastapi(pred, a.port)


if __name__ == "__main__":
    main()
