"""The operator console: a Textual app that talks to the leader over ``/ws/console`` only.

Nothing here imports ``server`` or ``agent``; everything the console knows
arrives as a ``farmtui.protocol.LeaderToConsole`` message.
"""
