"""Writes the PyTorch checkpoint fixtures (`torch/`) the Swift readers are tested on. Run from this folder:

    pip install torch==2.13.0+cpu numpy
    python3 make_torch_checkpoints.py

Files, all from a tiny official-layout ViT (16 px RGB, patch 4, 64 wide, 1 block, 1 head of 64) written by
`torch.save` as users download them:
- backbone.pth: a plain state dict, as `dino_deits16_pretrain.pth`; backbone-fp16.pth, backbone-bf16.pth: the same
  tensors in half and bfloat16 precision.
- training.pth: an official `main_dino.py` checkpoint: `student` (DDP's `module.` prefix) and `teacher` state dicts with
  `backbone.` and `head.` parts, the AdamW state, `epoch`, the run's `argparse.Namespace` and the loss center.
- outputs.safetensors: an input image and the model's CLS output and last-layer attention on it (float64 reference
  from the float32 weights), for backbone.pth, and the bf16 model's CLS output.
- small.pth: one of each kind of value (float, half, bfloat16, int64 and transposed tensors, a Namespace,
  nested containers), the fuzzer's seed.
- refused-*.pth: files a reader must refuse: a pickle that calls `posix.system`, a storage type that does not exist,
  a tensor larger than its storage, and a truncated archive.
"""
import argparse
import io
import os
import pickle
import zipfile

import torch

from reference import DINOHead, VisionTransformer, save_safetensors

assert torch.__version__.startswith("2.13.0"), f"pinned to torch 2.13.0+cpu, found {torch.__version__}"
torch.manual_seed(0)
os.makedirs("torch", exist_ok=True)

model = VisionTransformer(img_size=16, patch_size=4, in_chans=3, embed_dim=64, depth=1, num_heads=1)
with torch.no_grad():
    for p in model.parameters():
        p.copy_(0.3 * torch.randn(p.shape))
state = model.state_dict()
torch.save(state, "torch/backbone.pth")
torch.save({k: v.half() for k, v in state.items()}, "torch/backbone-fp16.pth")
torch.save({k: v.bfloat16() for k, v in state.items()}, "torch/backbone-bf16.pth")

# An official training checkpoint (main_dino.py's save_dict).
head = DINOHead(64, 32, hidden_dim=32, bottleneck_dim=16)
student = {"module.backbone." + k: v for k, v in state.items()}
student.update({"module.head." + k: v for k, v in head.state_dict().items()})
teacher = {"backbone." + k: v.clone() for k, v in state.items()}
teacher.update({"head." + k: v.clone() for k, v in head.state_dict().items()})
params = [torch.nn.Parameter(v.clone()) for v in student.values()]
optimizer = torch.optim.AdamW(params, lr=1e-3)
for p in params:
    p.grad = torch.randn_like(p)
optimizer.step()
args = argparse.Namespace(arch="vit_small", patch_size=16, out_dim=65536, lr=0.0005, batch_size_per_gpu=64,
                          output_dir="/checkpoint/dino", local_crops_scale=(0.05, 0.4), use_fp16=False)
torch.save({"student": student, "teacher": teacher, "optimizer": optimizer.state_dict(), "epoch": 3, "args": args,
            "dino_loss": {"center": torch.randn(1, 32)}}, "torch/training.pth")

# A small archive of every kind of value, the fuzzer's seed: float, half, bfloat16 and int64 tensors,
# a non-contiguous view, a Namespace, nested containers.
base = torch.arange(12, dtype=torch.float32).reshape(3, 4)
torch.save({"w": base, "t": base.t(), "h": base.half()[1], "b": base.bfloat16(), "i": torch.arange(5),
            "args": argparse.Namespace(lr=0.1, name="x"), "nested": {"list": [1, 2.5, "s", (3, None, True)]}},
           "torch/small.pth")

# Reference outputs, in float64 from the float32 weights.
image = torch.rand(1, 3, 16, 16)
double = VisionTransformer(img_size=16, patch_size=4, in_chans=3, embed_dim=64, depth=1, num_heads=1).double()
double.load_state_dict({k: v.double() for k, v in state.items()})
with torch.no_grad():
    cls = double(image.double())
    attention = double.get_last_selfattention(image.double())
    bf16 = VisionTransformer(img_size=16, patch_size=4, in_chans=3, embed_dim=64, depth=1, num_heads=1).double()
    bf16.load_state_dict({k: v.bfloat16().double() for k, v in state.items()})
    cls_bf16 = bf16(image.double())
save_safetensors("torch/outputs.safetensors", {"image": image, "cls": cls, "attention": attention, "cls_bf16": cls_bf16},
                 {"torch": torch.__version__})


# Refused files: the same archive with a replaced pickle, or cut short.
def with_pickle(source, target, payload):
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_STORED) as zout:
        for item in zin.infolist():
            data = zin.read(item.filename)
            zout.writestr(item.filename, payload if item.filename.endswith("data.pkl") else data)


class System:
    def __reduce__(self):
        return (os.system, ("echo pwned",))


with_pickle("torch/backbone.pth", "torch/refused-system.pth", pickle.dumps({"x": System()}, protocol=2))
original = zipfile.ZipFile("torch/backbone.pth").read("backbone/data.pkl")
with_pickle("torch/backbone.pth", "torch/refused-storage.pth", original.replace(b"FloatStorage", b"EvilStorage"))
# The first tensor's size (1, 1, 64) becomes (1000000000, 1, 64): far more than its 64-float storage.
huge = original.replace(b"K\x01K\x01K@\x87", b"J\x00\xca\x9a\x3bK\x01K@\x87", 1)
assert huge != original
with_pickle("torch/backbone.pth", "torch/refused-size.pth", huge)
data = open("torch/backbone.pth", "rb").read()
open("torch/refused-truncated.pth", "wb").write(data[: len(data) // 2])
for name in sorted(os.listdir("torch")):
    print(name, os.path.getsize("torch/" + name))
