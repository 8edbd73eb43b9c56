"""The add-on's Blender side: preferences, the Render Properties panel, the Submit operator.

Thin on purpose: it reads the scene and the settings into plain values and
hands them to :mod:`.submission`, which holds every rule and is tested
without Blender. The leader URL and token live in the add-on preferences
(the user's preferences file), never in the .blend.

No ``from __future__ import annotations`` here: Blender reads the property
annotations as objects.
"""

import contextlib
import os

import bpy

from . import submission


def preferences(context: "bpy.types.Context") -> "FarmtuiPreferences":
    return context.preferences.addons[__package__].preferences


class FarmtuiPreferences(bpy.types.AddonPreferences):
    """Where the farm is and how to reach it: per user, never saved in a .blend."""

    bl_idname = __package__

    leader_url: bpy.props.StringProperty(
        name="Leader URL",
        description="The farm leader, e.g. http://farm:7878 (empty: FARM_LEADER, then the"
        " config `farm up` wrote, then http://127.0.0.1:7878)",
        default="",
    )
    token: bpy.props.StringProperty(
        name="Token",
        description="A user token (`farm token create --role user`); kept in your"
        " preferences, never in the .blend (empty: FARM_TOKEN, then `farm up`'s config)",
        default="",
        subtype="PASSWORD",
    )
    sync_root: bpy.props.StringProperty(
        name="Sync root",
        description="The farm's sync root as this machine mounts it; scenes and output must"
        " be inside it",
        default="",
        subtype="DIR_PATH",
    )
    shared_folder: bpy.props.StringProperty(
        name="Copies folder",
        description="Where the copy the farm renders is saved (absolute, or relative to the"
        " sync root); empty: next to the .blend",
        default="",
        subtype="DIR_PATH",
    )
    ca_file: bpy.props.StringProperty(
        name="CA file",
        description="PEM file of the certificate authority that signed the leader's TLS"
        " certificate (https with a private CA)",
        default="",
        subtype="FILE_PATH",
    )

    def draw(self, context: "bpy.types.Context") -> None:
        layout = self.layout
        layout.prop(self, "leader_url")
        layout.prop(self, "token")
        layout.prop(self, "sync_root")
        layout.prop(self, "shared_folder")
        layout.prop(self, "ca_file")


class FarmtuiSceneSettings(bpy.types.PropertyGroup):
    """The job's settings for one scene (saved with the .blend; nothing secret)."""

    job_name: bpy.props.StringProperty(
        name="Job name", description="Empty: the .blend's name", default=""
    )
    frames: bpy.props.StringProperty(
        name="Frames",
        description="Frame list (1-100, 1-100x5, 1,5,10-20); empty: the scene's range and step",
        default="",
    )
    chunk: bpy.props.IntProperty(
        name="Chunk size", description="Frames per task", default=1, min=1, max=1_000_000
    )
    priority: bpy.props.IntProperty(
        name="Priority",
        description="0-100, lower renders sooner (default 50)",
        default=50,
        min=0,
        max=100,
    )
    tags: bpy.props.StringProperty(
        name="Tags", description="Comma separated: only nodes with all of them render it"
    )
    output: bpy.props.StringProperty(
        name="Output override",
        description="Output pattern relative to the sync root (renders/shot/frame_####.png);"
        " empty: the scene's output path",
        default="",
    )
    status: bpy.props.StringProperty(name="Status", default="")
    status_is_error: bpy.props.BoolProperty(default=False)
    last_job_id: bpy.props.StringProperty(name="Last job", default="")


def scene_facts(context: "bpy.types.Context") -> submission.SceneFacts:
    scene = context.scene
    render = scene.render
    image = render.image_settings
    return submission.SceneFacts(
        blend_file=bpy.data.filepath,
        scene_name=scene.name,
        frame_start=scene.frame_start,
        frame_end=scene.frame_end,
        frame_step=scene.frame_step,
        render_path=render.filepath,
        file_format=image.file_format,
        use_file_extension=render.use_file_extension,
        jpeg2k_codec=getattr(image, "jpeg2k_codec", "JP2"),
    )


def farm_settings(context: "bpy.types.Context") -> submission.FarmSettings:
    prefs = preferences(context)
    settings = context.scene.farmtui
    return submission.FarmSettings(
        sync_root=bpy.path.abspath(prefs.sync_root) if prefs.sync_root else "",
        shared_folder=prefs.shared_folder,
        job_name=settings.job_name,
        frames=settings.frames,
        chunk=settings.chunk,
        priority=settings.priority,
        tags=settings.tags,
        output=settings.output,
    )


class FARMTUI_OT_submit(bpy.types.Operator):  # noqa: N801  # Blender's naming convention
    """Save a copy of this file for the farm and submit it as a job"""

    bl_idname = "farmtui.submit"
    bl_label = "Submit to farm"
    bl_options = {"REGISTER"}

    def execute(self, context: "bpy.types.Context") -> set[str]:
        settings = context.scene.farmtui
        try:
            job = self.submit(context)
        except submission.SubmitError as exc:
            settings.status, settings.status_is_error = str(exc), True
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        settings.last_job_id = job["id"]
        settings.status, settings.status_is_error = submission.status_line(job), False
        self.report({"INFO"}, settings.status)
        return {"FINISHED"}

    def submit(self, context: "bpy.types.Context") -> dict:
        prefs = preferences(context)
        plan = submission.plan(scene_facts(context), farm_settings(context))
        url, token = submission.resolve_connection(prefs.leader_url, prefs.token)
        submission.check_connection(url, token)  # refused before anything is saved
        try:
            os.makedirs(os.path.dirname(plan.copy_file), exist_ok=True)
            result = bpy.ops.wm.save_as_mainfile(
                filepath=plan.copy_file, copy=True, check_existing=False, relative_remap=True
            )
        except (OSError, RuntimeError) as exc:
            raise submission.SubmitError(f"cannot save {plan.copy_file}: {exc}") from None
        if "FINISHED" not in result:
            raise submission.SubmitError(f"cannot save {plan.copy_file}")
        cafile = bpy.path.abspath(prefs.ca_file) if prefs.ca_file else ""
        try:
            return submission.post_job(url, token, plan.spec, cafile=cafile)
        except submission.SubmitError as exc:
            if not exc.job_may_exist:  # nobody will render it: leave no stray copy
                with contextlib.suppress(OSError):
                    os.remove(plan.copy_file)
            raise


class FARMTUI_PT_render(bpy.types.Panel):  # noqa: N801  # Blender's naming convention
    bl_label = "Render Farm (farmtui)"
    bl_space_type = "PROPERTIES"
    bl_region_type = "WINDOW"
    bl_context = "render"

    def draw(self, context: "bpy.types.Context") -> None:
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        settings = context.scene.farmtui
        facts = scene_facts(context)
        layout.prop(settings, "job_name")
        layout.prop(settings, "frames")
        if not settings.frames.strip():
            try:
                scene_range = submission.scene_frames(
                    facts.frame_start, facts.frame_end, facts.frame_step
                )
            except submission.SubmitError as exc:
                scene_range = str(exc)
            layout.label(text=f"Scene range: {scene_range}")
        layout.prop(settings, "chunk")
        layout.prop(settings, "priority")
        layout.prop(settings, "tags")
        layout.prop(settings, "output")
        try:
            shown = submission.output_pattern(facts, farm_settings(context))
            row = layout.row()
        except submission.SubmitError as exc:
            shown = str(exc)
            row = layout.row()
            row.alert = True
        row.label(text=f"Output: {shown}")
        layout.operator(FARMTUI_OT_submit.bl_idname, icon="EXPORT")
        if settings.status:
            row = layout.row()
            row.alert = settings.status_is_error
            row.label(text=settings.status, icon="ERROR" if settings.status_is_error else "INFO")


CLASSES = (FarmtuiPreferences, FarmtuiSceneSettings, FARMTUI_OT_submit, FARMTUI_PT_render)


def register() -> None:
    for cls in CLASSES:
        bpy.utils.register_class(cls)
    bpy.types.Scene.farmtui = bpy.props.PointerProperty(type=FarmtuiSceneSettings)


def unregister() -> None:
    del bpy.types.Scene.farmtui
    for cls in reversed(CLASSES):
        bpy.utils.unregister_class(cls)
