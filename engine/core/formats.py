"""The kinds of file Loupe knows by their name, in one place for every part that must agree.

The scanner, the data error messages, the desktop's drop and open dialogs all accept the
same image suffixes (their content is still checked by decoding), and everything that
writes, opens or recognises a model bundle uses the one bundle suffix. Plain constants
with no imports: the desktop reads them before torch or Pillow are loaded.
"""

from __future__ import annotations

# The image files a scan considers, in the order messages and file dialogs list them.
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff",
)

# A Loupe model bundle (loupe.engine.models.bundle): safetensors with JSON metadata.
BUNDLE_SUFFIX = ".loupe"
