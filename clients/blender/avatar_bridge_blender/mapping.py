"""Which armature bone each streamed VRM humanoid bone drives (no bpy here; tested from plain Python).

Maps go from the stream's VRM 1.0 bone names to bone names of the user's armature. Built-in maps:
VRM (bones named like the VRM add-on's basic armature or VRoid's J_Bip_*), Rigify (metarig /
DEF- names), Mixamo (any ``mixamorig*:`` prefix). A custom map is a JSON object
``{"leftUpperArm": "MyArm.L", ...}``. For a VRM model imported with the VRM add-on, the add-on's own
humanoid assignment is used first (see ``__init__.py``).
"""

from __future__ import annotations

import json
from pathlib import Path

# VRM humanoid hierarchy (parent of each bone), used when the stream sends no hello (VMC).
VRM_PARENTS: dict[str, str | None] = {
    "hips": None, "spine": "hips", "chest": "spine", "upperChest": "chest", "neck": "upperChest",
    "head": "neck", "jaw": "head",
}
for _s in ("left", "right"):
    VRM_PARENTS.update({
        f"{_s}UpperLeg": "hips", f"{_s}LowerLeg": f"{_s}UpperLeg", f"{_s}Foot": f"{_s}LowerLeg",
        f"{_s}Toes": f"{_s}Foot", f"{_s}Shoulder": "upperChest", f"{_s}UpperArm": f"{_s}Shoulder",
        f"{_s}LowerArm": f"{_s}UpperArm", f"{_s}Hand": f"{_s}LowerArm", f"{_s}Eye": "head",
    })
    for _finger, _segments in (("Thumb", ("Metacarpal", "Proximal", "Distal")),
                               ("Index", ("Proximal", "Intermediate", "Distal")),
                               ("Middle", ("Proximal", "Intermediate", "Distal")),
                               ("Ring", ("Proximal", "Intermediate", "Distal")),
                               ("Little", ("Proximal", "Intermediate", "Distal"))):
        _parent = f"{_s}Hand"
        for _seg in _segments:
            VRM_PARENTS[f"{_s}{_finger}{_seg}"] = _parent
            _parent = f"{_s}{_finger}{_seg}"

BODY = ("hips", "spine", "chest", "upperChest", "neck", "head")
LIMBS = ("Shoulder", "UpperArm", "LowerArm", "Hand", "UpperLeg", "LowerLeg", "Foot", "Toes")


def _sided(table: dict[str, str], left: str, right: str) -> dict[str, str]:
    """Expand {'UpperArm': 'upper_arm{s}'} for both sides, ``{s}`` replaced by each side's suffix."""
    out = {}
    for limb, pattern in table.items():
        out["left" + limb] = pattern.format(s=left)
        out["right" + limb] = pattern.format(s=right)
    return out


# Bone names of the VRM add-on's basic armature (and its VRM exports).
VRM_ADDON_MAP = {"hips": "hips", "spine": "spine", "chest": "chest", "upperChest": "upper_chest",
                 "neck": "neck", "head": "head"}
VRM_ADDON_MAP.update(_sided({"Shoulder": "shoulder{s}", "UpperArm": "upper_arm{s}", "LowerArm": "lower_arm{s}",
                             "Hand": "hand{s}", "UpperLeg": "upper_leg{s}", "LowerLeg": "lower_leg{s}",
                             "Foot": "foot{s}", "Toes": "toes{s}"}, ".L", ".R"))

# VRoid Studio exports.
VROID_MAP = {"hips": "J_Bip_C_Hips", "spine": "J_Bip_C_Spine", "chest": "J_Bip_C_Chest",
             "upperChest": "J_Bip_C_UpperChest", "neck": "J_Bip_C_Neck", "head": "J_Bip_C_Head"}
VROID_MAP.update(_sided({"Shoulder": "J_Bip_{s}_Shoulder", "UpperArm": "J_Bip_{s}_UpperArm",
                         "LowerArm": "J_Bip_{s}_LowerArm", "Hand": "J_Bip_{s}_Hand", "UpperLeg": "J_Bip_{s}_UpperLeg",
                         "LowerLeg": "J_Bip_{s}_LowerLeg", "Foot": "J_Bip_{s}_Foot", "Toes": "J_Bip_{s}_ToeBase"},
                        "L", "R"))

# Rigify metarig names (the generated rig's DEF- bones carry the same names with a prefix).
RIGIFY_MAP = {"hips": "spine", "spine": "spine.001", "chest": "spine.002", "upperChest": "spine.003",
              "neck": "spine.004", "head": "spine.006"}
RIGIFY_MAP.update(_sided({"Shoulder": "shoulder{s}", "UpperArm": "upper_arm{s}", "LowerArm": "forearm{s}",
                          "Hand": "hand{s}", "UpperLeg": "thigh{s}", "LowerLeg": "shin{s}", "Foot": "foot{s}",
                          "Toes": "toe{s}"}, ".L", ".R"))

MIXAMO_MAP = {"hips": "Hips", "spine": "Spine", "chest": "Spine1", "upperChest": "Spine2", "neck": "Neck",
              "head": "Head"}
MIXAMO_MAP.update(_sided({"Shoulder": "{s}Shoulder", "UpperArm": "{s}Arm", "LowerArm": "{s}ForeArm",
                          "Hand": "{s}Hand", "UpperLeg": "{s}UpLeg", "LowerLeg": "{s}Leg", "Foot": "{s}Foot",
                          "Toes": "{s}ToeBase"}, "Left", "Right"))

MAP_KINDS = ("VRM", "RIGIFY", "MIXAMO", "CUSTOM")


def _lookup(wanted: str, bone_names: set[str]) -> str | None:
    """Exact name, else a name that only adds a prefix (``mixamorig:``, ``mixamorig1:``, ``DEF-``)."""
    if wanted in bone_names:
        return wanted
    for name in sorted(bone_names):
        if name.endswith(":" + wanted) or name == "DEF-" + wanted:
            return name
    return None


def resolve(kind: str, bone_names, custom: dict[str, str] | None = None) -> dict[str, str]:
    """{VRM bone -> armature bone} for the bones of this armature that the map names."""
    names = set(bone_names)
    if kind == "VRM":
        tables = [VRM_ADDON_MAP, VROID_MAP]
    elif kind == "RIGIFY":
        tables = [RIGIFY_MAP]
    elif kind == "MIXAMO":
        tables = [MIXAMO_MAP]
    elif kind == "CUSTOM":
        tables = [custom or {}]
    else:
        raise ValueError(f"unknown bone map {kind!r}; choose one of {', '.join(MAP_KINDS)}")
    best: dict[str, str] = {}
    for table in tables:  # the table that matches the most bones wins (VRM add-on vs VRoid names)
        found = {vrm: arm for vrm, wanted in table.items() if (arm := _lookup(wanted, names))}
        if len(found) > len(best):
            best = found
    return best


def load_custom_map(path: str) -> dict[str, str]:
    """Read a custom map file: a JSON object {VRM bone name: armature bone name}."""
    file = Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"custom bone map {path!r} does not exist; write a JSON object like "
                                '{"leftUpperArm": "Arm.L"}')
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"custom bone map {path}: invalid JSON ({exc})") from exc
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise ValueError(f'custom bone map {path}: expected a JSON object of strings like {{"leftUpperArm": "Arm.L"}}')
    unknown = sorted(k for k in data if k not in VRM_PARENTS)
    if unknown:
        raise ValueError(f"custom bone map {path}: {', '.join(unknown)} are not VRM humanoid bone names "
                         "(use camelCase VRM 1.0 names such as leftUpperArm)")
    return data
