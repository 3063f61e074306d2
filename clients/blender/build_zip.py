"""Build the installable add-on zip: python clients/blender/build_zip.py [OUT_DIR] -> avatar_bridge_blender-X.Y.Z.zip

The zip holds the ``avatar_bridge_blender/`` folder, which both install paths accept: Edit >
Preferences > Add-ons > Install from Disk (legacy add-on, uses ``bl_info``) and Blender 4.2+
extensions (uses ``blender_manifest.toml``).
"""

from __future__ import annotations

import re
import sys
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = HERE / "avatar_bridge_blender"


def build(out_dir: Path) -> Path:
    manifest = (PACKAGE / "blender_manifest.toml").read_text(encoding="utf-8")
    version = re.search(r'^version = "([^"]+)"', manifest, re.M).group(1)
    out_dir.mkdir(parents=True, exist_ok=True)
    target = out_dir / f"avatar_bridge_blender-{version}.zip"
    files = sorted(p for p in PACKAGE.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.suffix != ".pyc")
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in files:
            zf.write(path, path.relative_to(HERE).as_posix())
    return target


if __name__ == "__main__":
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else HERE / "dist"
    print(build(out))
