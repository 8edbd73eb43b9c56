"""farmtui's Blender add-on: submit the open scene to a farmtui render farm.

Install the zip that ``farm blender-addon --out DIR`` writes (Edit >
Preferences > Add-ons > Install), set the leader URL, a token and the farm's
sync root in the add-on's preferences, then use Properties > Render > Render
Farm (farmtui) > Submit to farm.

This package runs inside Blender's own Python, where farmtui is not
installed: standard library only, and nothing from farmtui is imported.
``submission`` holds the logic and does not import ``bpy`` (tested without
Blender); ``ui`` is the Blender side, imported only by :func:`register`.
"""

bl_info = {
    "name": "farmtui render farm",
    "author": "farmtui",
    "version": (0, 1, 0),
    "blender": (3, 0, 0),
    "location": "Properties > Render > Render Farm (farmtui)",
    "description": "Submit the scene to a farmtui render farm",
    "category": "Render",
}


def register() -> None:
    from . import ui

    ui.register()


def unregister() -> None:
    from . import ui

    ui.unregister()
