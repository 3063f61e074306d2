"""avatar-bridge live link for Blender: drive an armature from the avatar-bridge stream and record it.

Panel: 3D Viewport > Sidebar (N) > Avatar Bridge. The network runs on a thread (``net.py``); a
``bpy.app.timers`` function, :func:`timer_callback`, applies the newest frame on Blender's main
thread. That function is a plain callable, so scripts and tests can call it directly (timers never
fire when Blender runs as the ``bpy`` Python module).
"""

from __future__ import annotations

import re

bl_info = {
    "name": "Avatar Bridge live link",
    "author": "avatar-bridge contributors",
    "version": (0, 1, 0),
    "blender": (4, 2, 0),
    "location": "3D Viewport > Sidebar > Avatar Bridge",
    "description": "Drive an armature live from the avatar-bridge WebSocket or VMC stream and record keyframes",
    "category": "Animation",
}

import bpy  # noqa: E402
from bpy.props import BoolProperty, EnumProperty, IntProperty, PointerProperty, StringProperty  # noqa: E402

from . import mapping, net  # noqa: E402
from .drive import LiveSession, RigDriver  # noqa: E402

TIMER_INTERVAL_S = 1.0 / 60.0

# The one live session of this Blender instance (Blender add-ons keep runtime state at module level:
# operators, the timer and the panel all need to reach the same receiver thread).
_session: LiveSession | None = None


def current_session() -> LiveSession | None:
    return _session


def timer_callback() -> float | None:
    """Apply the newest frame; returns the next interval (None stops the timer when disconnected)."""
    session = _session
    if session is None:
        return None
    try:
        session.step()
        session.error = ""
    except Exception as exc:  # noqa: BLE001 - shown in the panel; an escaping error would kill the timer
        session.error = f"{type(exc).__name__}: {exc}"
    return TIMER_INTERVAL_S


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower()


def vrm_addon_bone_map(obj) -> dict:
    """{VRM bone: armature bone} from the VRM add-on's humanoid assignment (VRM 1.0 or 0.x)."""
    ext = getattr(obj.data, "vrm_addon_extension", None)
    if ext is None:
        return {}
    result = {}
    human_bones = getattr(getattr(ext, "vrm1", None), "humanoid", None)
    human_bones = getattr(human_bones, "human_bones", None)
    if human_bones is not None:
        for vrm in mapping.VRM_PARENTS:
            bone = getattr(human_bones, _snake(vrm), None)
            bone_name = getattr(getattr(bone, "node", None), "bone_name", "") if bone is not None else ""
            if bone_name and bone_name in obj.data.bones:
                result[vrm] = bone_name
    if not result:
        vrm0 = getattr(getattr(ext, "vrm0", None), "humanoid", None)
        for item in getattr(vrm0, "human_bones", []):
            name = getattr(item, "bone", "")
            bone_name = getattr(getattr(item, "node", None), "bone_name", "")
            # VRM 0.x thumb segments are one step off VRM 1.0's: Proximal->Metacarpal, Intermediate->Proximal.
            vrm = re.sub(r"Thumb(Proximal|Intermediate)$",
                         lambda m: "Thumb" + {"Proximal": "Metacarpal", "Intermediate": "Proximal"}[m.group(1)], name)
            if vrm in mapping.VRM_PARENTS and bone_name in obj.data.bones:
                result[vrm] = bone_name
    return result


def bone_map_for(settings, obj) -> dict:
    names = [b.name for b in obj.data.bones]
    if settings.bone_map == "VRM":
        from_addon = vrm_addon_bone_map(obj)
        if from_addon:
            return from_addon
    custom = None
    if settings.bone_map == "CUSTOM":
        custom = mapping.load_custom_map(bpy.path.abspath(settings.custom_map_path))
    return mapping.resolve(settings.bone_map, names, custom)


def _parents_from_hello(hello) -> tuple[dict, float]:
    if not hello:
        return dict(mapping.VRM_PARENTS), 0.95
    parents = {b["name"]: b["parent"] for b in hello.get("bones", [])}
    hips = next((b for b in hello.get("bones", []) if b["parent"] is None), None)
    return parents or dict(mapping.VRM_PARENTS), float(hips["offset"][1]) if hips else 0.95


def start_session(context) -> LiveSession:
    """Open the receiver chosen in the panel and start applying frames (used by the Connect operator)."""
    global _session
    stop_session()
    settings = context.scene.avatar_bridge
    obj = settings.armature
    if obj is None or obj.type != "ARMATURE":
        raise ValueError("choose an armature object to drive (Armature field in the Avatar Bridge panel)")
    bone_map = bone_map_for(settings, obj)
    if settings.source == "WEBSOCKET":
        receiver = net.WebSocketReceiver(settings.url).start()
    else:
        receiver = net.VmcReceiver("0.0.0.0" if settings.vmc_listen_all else "127.0.0.1", settings.vmc_port).start()
    facing, move_hips = settings.facing, settings.move_hips

    def make_driver(hello):
        parents, hips_height = _parents_from_hello(hello)
        return RigDriver(obj, bone_map, parents, hips_height, facing, move_hips)

    RigDriver(obj, bone_map, mapping.VRM_PARENTS, 0.95, facing, move_hips)  # validate now: clear error at Connect
    _session = LiveSession(receiver, make_driver, context.scene)
    if not bpy.app.timers.is_registered(timer_callback):
        bpy.app.timers.register(timer_callback, first_interval=TIMER_INTERVAL_S)
    return _session


def stop_session() -> None:
    global _session
    if bpy.app.timers.is_registered(timer_callback):
        bpy.app.timers.unregister(timer_callback)
    if _session is not None:
        _session.stop()
        _session = None


# --- UI --------------------------------------------------------------------------------------------

def _is_armature(self, obj):
    return obj.type == "ARMATURE"


class AvatarBridgeSettings(bpy.types.PropertyGroup):
    source: EnumProperty(name="Source", items=[
        ("WEBSOCKET", "WebSocket", "avatar-bridge JSON stream (protocol v1)"),
        ("VMC", "VMC (UDP)", "VMC protocol over OSC/UDP")], default="WEBSOCKET")
    url: StringProperty(name="Server", default="ws://127.0.0.1:8765/")
    vmc_port: IntProperty(name="VMC port", default=39539, min=1, max=65535)
    vmc_listen_all: BoolProperty(name="Listen on all interfaces", default=False,
                                 description="Receive VMC from other machines (otherwise 127.0.0.1 only)")
    armature: PointerProperty(name="Armature", type=bpy.types.Object, poll=_is_armature)
    bone_map: EnumProperty(name="Bone map", items=[
        ("VRM", "VRM humanoid", "VRM add-on assignment, VRM add-on or VRoid bone names"),
        ("RIGIFY", "Rigify", "Rigify metarig / DEF- bone names"),
        ("MIXAMO", "Mixamo", "mixamorig:* bone names"),
        ("CUSTOM", "Custom (JSON)", "a JSON file {\"leftUpperArm\": \"MyArm.L\", ...}")], default="VRM")
    custom_map_path: StringProperty(name="Custom map", subtype="FILE_PATH")
    facing: EnumProperty(name="Armature faces", items=[
        ("NEG_Y", "-Y", "Blender convention (VRM add-on, most imports)"),
        ("POS_Y", "+Y", "rigs built facing +Y")], default="NEG_Y")
    move_hips: BoolProperty(name="Move hips", default=True, description="Apply the streamed hips position")


class AVATARBRIDGE_OT_connect(bpy.types.Operator):
    bl_idname = "avatar_bridge.connect"
    bl_label = "Connect"
    bl_description = "Start receiving poses and driving the armature"

    def execute(self, context):
        try:
            start_session(context)
        except (ValueError, OSError, FileNotFoundError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        return {"FINISHED"}


class AVATARBRIDGE_OT_disconnect(bpy.types.Operator):
    bl_idname = "avatar_bridge.disconnect"
    bl_label = "Disconnect"

    def execute(self, context):
        stop_session()
        return {"FINISHED"}


class AVATARBRIDGE_OT_record(bpy.types.Operator):
    bl_idname = "avatar_bridge.record"
    bl_label = "Record"
    bl_description = "Start or stop keyframing the received poses into the armature's action"

    start: BoolProperty(default=True)

    def execute(self, context):
        session = _session
        if session is None:
            self.report({"ERROR"}, "connect first (Avatar Bridge > Connect)")
            return {"CANCELLED"}
        if self.start:
            session.start_recording(context.scene)
        else:
            session.stop_recording()
        return {"FINISHED"}


class AVATARBRIDGE_OT_calibrate(bpy.types.Operator):
    bl_idname = "avatar_bridge.calibrate"
    bl_label = "Calibrate"
    bl_description = "Ask the server to recalibrate (stand in a T-pose)"

    def execute(self, context):
        if _session is None or not _session.receiver.send({"type": "calibrate"}):
            self.report({"ERROR"}, "not connected to a WebSocket server")
            return {"CANCELLED"}
        return {"FINISHED"}


class AVATARBRIDGE_PT_panel(bpy.types.Panel):
    bl_label = "Avatar Bridge"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "Avatar Bridge"

    def draw(self, context):
        settings = context.scene.avatar_bridge
        layout = self.layout
        layout.prop(settings, "source")
        if settings.source == "WEBSOCKET":
            layout.prop(settings, "url")
        else:
            layout.prop(settings, "vmc_port")
            layout.prop(settings, "vmc_listen_all")
        layout.prop(settings, "armature")
        layout.prop(settings, "bone_map")
        if settings.bone_map == "CUSTOM":
            layout.prop(settings, "custom_map_path")
        layout.prop(settings, "facing")
        layout.prop(settings, "move_hips")
        session = _session
        if session is None:
            layout.operator("avatar_bridge.connect")
            return
        slot = session.receiver.slot
        layout.label(text=f"{slot.status}: {slot.frames_received} frames")
        if slot.error or session.error:
            layout.label(text=slot.error or session.error, icon="ERROR")
        row = layout.row()
        row.operator("avatar_bridge.disconnect")
        row.operator("avatar_bridge.calibrate")
        if session.recording:
            layout.operator("avatar_bridge.record", text=f"Stop recording ({session.frames_recorded})",
                            icon="PAUSE").start = False
        else:
            layout.operator("avatar_bridge.record", text="Record", icon="REC").start = True


CLASSES = (AvatarBridgeSettings, AVATARBRIDGE_OT_connect, AVATARBRIDGE_OT_disconnect, AVATARBRIDGE_OT_record,
           AVATARBRIDGE_OT_calibrate, AVATARBRIDGE_PT_panel)


def register():
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.avatar_bridge = PointerProperty(type=AvatarBridgeSettings)


def unregister():
    stop_session()
    del bpy.types.Scene.avatar_bridge
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
