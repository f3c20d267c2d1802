"""Writes the Hugging Face checkpoint fixtures (`huggingface/`) the Swift readers are tested on. Run from
this folder:

    pip install torch==2.13.0+cpu transformers==5.23.0
    python3 make_huggingface_checkpoints.py

A tiny `transformers.ViTModel` (16 px RGB, patch 4, 64 wide, 1 layer, 2 heads of 32, eps 1e-12, no pooler),
the layout of `facebook/dino-vits16`, saved by `save_pretrained` (vit/: config.json and
model.safetensors) and as earlier versions saved it (vit-bin/: config.json and pytorch_model.bin), and outputs.safetensors: an input
image, the last hidden state's CLS row and the last layer's attention, and the CLS row for a 12x20 image, in float64 from the float32 weights.
"""
import os

import torch
import transformers
from transformers import ViTConfig, ViTModel

from reference import save_safetensors

assert torch.__version__.startswith("2.13.0"), f"pinned to torch 2.13.0+cpu, found {torch.__version__}"
assert transformers.__version__ == "5.23.0", f"pinned to transformers 5.23.0, found {transformers.__version__}"
torch.manual_seed(0)
config = ViTConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2, intermediate_size=256, image_size=16, patch_size=4,
                   num_channels=3, layer_norm_eps=1e-12, hidden_act="gelu", qkv_bias=True)
model = ViTModel(config, add_pooling_layer=False)
with torch.no_grad():
    for p in model.parameters():
        p.copy_(0.3 * torch.randn(p.shape))
model.save_pretrained("huggingface/vit", safe_serialization=True)
# transformers 5 writes safetensors only; pytorch_model.bin is what earlier versions wrote (and the Hub still
# serves for many models): torch.save of the tensors under the checkpoint names save_pretrained wrote (the
# Hub's names, `encoder.layer.N.attention.attention.query`, not transformers 5's module names).
from safetensors.torch import load_file
model.save_pretrained("huggingface/vit-bin")
legacy = load_file("huggingface/vit-bin/model.safetensors")
os.remove("huggingface/vit-bin/model.safetensors")
torch.save(legacy, "huggingface/vit-bin/pytorch_model.bin")

image = torch.rand(1, 3, 16, 16)
wide = torch.rand(1, 3, 12, 20)  # a 3x5 grid: the position embedding interpolated (size=, no antialias)
config._attn_implementation = "eager"
reference = ViTModel(config, add_pooling_layer=False).double()
reference.load_state_dict({k: v.double() for k, v in model.state_dict().items()})
reference.eval()
with torch.no_grad():
    out = reference(pixel_values=image.double(), output_attentions=True)
    out_wide = reference(pixel_values=wide.double(), interpolate_pos_encoding=True)
save_safetensors("huggingface/outputs.safetensors",
                 {"image": image, "cls": out.last_hidden_state[:, 0], "attention": out.attentions[-1],
                  "image_wide": wide, "cls_wide": out_wide.last_hidden_state[:, 0]},
                 {"torch": torch.__version__, "transformers": transformers.__version__})
for root, _, files in sorted(os.walk("huggingface")):
    for name in sorted(files):
        print(os.path.join(root, name), os.path.getsize(os.path.join(root, name)))
