"""Read a VRM avatar's humanoid rest pose (glTF 2.0 binary with the VRM 0.x or 1.0 extension).

Used by the VMC output to fit what it sends to the receiver's own model (``vmc.avatar``): the hips
height at rest and which humanoid bones the model has (a model without ``upperChest`` drops that
bone's rotation). Only the JSON chunk is read; meshes and textures are skipped.

Specs: glTF 2.0 section 4.4 (GLB container), 5.25 (node TRS, column-major ``matrix``);
VRM 0.x ``extensions.VRM.humanoid.humanBones`` (a list of ``{"bone", "node"}``); VRM 1.0
``extensions.VRMC_vrm.humanoid.humanBones`` (``{bone: {"node"}}``). VRM 0.x models face -Z in glTF,
VRM 1.0 models +Z; positions are returned in avatar-bridge's canonical frame (metres, Y up, the
avatar facing +Z, its left arm towards +X).
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import quat

GLB_MAGIC = 0x46546C67  # "glTF"
CHUNK_JSON = 0x4E4F534A


@dataclass
class VrmHumanoid:
    path: str
    version: str  # "0.x" or "1.0"
    rest_positions: dict[str, np.ndarray]  # humanoid bone -> world rest position (3,), canonical frame, metres
    parents: dict[str, str | None]  # humanoid bone -> nearest humanoid ancestor

    @property
    def bones(self) -> tuple[str, ...]:
        return tuple(self.rest_positions)

    @property
    def hip_height(self) -> float:
        """Height of the hips joint above the floor at rest (metres): its world Y, as a VRM model
        stands on its origin."""
        return float(self.rest_positions["hips"][1])


def read_gltf_json(path: str | Path) -> dict:
    """The JSON chunk of a ``.vrm``/``.glb`` file. Raises ValueError for other content."""
    data = Path(path).read_bytes()
    if len(data) < 20:
        raise ValueError(f"{path}: too short for a GLB/VRM file")
    magic, version, length = struct.unpack_from("<III", data, 0)
    if magic != GLB_MAGIC:
        raise ValueError(f"{path}: not a binary glTF (.vrm/.glb) file")
    chunk_length, chunk_type = struct.unpack_from("<II", data, 12)
    if chunk_type != CHUNK_JSON:
        raise ValueError(f"{path}: first GLB chunk is not JSON")
    return json.loads(data[20:20 + chunk_length].decode("utf-8"))


def _local_matrix(node: dict) -> np.ndarray:
    if "matrix" in node:
        return np.array(node["matrix"], dtype=np.float64).reshape(4, 4).T  # column-major
    m = np.eye(4)
    r = quat.to_matrix(np.array(node.get("rotation", [0.0, 0.0, 0.0, 1.0])))
    m[:3, :3] = r @ np.diag(node.get("scale", [1.0, 1.0, 1.0]))
    m[:3, 3] = node.get("translation", [0.0, 0.0, 0.0])
    return m


def read_vrm_humanoid(path: str | Path) -> VrmHumanoid:
    """The humanoid rest pose of a VRM 0.x or 1.0 file (see the module docstring).

    Raises FileNotFoundError when the file is missing and ValueError when it has no humanoid.
    """
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"VRM file {path} not found: give the receiver's avatar (.vrm)")
    gltf = read_gltf_json(path)
    ext = gltf.get("extensions", {})
    if "VRMC_vrm" in ext:
        version = "1.0"
        human = {bone: entry["node"] for bone, entry in ext["VRMC_vrm"]["humanoid"]["humanBones"].items()}
    elif "VRM" in ext:
        version = "0.x"
        human = {entry["bone"]: entry["node"] for entry in ext["VRM"]["humanoid"]["humanBones"] if "node" in entry}
    else:
        raise ValueError(f"{path}: no VRM humanoid (extensions VRM or VRMC_vrm)")
    if "hips" not in human:
        raise ValueError(f"{path}: the VRM humanoid has no hips bone")
    nodes = gltf.get("nodes", [])
    parent = {}
    for i, node in enumerate(nodes):
        for child in node.get("children", []):
            parent[child] = i
    world: dict[int, np.ndarray] = {}

    def world_matrix(i: int) -> np.ndarray:
        if i not in world:
            local = _local_matrix(nodes[i])
            world[i] = world_matrix(parent[i]) @ local if i in parent else local
        return world[i]

    flip = np.array([-1.0, 1.0, -1.0]) if version == "0.x" else np.ones(3)  # VRM 0.x faces -Z: turn by pi
    positions = {bone: world_matrix(node)[:3, 3] * flip for bone, node in human.items()}
    node_bone = {node: bone for bone, node in human.items()}
    parents: dict[str, str | None] = {}
    for bone, node in human.items():
        up = parent.get(node)
        while up is not None and up not in node_bone:
            up = parent.get(up)
        parents[bone] = node_bone.get(up) if up is not None else None
    return VrmHumanoid(str(path), version, positions, parents)
