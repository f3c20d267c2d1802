"""Writes the DINOv2 checkpoint fixtures (`dinov2/`) the Swift readers are tested on, each saved the way users
download it, and the outputs of the library that defines it. Run from this folder:

    pip install torch==2.13.0+cpu numpy transformers==5.23.0
    pip install --no-deps dinov2==0.0.1.dev2   # the official hub code (2023, without registers)
    python3 make_dinov2_checkpoints.py

Tiny models (56 px RGB, patch 14, so a 4x4 grid like 518 px's 37x37; 64 wide, 1 block, 1 head of 64, LayerScale):
- hub.pth: the official `DinoVisionTransformer` state dict, as `dinov2_vits14_pretrain.pth` (with `mask_token`).
- hub-swiglu.pth: the same with the SwiGLU feed-forward of `dinov2_vitg14_pretrain.pth` (`mlp.w12`, `mlp.w3`).
- hub-reg4.pth: a 4-register model under the hub's names, as `dinov2_vits14_reg4_pretrain.pth` (`register_tokens`); the
  hub code installed here predates registers, so the weights are transformers' `Dinov2WithRegistersModel`'s, renamed.
- timm-reg4.pth: the same weights as timm's `vit_small_patch14_reg4_dinov2` holds them (timm 1.0's
  `checkpoint_filter_fn`: `reg_token`, the class position folded into `cls_token`, `pos_embed` without its class row,
  no `mask_token`); timm-swiglu.pth: hub-swiglu's weights as timm's `vit_giant_patch14_dinov2` (SwiGLUPacked:
  `mlp.fc1` holds w12, `mlp.fc2` w3). timm itself does not load here (it needs torchvision).
- hf-dinov2/ (model.safetensors), hf-dinov2-bin/ (pytorch_model.bin), hf-dinov2-reg/, hf-dinov2-swiglu/: transformers'
  `Dinov2Model` / `Dinov2WithRegistersModel` from `save_pretrained`, with config.json.
- outputs.safetensors: per model, an image at the native 56x56 and one at 42x70 (interpolated position embedding):
  the CLS token, the patch tokens and the last layer's attention, in float64 from the float32 weights, by the hub code
  (hub, hub-swiglu) or by transformers (the rest)."""
import os
import shutil

import torch
import transformers
from dinov2.layers.block import Block
from dinov2.models.vision_transformer import DinoVisionTransformer
from safetensors.torch import load_file
from transformers import Dinov2Config, Dinov2Model, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

from make_dinov2_goldens import LastAttention, hub_state
from reference import save_safetensors

assert torch.__version__.startswith("2.13.0"), f"pinned to torch 2.13.0+cpu, found {torch.__version__}"
assert transformers.__version__ == "5.23.0", f"pinned to transformers 5.23.0, found {transformers.__version__}"
torch.manual_seed(0)
shutil.rmtree("dinov2", ignore_errors=True)
os.makedirs("dinov2")
images = {"native": torch.rand(1, 3, 56, 56), "wide": torch.rand(1, 3, 42, 70)}
outputs = {f"image.{k}": v for k, v in images.items()}


def randomize(model):
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name and name.endswith("weight"):
                p.copy_(1 + 0.2 * torch.randn(p.shape))
            else:
                p.copy_(0.3 * torch.randn(p.shape))
    return model


def hub_model(ffn_layer):
    return DinoVisionTransformer(block_fn=Block, img_size=56, patch_size=14, embed_dim=64, depth=1, num_heads=1, mlp_ratio=4,
                                 init_values=1e-5, ffn_layer=ffn_layer, block_chunks=0)


def record_hub(name, model):
    model = model.double().eval()
    for size, image in images.items():
        with torch.no_grad():
            features = model.forward_features(image.double())
            outputs[f"{name}.{size}.cls"] = features["x_norm_clstoken"]
            outputs[f"{name}.{size}.patch"] = features["x_norm_patchtokens"]
            outputs[f"{name}.{size}.attention"] = LastAttention(model)(image.double())


def record_transformers(name, model, registers):
    model = model.double().eval()
    for size, image in images.items():
        with torch.no_grad():
            out = model(pixel_values=image.double(), output_attentions=True)
        outputs[f"{name}.{size}.cls"] = out.last_hidden_state[:, 0]
        outputs[f"{name}.{size}.patch"] = out.last_hidden_state[:, 1 + registers:]
        outputs[f"{name}.{size}.attention"] = out.attentions[-1]


def save_transformers(model, folder, binary=False):
    model.save_pretrained(folder)
    if binary:  # what transformers 4 wrote, and the Hub still serves: the same names in a torch.save archive
        tensors = load_file(f"{folder}/model.safetensors")
        os.remove(f"{folder}/model.safetensors")
        torch.save(tensors, f"{folder}/pytorch_model.bin")


def to_timm(state):
    """timm 1.0's checkpoint_filter_fn for DINOv2: registers as `reg_token` with the class position folded into
    `cls_token`; SwiGLU's w12/w3 as fc1/fc2; no mask token."""
    out = {}
    for k, v in state.items():
        if k == "mask_token":
            continue
        out[k.replace("mlp.w12.", "mlp.fc1.").replace("mlp.w3.", "mlp.fc2.")] = v
    if "register_tokens" in out:
        out["reg_token"] = out.pop("register_tokens")
        out["cls_token"] = out["cls_token"] + out["pos_embed"][:, :1]
        out["pos_embed"] = out["pos_embed"][:, 1:]
    return out


# The official hub layout, with and without SwiGLU.
for name, ffn in [("hub", "mlp"), ("hub-swiglu", "swiglufused")]:
    model = randomize(hub_model(ffn))
    torch.save(model.state_dict(), f"dinov2/{name}.pth")
    if ffn == "swiglufused":
        torch.save(to_timm(model.state_dict()), "dinov2/timm-swiglu.pth")
    record_hub(name, model)

# Registers: transformers' model, saved as transformers does and under the hub's and timm's names.
eager = dict(attn_implementation="eager")
registers = randomize(Dinov2WithRegistersModel(Dinov2WithRegistersConfig(
    hidden_size=64, num_hidden_layers=1, num_attention_heads=1, mlp_ratio=4, image_size=56, patch_size=14,
    num_register_tokens=4, layerscale_value=1e-5, layer_norm_eps=1e-6, **eager)))
save_transformers(registers, "dinov2/hf-dinov2-reg")
hub = hub_state(load_file("dinov2/hf-dinov2-reg/model.safetensors"))
torch.save(hub, "dinov2/hub-reg4.pth")
torch.save(to_timm(hub), "dinov2/timm-reg4.pth")
record_transformers("hf-dinov2-reg", registers, 4)

for name, swiglu in [("hf-dinov2", False), ("hf-dinov2-swiglu", True)]:
    model = randomize(Dinov2Model(Dinov2Config(hidden_size=64, num_hidden_layers=1, num_attention_heads=1, mlp_ratio=4,
                                               image_size=56, patch_size=14, layerscale_value=1e-5, use_swiglu_ffn=swiglu,
                                               **eager)))
    save_transformers(model, f"dinov2/{name}")
    if not swiglu:
        save_transformers(model, "dinov2/hf-dinov2-bin", binary=True)
    record_transformers(name, model, 0)

save_safetensors("dinov2/outputs.safetensors", outputs, {"torch": torch.__version__, "transformers": transformers.__version__,
                                                         "dinov2": "0.0.1.dev2"})
for root, _, files in sorted(os.walk("dinov2")):
    for file in sorted(files):
        print(os.path.join(root, file), os.path.getsize(os.path.join(root, file)))
