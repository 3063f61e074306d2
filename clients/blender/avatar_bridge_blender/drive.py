"""Puts streamed poses on a Blender armature and keyframes them.

The stream's rotations are parent-local rotations of the normalized VRM rig in the canonical frame
(Y up, avatar faces +Z, left arm +X, identity = T-pose). Their product along the chain, D_s, is the
bone's world rotation away from the T-pose. Blender is Z up and characters face -Y, so the canonical
frame maps into armature space by C = +90 deg about X ((x, y, z) -> (x, -z, y)); the bone's wanted
armature-space orientation is A_b = (C D_s C^-1) R_b with R_b its rest orientation. The pose-bone
basis that gives A_b under the armature parent's pose A_p is R_b^-1 R_p A_p^-1 A_b, which is
R_b^-1 (C q_s C^-1) R_b when both are mapped and adjacent; working from world rotations keeps bones
right when the armature lacks an intermediate VRM bone (e.g. no upperChest), as the VRM spec asks.
The armature's rest pose must be a T-pose facing -Y (VRM add-on armatures are).
"""

from __future__ import annotations

import math

import bpy
from mathutils import Quaternion, Vector

from .net import PoseFrame

_HALF = math.sqrt(0.5)
# Canonical (Y up, faces +Z) -> armature space (Z up, faces -Y): +90 deg about X.
TO_BLENDER = {"NEG_Y": Quaternion((_HALF, _HALF, 0.0, 0.0))}
# An armature that faces +Y: additionally turn 180 deg about Z.
TO_BLENDER["POS_Y"] = Quaternion((0.0, 0.0, 0.0, 1.0)) @ TO_BLENDER["NEG_Y"]


def _hierarchy_order(bones) -> list:
    order = []

    def visit(bone):
        order.append(bone)
        for child in bone.children:
            visit(child)

    for bone in bones:
        if bone.parent is None:
            visit(bone)
    return order


class RigDriver:
    """Applies :class:`PoseFrame` s to one armature object through a {VRM bone: armature bone} map."""

    def __init__(self, obj, bone_map: dict, parents: dict, stream_hips_height: float = 0.95,
                 facing: str = "NEG_Y", move_hips: bool = True) -> None:
        if obj is None or obj.type != "ARMATURE":
            raise ValueError("choose an armature object to drive (Armature field in the Avatar Bridge panel)")
        if not bone_map:
            raise ValueError(f"no bone of armature {obj.name!r} matches the chosen bone map; "
                             "pick another map (VRM / Rigify / Mixamo) or load a custom JSON map")
        self.obj = obj
        self.parents = parents
        self.vrm_of = {arm: vrm for vrm, arm in bone_map.items()}
        self.order = [b.name for b in _hierarchy_order(obj.data.bones)]
        self.rest = {b.name: b.matrix_local.to_quaternion() for b in obj.data.bones}
        self.parent = {b.name: b.parent.name if b.parent else None for b in obj.data.bones}
        self.convert = TO_BLENDER[facing]
        self.move_hips = move_hips
        self.hips_bone = bone_map.get("hips")
        self.hips_rest_head = obj.data.bones[self.hips_bone].head_local.copy() if self.hips_bone else None
        self.stream_hips_height = stream_hips_height
        height = self.hips_rest_head.z if self.hips_rest_head is not None else 0.0
        self.hips_scale = height / stream_hips_height if height > 1e-3 and stream_hips_height > 1e-3 else 1.0
        self.stream_hips_rest = Vector((0.0, stream_hips_height, 0.0))
        for arm_name in self.vrm_of:
            obj.pose.bones[arm_name].rotation_mode = "QUATERNION"
        self.frames_applied = 0
        self.last_seq = None

    def world_deltas(self, frame: PoseFrame) -> dict:
        """D_s for every VRM bone, converted to armature space: C D_s C^-1 (mathutils Quaternion)."""
        local = {name: Quaternion((q[3], q[0], q[1], q[2])) for name, q in frame.rotations.items()}
        world: dict = {}

        def resolve(name):
            if name in world:
                return world[name]
            parent = self.parents.get(name)
            q = local.get(name, Quaternion())
            world[name] = q if parent is None else resolve(parent) @ q
            return world[name]

        c, c_inv = self.convert, self.convert.inverted()
        return {name: c @ resolve(name) @ c_inv for name in self.parents}

    def apply(self, frame: PoseFrame) -> None:
        deltas = self.world_deltas(frame)
        pose = self.obj.pose.bones
        posed = {}  # armature-space orientation of every bone after this frame
        for name in self.order:
            rest = self.rest[name]
            parent = self.parent[name]
            follow = rest if parent is None else posed[parent] @ self.rest[parent].inverted() @ rest
            vrm = self.vrm_of.get(name)
            pbone = pose[name]
            if vrm is not None and vrm in deltas:
                basis = follow.inverted() @ deltas[vrm] @ rest
                basis.normalize()
                pbone.rotation_quaternion = basis
                posed[name] = deltas[vrm] @ rest
                if name == self.hips_bone and self.move_hips and frame.hips_position is not None:
                    d = Vector(frame.hips_position) - self.stream_hips_rest
                    d = self.convert @ (d * self.hips_scale)
                    pbone.location = follow.inverted() @ d
            else:
                posed[name] = follow @ pbone.matrix_basis.to_quaternion()
        self.frames_applied += 1
        self.last_seq = frame.seq

    def keyframe(self, frame_number: int) -> None:
        """Key every driven bone's rotation (and the hips' location) at ``frame_number``."""
        for arm_name in self.vrm_of:
            pbone = self.obj.pose.bones[arm_name]
            pbone.keyframe_insert("rotation_quaternion", frame=frame_number, group=arm_name)
            if arm_name == self.hips_bone and self.move_hips:
                pbone.keyframe_insert("location", frame=frame_number, group=arm_name)


class LiveSession:
    """A receiver thread plus a driver; ``step()`` is what the Blender timer runs on the main thread."""

    def __init__(self, receiver, driver_factory, scene) -> None:
        self.receiver = receiver
        self.driver_factory = driver_factory  # (hello or None) -> RigDriver; built on the first frame
        self.driver: RigDriver | None = None
        self.scene_name = scene.name
        self.recording = False
        self.record_start_time: float | None = None
        self.record_start_frame = scene.frame_start
        self.frames_recorded = 0
        self.error = ""

    def start_recording(self, scene) -> None:
        self.recording = True
        self.record_start_time = None
        self.record_start_frame = scene.frame_current
        self.frames_recorded = 0

    def stop_recording(self) -> None:
        self.recording = False

    def step(self) -> bool:
        """Apply the newest received frame (if any); True when a frame was applied."""
        frame = self.receiver.latest()
        if frame is None:
            return False
        if self.driver is None:
            self.driver = self.driver_factory(self.receiver.hello)
        self.driver.apply(frame)
        if self.recording:
            scene = bpy.data.scenes[self.scene_name]
            if self.record_start_time is None:
                self.record_start_time = frame.capture_time
            fps = scene.render.fps / scene.render.fps_base
            number = self.record_start_frame + round((frame.capture_time - self.record_start_time) * fps)
            self.driver.keyframe(number)
            self.frames_recorded += 1
            if number > scene.frame_end:
                scene.frame_end = number
        return True

    def stop(self) -> None:
        self.receiver.stop()
