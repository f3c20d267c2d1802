"""Writes the PyTorch goldens the Swift tests compare against. Run from this folder:

    pip install torch==2.13.0+cpu numpy   # the pinned reference
    python3 make_goldens.py

Each golden is a small safetensors file. Weights and inputs are float32 (what the Swift model uses);
reference outputs and gradients are computed in float64 from those exact float32 values, so a
comparison measures only the Swift side's float32 rounding."""
import math
import sys

import numpy as np
import torch

from reference import (DINOHead, DINOLoss, MultiCropWrapper, VisionTransformer, cancel_gradients_last_layer,
                       clip_gradients, cosine_scheduler, get_params_groups, save_safetensors)

assert torch.__version__.startswith("2.13.0"), f"pinned to torch 2.13.0+cpu, found {torch.__version__}"
VERSIONS = {"torch": torch.__version__, "numpy": np.__version__, "python": sys.version.split()[0]}


def perturb(model, generator):
    """Replace the tiny official init with O(1) values so every path carries signal."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name == "backbone.norm.weight":
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=generator))
            elif name.endswith("weight_g"):
                p.copy_(0.5 + torch.rand(p.shape, generator=generator))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=generator))


def model_golden():
    g = torch.Generator().manual_seed(0)
    cfg = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4)
    head_cfg = dict(in_dim=32, out_dim=40, hidden_dim=48, bottleneck_dim=16, nlayers=3, norm_last_layer=False)
    model = MultiCropWrapper(VisionTransformer(**cfg), DINOHead(**head_cfg))
    perturb(model, g)
    groups = {"global": torch.randn(4, 3, 16, 16, generator=g), "local": torch.randn(4, 3, 8, 8, generator=g),
              "wide": torch.randn(2, 3, 8, 12, generator=g)}
    tensors = {f"param.{n[len('backbone.'):] if n.startswith('backbone.') else n}": p
               for n, p in model.state_dict().items()}
    for k, v in groups.items():
        tensors[f"input.{k}"] = v
    model = model.double()
    crops = [v.double() for v in groups.values()]
    logits = model(crops)
    upstream = torch.randn(logits.shape, generator=g).double()
    (logits * upstream).sum().backward()
    for k, c in zip(groups, crops):
        with torch.no_grad():
            tensors[f"output.cls.{k}"] = model.backbone(c)
            tensors[f"output.attention.{k}"] = model.backbone.get_last_selfattention(c)
    tensors["output.logits"] = logits.detach()
    tensors["upstream"] = upstream
    for n, p in model.named_parameters():
        if p.grad is not None:
            tensors[f"grad.{n[len('backbone.'):] if n.startswith('backbone.') else n}"] = p.grad
    meta = dict(VERSIONS, config=cfg, head=head_cfg)
    save_safetensors("model.safetensors", tensors, {k: str(v).replace("'", '"') for k, v in meta.items()})


def interpolation_golden():
    g = torch.Generator().manual_seed(1)
    vit = VisionTransformer(img_size=28, patch_size=4, in_chans=1, embed_dim=8, depth=1, num_heads=2)
    with torch.no_grad():
        vit.pos_embed.copy_(torch.randn(vit.pos_embed.shape, generator=g))
    tensors = {"pos_embed": vit.pos_embed.detach().clone()}
    vit = vit.double()
    for h, w in [(3, 3), (5, 4), (9, 11), (2, 7)]:
        x = torch.zeros(1, 1 + h * w, 8, dtype=torch.float64)
        tensors[f"grid.{h}x{w}"] = vit.interpolate_pos_encoding(x, h * 4, w * 4)[0, 1:].detach()
    save_safetensors("interpolation.safetensors", tensors, VERSIONS)


if __name__ == "__main__":
    torch.set_num_threads(1)
    model_golden()
    interpolation_golden()
    if len(sys.argv) < 2 or sys.argv[1] != "--model-only":
        try:
            from make_training_goldens import training_goldens
            training_goldens()
        except ImportError:
            pass
    print("goldens written with", VERSIONS)
