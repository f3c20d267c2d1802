"""The PyTorch side of the benchmark: the same configurations and FLOP count as dino-bench.

    pip install torch==2.13.0+cpu numpy
    python3 Benchmarks/pytorch_bench.py --config fmnist-tiny --threads 2 --json

A training step is the official one: teacher forward on the global crops, student forward on all
crops (one backbone pass per resolution), DINO loss and center update, backward, per-tensor
clipping, AdamW, teacher EMA. Not part of the tests."""
import argparse
import json
import os
import resource
import statistics
import sys
import time
import warnings

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "Tests", "Goldens"))
# The reference builds the head's last layer with nn.utils.weight_norm, as the official DINO does.
warnings.filterwarnings("ignore", message=".*weight_norm.*deprecated", category=FutureWarning)
from reference import DINOHead, DINOLoss, MultiCropWrapper, VisionTransformer, clip_gradients, get_params_groups  # noqa: E402

ARCH = {"vit_tiny": (192, 12, 3), "vit_small": (384, 12, 6), "recipe96": (96, 6, 3)}
CONFIGS = {
    "fmnist-tiny": dict(arch="vit_tiny", size=28, patch=4, chans=1, local=12, nlocal=6, batch=64, out=4096, training=True),
    "cifar-tiny": dict(arch="vit_tiny", size=32, patch=4, chans=3, local=16, nlocal=6, batch=64, out=4096, training=True),
    "in-small16": dict(arch="vit_small", size=224, patch=16, chans=3, local=96, nlocal=10, batch=8, out=65536, training=True),
    "features-small16": dict(arch="vit_small", size=224, patch=16, chans=3, local=0, nlocal=0, batch=64, out=0, training=False),
    "features-tiny4": dict(arch="vit_tiny", size=28, patch=4, chans=1, local=0, nlocal=0, batch=256, out=0, training=False),
    # DINOv2's ViT-S/14 with 4 registers at 224 px (518 px position embedding, interpolated), as transformers'
    # Dinov2WithRegistersModel runs it (transformers==5.23.0, its default SDPA attention).
    "features-small14-reg4": dict(arch="vit_small", size=224, patch=14, chans=3, local=0, nlocal=0, batch=64, out=0, training=False,
                                  registers=4),
    # Recipes/fashion-mnist.yaml's model and crops (without its KoLeo term).
    "fmnist-recipe": dict(arch="recipe96", size=21, patch=7, chans=1, local=14, nlocal=6, batch=64, out=1024, training=True,
                          hidden=512, bottleneck=128, drop=0.0),
}


def backbone_flops(c, size):
    d, depth, _ = ARCH[c["arch"]]
    n = (size // c["patch"]) ** 2 + 1 + c.get("registers", 0)
    patch = 2 * (size // c["patch"]) ** 2 * d * c["chans"] * c["patch"] ** 2
    block = 2 * n * (3 * d * d + d * d + 8 * d * d) + 4 * n * n * d
    return patch + depth * block


def flops_per_step(c):
    b = c["batch"]
    if not c["training"]:
        return b * backbone_flops(c, c["size"])
    d = ARCH[c["arch"]][0]
    h, k = c.get("hidden", 2048), c.get("bottleneck", 256)
    head = 2 * (d * h + h * h + h * k + k * c["out"])
    student = 2 * (backbone_flops(c, c["size"]) + head) + c["nlocal"] * (backbone_flops(c, c["local"]) + head)
    teacher = 2 * (backbone_flops(c, c["size"]) + head)
    return b * (3 * student + teacher)


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="fmnist-tiny")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--json", action="store_true")
    p.add_argument("--autocast-bf16", action="store_true",
                   help="run the forward passes under torch.autocast('cpu', dtype=torch.bfloat16): bfloat16 matmuls")
    a = p.parse_args()
    autocast = lambda: torch.autocast("cpu", dtype=torch.bfloat16, enabled=a.autocast_bf16)
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    c = CONFIGS[a.config]
    d, depth, heads = ARCH[c["arch"]]

    def vit(rate):
        return VisionTransformer(c["size"], c["patch"], c["chans"], d, depth, heads, drop_path_rate=rate)

    times = []
    b = c["batch"]
    if c["training"]:
        def head():
            return DINOHead(d, c["out"], hidden_dim=c.get("hidden", 2048), bottleneck_dim=c.get("bottleneck", 256))
        student = MultiCropWrapper(vit(c.get("drop", 0.1)), head())
        teacher = MultiCropWrapper(vit(0.0), head())
        teacher.load_state_dict(student.state_dict())
        for q in teacher.parameters():
            q.requires_grad = False
        loss_fn = DINOLoss(c["out"], 2 + c["nlocal"], 0.04, 0.04, 0, 10)
        opt = torch.optim.AdamW(get_params_groups(student), lr=1e-4, weight_decay=0.04)
        glob = [torch.randn(b, c["chans"], c["size"], c["size"]) for _ in range(2)]
        loc = [torch.randn(b, c["chans"], c["local"], c["local"]) for _ in range(c["nlocal"])]
        for i in range(a.repeats + 2):
            t = time.perf_counter()
            with torch.no_grad(), autocast():
                t_out = teacher(glob)
            with autocast():
                s_out = student(glob + loc)
            loss = loss_fn(s_out.float(), t_out.float(), 0)
            opt.zero_grad()
            loss.backward()
            clip_gradients(student, 3.0)
            opt.step()
            with torch.no_grad():
                for q, k in zip(student.parameters(), teacher.parameters()):
                    k.data.mul_(0.996).add_((1 - 0.996) * q.detach().data)
            if i >= 2:
                times.append(time.perf_counter() - t)
    else:
        if c.get("registers"):
            from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel
            model = Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
                hidden_size=d, num_hidden_layers=depth, num_attention_heads=heads, image_size=518, patch_size=c["patch"],
                num_register_tokens=c["registers"], layerscale_value=1e-5)).eval()
        else:
            model = vit(0.0).eval()
        x = torch.randn(b, c["chans"], c["size"], c["size"])
        with torch.inference_mode(), autocast():
            for i in range(a.repeats + 2):
                t = time.perf_counter()
                model(x)
                if i >= 2:
                    times.append(time.perf_counter() - t)
    s = statistics.median(times)
    f = flops_per_step(c)
    # The machine's sgemm peak as torch sees it: the best of 5 products of 2048^3 (as dino-bench).
    n = 2048
    x, y = torch.randn(n, n), torch.randn(n, n)
    torch.mm(x, y)
    g = []
    for _ in range(5):
        t = time.perf_counter()
        torch.mm(x, y)
        g.append(time.perf_counter() - t)
    peak = 2 * n ** 3 / min(g) / 1e9
    out = {"program": "pytorch", "config": a.config, "threads": a.threads, "batch": b, "images_per_s": b / s,
           "seconds_per_step": s, "gflops": f / s / 1e9, "sgemm_peak_gflops": peak, "share_of_peak": f / s / 1e9 / peak,
           "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "flops_per_step": f,
           "torch": torch.__version__, "matmul_precision": "bfloat16" if a.autocast_bf16 else "float32"}
    print(json.dumps(out, sort_keys=True) if a.json else out)


if __name__ == "__main__":
    main()
