"""Makes Tests/Fixtures/rocket-cmyk.jpg (a CMYK JPEG, as print workflows write them, from rocket.jpg) and
rocket-cmyk-pillow.png (Pillow's RGB decoding of it, the decoder golden). Run from this folder:

    pip install pillow
    python3 make_cmyk_fixture.py
"""
from PIL import Image

out = "../Fixtures"
Image.open(f"{out}/rocket.jpg").convert("CMYK").save(f"{out}/rocket-cmyk.jpg", quality=90)
Image.open(f"{out}/rocket-cmyk.jpg").convert("RGB").save(f"{out}/rocket-cmyk-pillow.png")
print("rocket-cmyk.jpg and rocket-cmyk-pillow.png written with Pillow", Image.__version__)
