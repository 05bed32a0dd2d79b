"""PyTorch eager reference for `make bench-train`: the upstream WaterMetersUNet (written from the
DESIGN §5 facts), BCEWithLogits, Adam(weight_decay), model.train(), timed like `wms-train bench`.

Its inputs are tensors already in memory (no decoding, no augmentation): the venv has no image
library, and this makes the reference an upper bound for PyTorch — the wms figure includes its
whole data pipeline. Prints one JSON line.
"""

import argparse
import json
import os
import time

import torch
import torch.nn as nn
import torch.nn.functional as F


def block(cin, cout):
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class WaterMetersUNet(nn.Module):
    def __init__(self, inChannels=3, baseFilters=16, outChannels=1):
        super().__init__()
        b = baseFilters
        self.enc1 = block(inChannels, b)
        self.enc2 = block(b, 2 * b)
        self.enc3 = block(2 * b, 4 * b)
        self.enc4 = block(4 * b, 8 * b)
        self.bottleneck = block(8 * b, 16 * b)
        self.dec4 = block(16 * b + 8 * b, 8 * b)
        self.dec3 = block(8 * b + 4 * b, 4 * b)
        self.dec2 = block(4 * b + 2 * b, 2 * b)
        self.dec1 = block(2 * b + b, b)
        self.pool = nn.MaxPool2d(2)
        self.final = nn.Conv2d(b, outChannels, 1)

    def forward(self, x):
        e1 = self.enc1(x)
        e2 = self.enc2(self.pool(e1))
        e3 = self.enc3(self.pool(e2))
        e4 = self.enc4(self.pool(e3))
        b = self.bottleneck(self.pool(e4))

        def up(x, skip):
            return F.interpolate(x, size=skip.shape[2:], mode="bilinear", align_corners=False)

        d4 = self.dec4(torch.cat([up(b, e4), e4], 1))
        d3 = self.dec3(torch.cat([up(d4, e3), e3], 1))
        d2 = self.dec2(torch.cat([up(d3, e2), e2], 1))
        d1 = self.dec1(torch.cat([up(d2, e1), e1], 1))
        return self.final(d1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--batch-size", type=int, default=4)
    ap.add_argument("--input-size", type=int, default=512)
    ap.add_argument("--threads", type=int, default=os.cpu_count())
    ap.add_argument("--base-filters", type=int, default=16)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(42)
    n, s = args.batch_size, args.input_size
    # A few distinct batches, cycled, so the loop is not one cached input.
    batches = [(torch.rand(n, 3, s, s), (torch.rand(n, 1, s, s) > 0.95).float()) for _ in range(4)]
    model = WaterMetersUNet(baseFilters=args.base_filters)
    model.train()
    opt = torch.optim.Adam(model.parameters(), lr=1e-4, weight_decay=1e-4)
    loss_fn = nn.BCEWithLogitsLoss(pos_weight=torch.tensor([1.0]))

    start = None
    for step in range(args.warmup + args.steps):
        if step == args.warmup:
            start = time.perf_counter()
        x, y = batches[step % len(batches)]
        opt.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
        loss.item()
    elapsed = time.perf_counter() - start
    print(json.dumps({
        "framework": f"pytorch {torch.__version__} eager",
        "images_per_second": args.steps * n / elapsed,
        "steps": args.steps,
        "batch_size": n,
        "input_size": s,
        "threads": args.threads,
    }))


if __name__ == "__main__":
    main()
