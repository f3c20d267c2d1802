"""Makes the small image fixtures in Tests/Fixtures from Debian's python3-skimage photos and writes
Pillow's decoding of them to decode.safetensors (the decoder golden). Run from this folder:

    apt-get download python3-skimage && dpkg-deb -x python3-skimage_*.deb /tmp/skim
    pip install pillow numpy
    python3 make_fixtures.py /tmp/skim/usr/lib/python3/dist-packages/skimage/data
"""
import sys

import numpy as np
from PIL import Image

from reference import save_safetensors

src = sys.argv[1]
out = "../Fixtures"
Image.open(f"{src}/chelsea.png").convert("RGB").crop((150, 60, 246, 124)).save(f"{out}/chelsea.png")
Image.open(f"{src}/camera.png").convert("L").resize((48, 40), Image.BICUBIC).save(f"{out}/camera-gray.png")
Image.open(f"{src}/rocket.jpg").convert("RGB").resize((96, 64), Image.BICUBIC).save(f"{out}/rocket.jpg", quality=90)
Image.open(f"{src}/rocket.jpg").convert("RGB").resize((256, 170), Image.BICUBIC).save(f"{out}/rocket-256.jpg", quality=85)
tensors = {}
for name, mode in [("chelsea.png", "RGB"), ("camera-gray.png", "L"), ("rocket.jpg", "RGB"), ("rocket-256.jpg", "RGB")]:
    tensors[name] = np.asarray(Image.open(f"{out}/{name}").convert(mode), dtype=np.uint8)
save_safetensors("decode.safetensors", tensors, {"pillow": Image.__version__})
print("fixtures and decode.safetensors written")
