"""``farm blender-addon``: the Blender add-on as a zip Blender can install.

The zip holds one folder, ``farmtui_blender/``, with the add-on's modules
(``farmtui/integrations/blender/*.py``) and nothing else: no caches, and
fixed timestamps, so the same code always makes the same bytes.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

ADDON_MODULE = "farmtui_blender"
ZIP_NAME = f"{ADDON_MODULE}.zip"
SOURCE = Path(__file__).with_name("blender")
# Zip timestamps cannot be older than 1980; a fixed one keeps the archive reproducible.
_STAMP = (1980, 1, 1, 0, 0, 0)


def addon_files() -> list[Path]:
    """The add-on's source files, in a stable order."""
    return sorted(path for path in SOURCE.glob("*.py") if path.is_file())


def write_blender_addon(out: Path) -> Path:
    """Write ``out/farmtui_blender.zip`` (making ``out`` if needed) and return its path.

    Written to a temporary name first, so a reader never sees half a zip.
    """
    out.mkdir(parents=True, exist_ok=True)
    target = out / ZIP_NAME
    partial = out / (ZIP_NAME + ".partial")
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in addon_files():
            info = zipfile.ZipInfo(f"{ADDON_MODULE}/{path.name}", date_time=_STAMP)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    os.replace(partial, target)
    return target.resolve()
