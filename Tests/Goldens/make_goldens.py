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

import reference
from reference import (DINOHead, DINOLoss, MultiCropWrapper, VisionTransformer, cancel_gradients_last_layer,
                       clip_gradients, cosine_scheduler, get_params_groups, ibot_patch_loss, save_safetensors)

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


def unprefixed(name):
    """State-dict names as the Swift layout has them: the backbone's without `backbone.`."""
    return name[len("backbone."):] if name.startswith("backbone.") else name


def whole_model_tensors(model, groups, g, attention=False):
    """Parameters and inputs (float32), then in float64: each group's CLS (and last attention), the
    logits of all groups, a random upstream U and every gradient of Σ U⊙logits."""
    tensors = {f"param.{unprefixed(n)}": p for n, p in model.state_dict().items()}
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
            if attention:
                tensors[f"output.attention.{k}"] = model.backbone.get_last_selfattention(c)
    tensors["output.logits"], tensors["upstream"] = logits.detach(), upstream
    for n, p in model.named_parameters():
        if p.grad is not None:
            tensors[f"grad.{unprefixed(n)}"] = p.grad
    return tensors


def model_golden():
    g = torch.Generator().manual_seed(0)
    cfg = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4)
    head_cfg = dict(in_dim=32, out_dim=40, hidden_dim=48, bottleneck_dim=16, nlayers=3, norm_last_layer=False)
    model = MultiCropWrapper(VisionTransformer(**cfg), DINOHead(**head_cfg))
    perturb(model, g)
    groups = {"global": torch.randn(4, 3, 16, 16, generator=g), "local": torch.randn(4, 3, 8, 8, generator=g),
              "wide": torch.randn(2, 3, 8, 12, generator=g)}
    tensors = whole_model_tensors(model, groups, g, attention=True)
    meta = dict(VERSIONS, config=cfg, head=head_cfg)
    save_safetensors("model.safetensors", tensors, {k: str(v).replace("'", '"') for k, v in meta.items()})


def shifted_golden():
    """Shifted patch tokenization: a small model (patch 5, shift 2) on a square and a non-square crop
    group; CLS outputs and every gradient of Σ U⊙logits."""
    g = torch.Generator().manual_seed(6)
    cfg = dict(img_size=15, patch_size=5, in_chans=3, embed_dim=16, depth=1, num_heads=2, shifted_patches=True)
    head_cfg = dict(in_dim=16, out_dim=12, hidden_dim=24, bottleneck_dim=8, nlayers=2, norm_last_layer=False)
    model = MultiCropWrapper(VisionTransformer(**cfg), DINOHead(**head_cfg))
    perturb(model, g)
    groups = {"square": torch.randn(3, 3, 15, 15, generator=g), "wide": torch.randn(2, 3, 10, 15, generator=g)}
    tensors = whole_model_tensors(model, groups, g)
    save_safetensors("shifted.safetensors", tensors, dict(VERSIONS, config=str(cfg), head=str(head_cfg)))


def masked_golden():
    """The masked-patch (iBOT) path: the tiny model with a mask token on four global crops, some patches
    masked; the shared head on the CLS rows and on the masked patch rows; every gradient of
    Σ U₁⊙logits_cls + Σ U₂⊙logits_patch; and the iBOT patch loss on random logits."""
    g = torch.Generator().manual_seed(5)
    cfg = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=2, num_heads=4)
    head_cfg = dict(in_dim=32, out_dim=40, hidden_dim=48, bottleneck_dim=16, nlayers=3, norm_last_layer=False)
    model = MultiCropWrapper(VisionTransformer(**cfg, mask_token=True), DINOHead(**head_cfg))
    perturb(model, g)
    images = torch.randn(4, 3, 16, 16, generator=g)
    masks = torch.zeros(4, 16, dtype=torch.bool)
    for crop, patches in [(0, [1, 5, 6]), (2, [0, 7, 8, 9, 15]), (3, [3])]:  # crop 1 unmasked
        masks[crop, patches] = True
    tensors = {f"param.{unprefixed(n)}": p for n, p in model.state_dict().items()}
    tensors["input.images"], tensors["input.masks"] = images, masks.float()
    model = model.double()
    tokens = model.backbone.forward_tokens(images.double(), masks)
    cls_logits = model.head(tokens[:, 0])
    patch_logits = model.head(tokens[:, 1:][masks])
    upstream_cls = torch.randn(cls_logits.shape, generator=g).double()
    upstream_patch = torch.randn(patch_logits.shape, generator=g).double()
    ((cls_logits * upstream_cls).sum() + (patch_logits * upstream_patch).sum()).backward()
    tensors["output.cls_logits"], tensors["output.patch_logits"] = cls_logits.detach(), patch_logits.detach()
    tensors["upstream.cls"], tensors["upstream.patch"] = upstream_cls, upstream_patch
    for n, p in model.named_parameters():
        if p.grad is not None:
            tensors[f"grad.{unprefixed(n)}"] = p.grad

    # The loss alone: 9 masked patches of the 4 crops above, 24 prototypes, temperatures 0.1 and 0.05.
    student = (torch.randn(9, 24, generator=g) * 3).float().double().requires_grad_()
    teacher = (torch.randn(9, 24, generator=g) * 3).float().double()
    center = torch.randn(1, 24, generator=g).float().double()
    loss, new_center = ibot_patch_loss(student, teacher, masks, center, 0.1, 0.05)
    loss.backward()
    tensors["loss.student"], tensors["loss.teacher"], tensors["loss.center_in"] = student.detach(), teacher, center
    tensors["loss.value"], tensors["loss.grad"], tensors["loss.center_out"] = loss.detach().reshape(1), student.grad, new_center
    save_safetensors("masked.safetensors", tensors, dict(VERSIONS, config=str(cfg), head=str(head_cfg)))


MASK64 = (1 << 64) - 1


class SwiftRandom:
    """The Swift side's `RandomGenerator` (xoshiro256** seeded by splitmix64) and its `nextFloat`, so a
    golden can use the very uniforms the Swift forward draws for drop path."""

    def __init__(self, seed):
        self.state, s = [], seed
        for _ in range(4):
            s = (s + 0x9E3779B97F4A7C15) & MASK64
            z = ((s ^ (s >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            self.state.append(z ^ (z >> 31))

    def next(self):
        s = self.state
        rotl = lambda x, k: ((x << k) | (x >> (64 - k))) & MASK64
        result = (rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3]
        s[2] ^= t
        s[3] = rotl(s[3], 45)
        return result

    def next_float(self):
        return (self.next() >> 40) * 2.0 ** -24


def drop_path_golden():
    """Stochastic depth with the Swift forward's own masks: the tiny model at 3 blocks and drop path 0.6
    (block rates 0, 0.3, 0.6) on 6 global crops. The Swift forward draws, per block, B uniforms for the
    attention branch and then B for the MLP branch from `RandomGenerator(seed: 11)`; the reference's
    `drop_path` takes the same uniforms in the same order, so both keep the same branches. CLS outputs,
    logits and every gradient of Σ U⊙logits, in float64 as the others."""
    g = torch.Generator().manual_seed(7)
    cfg = dict(img_size=16, patch_size=4, in_chans=3, embed_dim=32, depth=3, num_heads=4, drop_path_rate=0.6)
    head_cfg = dict(in_dim=32, out_dim=40, hidden_dim=48, bottleneck_dim=16, nlayers=3, norm_last_layer=False)
    model = MultiCropWrapper(VisionTransformer(**cfg), DINOHead(**head_cfg))
    perturb(model, g)
    images = torch.randn(6, 3, 16, 16, generator=g)
    swift_random, scales = SwiftRandom(11), []

    def fixed_drop_path(x, drop_prob=0.0, training=False):
        uniforms = torch.tensor([swift_random.next_float() for _ in range(x.shape[0])], dtype=torch.float32)
        keep = 1 - drop_prob
        # The Swift side's float32 arithmetic: keep probability and floor(keep + u)/keep.
        keep32 = torch.tensor(keep, dtype=torch.float32)
        mask = torch.floor(keep32 + uniforms)
        assert (keep32 + uniforms - mask).abs().min() > 1e-6 or drop_prob == 0, "a uniform at the keep boundary"
        scales.append((mask / keep32).tolist())
        return x * (mask.double() / keep).reshape((-1,) + (1,) * (x.ndim - 1))

    tensors = {f"param.{unprefixed(n)}": p for n, p in model.state_dict().items()}
    tensors["input.global"] = images
    model = model.double().train()
    official_drop_path, reference.drop_path = reference.drop_path, fixed_drop_path
    try:
        cls = model.backbone(images.double())
    finally:
        reference.drop_path = official_drop_path
    logits = model.head(cls)
    upstream = torch.randn(logits.shape, generator=g).double()
    (logits * upstream).sum().backward()
    dropped = sum(s.count(0.0) for s in scales)
    assert 0 < dropped < 6 * len(scales) - 12, f"{dropped} dropped branches: pick a seed that drops some, not all"
    tensors["output.cls.global"], tensors["output.logits"], tensors["upstream"] = cls.detach(), logits.detach(), upstream
    tensors["scales"] = torch.tensor(scales, dtype=torch.float32)
    for n, p in model.named_parameters():
        if p.grad is not None:
            tensors[f"grad.{unprefixed(n)}"] = p.grad
    save_safetensors("drop_path.safetensors", tensors, dict(VERSIONS, config=str(cfg), head=str(head_cfg)))


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
    masked_golden()
    shifted_golden()
    drop_path_golden()
    if len(sys.argv) < 2 or sys.argv[1] != "--model-only":
        try:
            from make_training_goldens import training_goldens
            training_goldens()
        except ImportError:
            pass
    print("goldens written with", VERSIONS)
