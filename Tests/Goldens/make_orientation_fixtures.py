"""EXIF orientation fixtures: Tests/Fixtures/orientation/orientation-N.jpg (N = 1...8), each storing the
pixels that Pillow's ImageOps.exif_transpose turns into upright.png, and a seed for the JPEG fuzz corpus.

The picture is 8x8 blocks of constant gray (24 rows, 40 columns), so that a quality-100 grayscale JPEG
holds it within a level or two whatever way it is stored. Run from the repository root:
    python3 Tests/Goldens/make_orientation_fixtures.py      (Pillow 9 or later)
"""
import numpy as np
from PIL import Image, ImageOps

BLOCKS = np.array([[10, 60, 110, 160, 210], [35, 85, 135, 185, 235], [250, 200, 150, 100, 50]], dtype=np.uint8)
upright = Image.fromarray(np.kron(BLOCKS, np.ones((8, 8), dtype=np.uint8)), "L")
upright.save("Tests/Fixtures/orientation/upright.png")

# What to store for orientation N so that exif_transpose gives the upright picture back: the inverse of
# the transpose it applies (2, 3, 4, 5 and 7 are their own inverses; 6 and 8 invert each other).
STORED = {1: None, 2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_270}
for n, method in STORED.items():
    stored = upright if method is None else upright.transpose(method)
    exif = Image.Exif()
    exif[0x0112] = n
    path = f"Tests/Fixtures/orientation/orientation-{n}.jpg"
    stored.save(path, quality=100, exif=exif.tobytes())
    seen = np.array(ImageOps.exif_transpose(Image.open(path)), dtype=int)
    assert seen.shape == (24, 40) and np.abs(seen - np.array(upright, dtype=int)).max() <= 2, n
    if n == 6:
        stored.save("Tests/Fuzz/Corpus/jpeg/exif-orientation-6.jpg", quality=90, exif=exif.tobytes())
