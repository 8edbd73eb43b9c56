"""How long and how deep a path under the sync root may be: an output, an upload.

The one rule for both (``farmtui.frames.check_output_pattern``, the leader's
``server.paths.confine``). A filer takes paths of 4,096 bytes at most and names
of 255; no render's output is 128 folders deep. Deeper, ``pathlib``'s
``mkdir(parents=True)`` recursed a level a folder: an upload to a path 2,000
folders deep was a RecursionError, a 500 and a 7,000-line traceback in the
leader's log for each request.
"""

from __future__ import annotations

MAX_PATH_BYTES = 4096
MAX_PATH_DEPTH = 128
# A file or folder name: 255 bytes on every Linux filesystem, less the 23 bytes a
# copy's temporary file adds around it (``agent.copy_records.temporary_name``). A
# longer name rendered and then failed its copy into place, on every retry.
MAX_NAME_BYTES = 255 - 23


def path_size_refusal(path: str, what: str) -> str | None:
    """Why ``path`` (relative, ``/``-separated) is too long or too deep; None: it is not."""
    if len(path.encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return f"{what} is longer than {MAX_PATH_BYTES} bytes"
    if path.count("/") >= MAX_PATH_DEPTH:
        return f"{what} is more than {MAX_PATH_DEPTH} folders deep"
    for name in path.split("/"):
        if (size := len(name.encode("utf-8", "surrogatepass"))) > MAX_NAME_BYTES:
            shown = name if len(name) <= 24 else name[:24] + "…"
            return f"{what} has a name longer than {MAX_NAME_BYTES} bytes ({shown!r}: {size})"
    return None
