"""Writes the DINOv2 backbone goldens (LayerScale, SwiGLU, registers, DINOv2's position-embedding
interpolations) the Swift tests compare against. Run from this folder:

    pip install torch==2.13.0+cpu numpy transformers==5.23.0
    pip install --no-deps dinov2==0.0.1.dev2   # the official hub code (2023, without registers)
    python3 make_dinov2_goldens.py

- dinov2_mlp.safetensors, dinov2_swiglu.safetensors: the official `DinoVisionTransformer` (block_chunks=0,
  LayerScale, `ffn_layer` "mlp" / "swiglufused") under the DINO head, on a native, a smaller and a non-square
  crop group (the hub's interpolation: scale factor with its 0.1 offset, no antialias); CLS, logits and every
  gradient of a random projection of the logits, as make_goldens.py's model golden.
- dinov2_registers.safetensors: transformers' `Dinov2WithRegistersModel` (4 registers, LayerScale; antialiased
  `size=` interpolation, as the hub's `_reg` models) under the DINO head, its tensors renamed to the hub's names;
  groups at the native size, shrunk and enlarged; also the last layer's attention.
- dinov2_interpolation.safetensors: a 37x37 grid (518 px at patch 14) interpolated to 16x16 (224 px) and to
  other grids by the three rules: scale factor with offset 0.1, `size=`, `size=` with antialias.

Weights and inputs are float32; reference outputs and gradients are float64 from those values."""
import math
import sys

import torch
import transformers
from dinov2.layers.block import Block
from dinov2.models.vision_transformer import DinoVisionTransformer
from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from make_goldens import VERSIONS, perturb, whole_model_tensors
from reference import DINOHead, MultiCropWrapper, save_safetensors

assert transformers.__version__ == "5.23.0", f"pinned to transformers 5.23.0, found {transformers.__version__}"
VERSIONS = dict(VERSIONS, transformers=transformers.__version__, dinov2="0.0.1.dev2")


class LastAttention:
    """The last block's attention probabilities of a DinoVisionTransformer, from a hook on its input."""

    def __init__(self, model):
        self.model = model

    def __call__(self, x):
        captured = {}
        attention = self.model.blocks[-1].attn
        handle = attention.register_forward_hook(lambda module, inputs, output: captured.update(x=inputs[0]))
        self.model(x)
        handle.remove()
        y = captured["x"]
        b, n, c = y.shape
        qkv = attention.qkv(y).reshape(b, n, 3, attention.num_heads, c // attention.num_heads).permute(2, 0, 3, 1, 4)
        return ((qkv[0] * attention.scale) @ qkv[1].transpose(-2, -1)).softmax(dim=-1)


def official_golden(path, ffn_layer, seed):
    g = torch.Generator().manual_seed(seed)
    cfg = dict(img_size=28, patch_size=7, in_chans=3, embed_dim=32, depth=2, num_heads=4, mlp_ratio=4, init_values=1.0,
               ffn_layer=ffn_layer, block_chunks=0)
    backbone = DinoVisionTransformer(block_fn=Block, **cfg)
    head_cfg = dict(in_dim=32, out_dim=24, hidden_dim=40, bottleneck_dim=16, nlayers=3, norm_last_layer=False)
    model = MultiCropWrapper(backbone, DINOHead(**head_cfg))
    perturb(model, g)
    model.backbone.get_last_selfattention = LastAttention(model.backbone)
    groups = {"global": torch.randn(4, 3, 28, 28, generator=g), "small": torch.randn(4, 3, 14, 14, generator=g),
              "wide": torch.randn(2, 3, 14, 21, generator=g)}
    tensors = whole_model_tensors(model, groups, g, attention=True)
    tensors = {k: v for k, v in tensors.items() if not k.endswith("mask_token")}  # unused without masks
    save_safetensors(path, tensors, {k: str(v).replace("'", '"') for k, v in dict(VERSIONS, config=cfg, head=head_cfg).items()})


HUB_NAMES = [("embeddings.cls_token", "cls_token"), ("embeddings.position_embeddings", "pos_embed"),
             ("embeddings.register_tokens", "register_tokens"), ("embeddings.mask_token", "mask_token"),
             ("embeddings.patch_embeddings.projection", "patch_embed.proj"), ("encoder.layer.", "blocks."),
             ("attention.output.dense", "attn.proj"), ("attention.o_proj", "attn.proj"), ("layer_scale1.lambda1", "ls1.gamma"),
             ("layer_scale2.lambda1", "ls2.gamma"), ("layernorm.", "norm.")]


def hub_name(name):
    """A transformers Dinov2 tensor name as the hub's (query/key/value are joined by `hub_state`)."""
    for hf, hub in HUB_NAMES:
        name = name.replace(hf, hub)
    return name


def hub_state(state):
    """A transformers Dinov2 state dict (the checkpoint's names, `attention.attention.query`, or transformers 5's
    module names, `attention.q_proj`) under the hub's names, query/key/value stacked into qkv."""
    out = {}
    for name, value in state.items():
        for query, key, value_name in [("attention.attention.query.", "attention.attention.key.", "attention.attention.value."),
                                       ("attention.q_proj.", "attention.k_proj.", "attention.v_proj.")]:
            if query in name:
                base = name.split(query)[0]
                parts = [state[name.replace(query, part)] for part in (query, key, value_name)]
                out[hub_name(base) + "attn.qkv." + name.rsplit(".", 1)[1]] = torch.cat(parts)
                break
            if key in name or value_name in name:
                break
        else:
            out[hub_name(name)] = value
    return out


class HuggingFaceBackbone(torch.nn.Module):
    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x):
        return self.model(pixel_values=x).last_hidden_state[:, 0]

    def get_last_selfattention(self, x):
        return self.model(pixel_values=x, output_attentions=True).attentions[-1]


def registers_golden():
    g = torch.Generator().manual_seed(21)
    config = Dinov2WithRegistersConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=4, image_size=28,
                                       patch_size=7, num_register_tokens=4, layerscale_value=1.0, layer_norm_eps=1e-6)
    config._attn_implementation = "eager"
    head_cfg = dict(in_dim=32, out_dim=24, hidden_dim=40, bottleneck_dim=16, nlayers=3, norm_last_layer=False)
    model = MultiCropWrapper(HuggingFaceBackbone(Dinov2WithRegistersModel(config)), DINOHead(**head_cfg))
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight") or name.endswith("layernorm.weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(0.3 * torch.randn(p.shape, generator=g))
    groups = {"global": torch.randn(4, 3, 28, 28, generator=g), "small": torch.randn(4, 3, 14, 14, generator=g),
              "large": torch.randn(2, 3, 35, 42, generator=g)}
    tensors = whole_model_tensors(model, groups, g, attention=True)
    renamed = {}
    for key in ("param", "grad"):
        state = {k[len(key) + 1 + len("model."):]: v for k, v in tensors.items() if k.startswith(key + ".model.")}
        renamed.update({f"{key}.{k}": v for k, v in hub_state(state).items() if k != "mask_token"})
    renamed.update({k: v for k, v in tensors.items() if not k.startswith("param.model.") and not k.startswith("grad.model.")})
    save_safetensors("dinov2_registers.safetensors", renamed,
                     {k: str(v).replace("'", '"') for k, v in dict(VERSIONS, head=head_cfg, config=config.to_dict()).items()})


def interpolation_golden():
    g = torch.Generator().manual_seed(3)
    grid = torch.randn(1, 37 * 37, 2, generator=g)
    tensors = {"grid": grid[0]}
    source = grid.double().reshape(1, 37, 37, 2).permute(0, 3, 1, 2)
    for h, w in [(16, 16), (37, 37), (5, 9), (20, 26)]:
        by_offset = torch.nn.functional.interpolate(source, scale_factor=((h + 0.1) / 37, (w + 0.1) / 37), mode="bicubic")
        by_size = torch.nn.functional.interpolate(source, size=(h, w), mode="bicubic", align_corners=False)
        antialiased = torch.nn.functional.interpolate(source, size=(h, w), mode="bicubic", align_corners=False, antialias=True)
        for name, out in [("offset", by_offset), ("size", by_size), ("antialias", antialiased)]:
            assert out.shape[-2:] == (h, w)
            tensors[f"{name}.{h}x{w}"] = out[0].permute(1, 2, 0).reshape(h * w, 2)
    save_safetensors("dinov2_interpolation.safetensors", tensors, VERSIONS)


if __name__ == "__main__":
    torch.set_num_threads(1)
    official_golden("dinov2_mlp.safetensors", "mlp", 11)
    official_golden("dinov2_swiglu.safetensors", "swiglufused", 12)
    registers_golden()
    interpolation_golden()
    print("DINOv2 goldens written with", VERSIONS)
