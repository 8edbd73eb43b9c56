"""The console's screens: the main monitor and its modal dialogs."""
