"""Submitters that live inside other programs (DCCs), and the tools that package them.

``blender/`` is a Blender add-on: it runs in Blender's own Python, where farmtui
is not installed, so it uses the standard library only and imports nothing
from farmtui. :mod:`farmtui.integrations.addon` zips it for
``farm blender-addon``. A Nuke menu and a Houdini shelf tool would sit beside it.
"""
