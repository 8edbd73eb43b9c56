"""What the add-on does, without Blender: from scene settings to a job on the leader.

The panel and the operator (``ui.py``) read the scene into :class:`SceneFacts`
and the panel and preferences into :class:`FarmSettings`; :func:`plan` turns
them into the copy to save and the ``POST /api/jobs`` body, and
:func:`post_job` sends it. Standard library only (this runs in Blender's own
Python, where farmtui is not installed), no ``bpy``, so it is tested without
Blender. Every failure is a :class:`SubmitError` whose text is one line for
the status bar.

Blender's output path rules are mirrored from its source
(``BLI_path_frame``, ``BKE_image_path_ext_from_imformat_ensure``): a path
without ``#`` gets four of them appended; the extension of the image format
is added, or replaces a known image extension, when "File Extensions" is on.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_LEADER = "http://127.0.0.1:7878"
MAX_LINE = 300
# The most of an answer read: a job as the leader shows it is a few kilobytes.
MAX_ANSWER = 4 * 1024 * 1024

# image_settings.file_format -> the extension Blender writes.
EXTENSIONS = {
    "BMP": ".bmp",
    "IRIS": ".rgb",
    "PNG": ".png",
    "JPEG": ".jpg",
    "JPEG2000": ".jp2",
    "TARGA": ".tga",
    "TARGA_RAW": ".tga",
    "CINEON": ".cin",
    "DPX": ".dpx",
    "OPEN_EXR": ".exr",
    "OPEN_EXR_MULTILAYER": ".exr",
    "HDR": ".hdr",
    "TIFF": ".tif",
    "WEBP": ".webp",
}
MOVIE_FORMATS = frozenset({"FFMPEG", "AVI_JPEG", "AVI_RAW"})
# Extensions Blender replaces rather than appends to (imb_ext_image).
IMAGE_EXTENSIONS = (
    ".png", ".tga", ".bmp", ".jpg", ".jpeg", ".sgi", ".rgb", ".rgba", ".tif", ".tiff", ".tx",
    ".jp2", ".j2c", ".hdr", ".dds", ".dpx", ".cin", ".exr", ".psd", ".pdd", ".psb", ".webp",
)  # fmt: skip
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_PADDING = re.compile(r"#+")


class SubmitError(Exception):
    """Why a job was not submitted; ``str(exc)`` is one line fit for the status bar.

    ``job_may_exist`` is true only when the leader may have taken the job
    although no answer came back (a timeout): the saved copy is then kept.
    """

    def __init__(self, message: str, *, job_may_exist: bool = False) -> None:
        super().__init__(one_line(message))
        self.job_may_exist = job_may_exist


def one_line(text: str, limit: int = MAX_LINE) -> str:
    """``text`` as one printable line of at most ``limit`` characters."""
    line = " ".join(_CONTROL.sub(" ", text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


@dataclass(frozen=True)
class SceneFacts:
    """What the submission needs to know about the open file and its scene."""

    blend_file: str  # bpy.data.filepath; "" for a file never saved
    scene_name: str
    frame_start: int
    frame_end: int
    frame_step: int
    render_path: str  # scene.render.filepath, e.g. "//renders/shot_####"
    file_format: str  # scene.render.image_settings.file_format
    use_file_extension: bool = True
    jpeg2k_codec: str = "JP2"


@dataclass(frozen=True)
class FarmSettings:
    """The panel's fields and the add-on preferences that shape the job (not the token)."""

    sync_root: str = ""  # the farm's sync root as this machine mounts it
    shared_folder: str = ""  # where copies go; "" = next to the .blend
    job_name: str = ""
    frames: str = ""  # "" = the scene's range and step
    chunk: int = 1
    priority: int = 50
    tags: str = ""  # comma separated
    output: str = ""  # "" = derived from the scene's output path


@dataclass(frozen=True)
class Plan:
    """Where to save the copy the farm renders, and the job to POST."""

    copy_file: str
    spec: dict[str, Any]


def scene_frames(start: int, end: int, step: int = 1) -> str:
    """The scene's range as a frame list: ``1-250``, ``1-250x2``, ``7``."""
    if end < start:
        raise SubmitError(f"the scene's end frame {end} is before its start frame {start}")
    if start == end:
        return str(start)
    return f"{start}-{end}" if step <= 1 else f"{start}-{end}x{step}"


def blender_abspath(path: str, blend_file: str) -> str:
    """``//`` paths resolved against the .blend's folder, like ``bpy.path.abspath``."""
    if path.startswith("//"):
        if not blend_file:
            raise SubmitError(f"save the .blend first: {path!r} is relative to it")
        path = os.path.join(os.path.dirname(blend_file), path[2:])
    elif not os.path.isabs(path):
        raise SubmitError(
            f"{path!r} is relative to Blender's working folder, which a farm node does not share;"
            " start it with // (next to the .blend) or make it absolute"
        )
    return os.path.normpath(path) + (os.sep if path.endswith(("/", "\\")) else "")


def output_file_pattern(facts: SceneFacts) -> str:
    """The absolute path Blender writes frames to, with its ``#`` padding left in."""
    if facts.file_format in MOVIE_FORMATS:
        raise SubmitError(
            f"the scene renders a movie ({facts.file_format}); the farm renders a file per"
            " frame: pick an image format in Output Properties"
        )
    path = blender_abspath(facts.render_path or "//", facts.blend_file)
    folder, name = os.path.split(path)
    if "#" not in name:
        name += "####"  # Blender appends the frame number, four digits
    if facts.use_file_extension:
        extension = EXTENSIONS.get(facts.file_format)
        if extension is None:
            raise SubmitError(f"unknown image format {facts.file_format!r}")
        if facts.file_format == "JPEG2000" and facts.jpeg2k_codec == "J2K":
            extension = ".j2c"
        stem, old = os.path.splitext(name)
        if old.lower() in IMAGE_EXTENSIONS and "#" not in old:
            name = stem
        if not name.lower().endswith(extension):
            name += extension
    return os.path.join(folder, name)


def relative_to_root(path: str, sync_root: str, what: str) -> str:
    """``path`` relative to the sync root with ``/`` separators, or SubmitError."""
    if not sync_root:
        raise SubmitError(
            "set the farm's sync root (the shared folder as this machine mounts it) in the"
            " add-on preferences"
        )
    root = os.path.realpath(sync_root)
    folder, name = os.path.split(path)
    target = os.path.join(os.path.realpath(folder), name)
    try:
        inside = os.path.commonpath([root, target]) == root and target != root
    except ValueError:  # another drive on Windows
        inside = False
    if not inside:
        raise SubmitError(f"{what} {path} is outside the farm's sync root {sync_root}")
    return os.path.relpath(target, root).replace(os.sep, "/")


def copy_file_for(
    blend_file: str,
    shared_folder: str,
    sync_root: str,
    stamp: str,
    exists: Callable[[str], bool] = os.path.exists,
) -> str:
    """Where the copy the farm renders goes: ``shot.farm-<stamp>.blend``, never overwriting.

    Next to the original, or in ``shared_folder`` (absolute, ``//`` for the
    .blend's folder, or relative to the sync root).
    """
    if not blend_file:
        raise SubmitError("save the .blend first: the farm renders a saved copy of it")
    folder = os.path.dirname(blend_file)
    if shared_folder:
        if shared_folder.startswith("//"):
            folder = blender_abspath(shared_folder, blend_file)
        elif os.path.isabs(shared_folder) or not sync_root:
            folder = shared_folder
        else:
            folder = os.path.join(sync_root, shared_folder)
    stem = os.path.splitext(os.path.basename(blend_file))[0]
    candidate = os.path.join(folder, f"{stem}.farm-{stamp}.blend")
    number = 1
    while exists(candidate):
        number += 1
        candidate = os.path.join(folder, f"{stem}.farm-{stamp}-{number}.blend")
    return os.path.normpath(candidate)


def split_tags(text: str) -> list[str]:
    return [tag.strip() for tag in text.split(",") if tag.strip()]


def default_job_name(facts: SceneFacts) -> str:
    stem = os.path.splitext(os.path.basename(facts.blend_file))[0] or "untitled"
    return stem if facts.scene_name in ("", "Scene") else f"{stem} {facts.scene_name}"


def output_pattern(facts: SceneFacts, settings: FarmSettings) -> str:
    """The job's output pattern: the override as given, else the scene's, relative to the root."""
    if settings.output.strip():
        return settings.output.strip()
    return relative_to_root(output_file_pattern(facts), settings.sync_root, "the output path")


def plan(facts: SceneFacts, settings: FarmSettings, stamp: str | None = None) -> Plan:
    """The copy to save and the job spec (``farmtui.protocol.JobSpec`` fields) to POST."""
    stamp = stamp or time.strftime("%Y%m%d-%H%M%S")
    copy = copy_file_for(facts.blend_file, settings.shared_folder, settings.sync_root, stamp)
    output = output_pattern(facts, settings)
    if not _PADDING.search(output.rsplit("/", 1)[-1]):
        raise SubmitError(f"the output pattern {output!r} needs '#' padding in its file name")
    frames = settings.frames.strip() or scene_frames(
        facts.frame_start, facts.frame_end, facts.frame_step
    )
    spec: dict[str, Any] = {
        "name": one_line(settings.job_name.strip() or default_job_name(facts), 200),
        "renderer": "blender",
        "scene": relative_to_root(copy, settings.sync_root, "the copy of the .blend"),
        "output": output,
        "frames": frames,
        "chunk": settings.chunk,
        "priority": settings.priority,
    }
    tags = split_tags(settings.tags)
    if tags:
        spec["tags"] = tags
    return Plan(copy, spec)


# --- the leader ------------------------------------------------------------------


def config_connection(env: Mapping[str, str]) -> tuple[str, str]:
    """Leader URL and token from the user config ``farm up`` writes ("" where missing)."""
    base = env.get("XDG_CONFIG_HOME") or os.path.join(
        env.get("HOME") or os.path.expanduser("~"), ".config"
    )
    try:
        import tomllib  # Python 3.11+: Blender 4.x; older Blenders skip the config

        with open(os.path.join(base, "farmtui", "config.toml"), "rb") as file:
            config = tomllib.load(file)
    except (ImportError, OSError, ValueError):
        return "", ""
    leader = config.get("leader")
    token = ""
    token_file = config.get("token_file")
    if isinstance(token_file, str):
        try:
            with open(token_file, encoding="utf-8") as file:
                token = file.read().strip()
        except OSError:
            token = ""
    return (leader if isinstance(leader, str) else ""), token


def resolve_connection(
    leader_url: str, token: str, env: Mapping[str, str] | None = None
) -> tuple[str, str]:
    """Each of URL and token: the preference, then FARM_LEADER/FARM_TOKEN(_FILE), then the
    config ``farm up`` wrote, then (URL only) the default local leader."""
    env = os.environ if env is None else env
    url = leader_url.strip() or env.get("FARM_LEADER", "").strip()
    token = token.strip() or env.get("FARM_TOKEN", "").strip()
    if not token and env.get("FARM_TOKEN_FILE"):
        try:
            with open(env["FARM_TOKEN_FILE"], encoding="utf-8") as file:
                token = file.read().strip()
        except OSError:
            token = ""
    if not url or not token:
        config_url, config_token = config_connection(env)
        url, token = url or config_url, token or config_token
    return url or DEFAULT_LEADER, token


def normalize_url(url: str) -> str:
    """``127.0.0.1:7878/`` -> ``http://127.0.0.1:7878``; SubmitError for anything but http(s)."""
    url = url.strip().rstrip("/")
    if "://" not in url:
        url = "http://" + url
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # noqa: B018  # reading it checks it
    except ValueError:
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise SubmitError("the leader URL must look like http://host:7878 (add-on preferences)")
    if "@" in parts.netloc:
        raise SubmitError("the leader URL must not carry a user or password; set the token")
    return url


def check_connection(leader_url: str, token: str) -> str:
    """The normalized leader URL, or SubmitError for a bad URL or no token (nothing sent)."""
    url = normalize_url(leader_url)
    if not token:
        raise SubmitError(
            "no farm token: set one in the add-on preferences (farm token create --role user)"
        )
    return url


def refusal(status: int, body: bytes, reason: str = "") -> str:
    """The leader's error answer as one line: its ``{"error": ...}`` text when it has one."""
    text = ""
    try:
        document = json.loads(body.decode("utf-8"))
        if isinstance(document, dict) and isinstance(document.get("error"), str):
            text = document["error"]
    except (UnicodeDecodeError, ValueError):
        text = body.decode("utf-8", "replace")[:200]
    text = text or reason or "no reason given"
    if status == 401:
        return f"the leader refused the token (HTTP 401): {text}; check the add-on preferences"
    if status == 403:
        return f"the token may not submit this job (HTTP 403): {text}"
    return f"the leader refused the job (HTTP {status}): {text}"


def post_job(
    leader_url: str,
    token: str,
    spec: Mapping[str, Any],
    *,
    timeout: float = 15.0,
    cafile: str = "",
) -> dict[str, Any]:
    """``POST /api/jobs``; the new job as the leader shows it (with its ``id``).

    Sent with an Idempotency-Key, so the leader never makes two jobs of one
    request. The token is never part of a message, even one the leader wrote.
    """
    url = check_connection(leader_url, token)
    request = urllib.request.Request(
        url + "/api/jobs",
        data=json.dumps(dict(spec)).encode("utf-8"),
        method="POST",
        headers={
            "Authorization": f"Bearer {token}",
            "Content-Type": "application/json",
            "Accept": "application/json",
            "Idempotency-Key": f"blender-{uuid.uuid4().hex}",
            "User-Agent": "farmtui-blender",
        },
    )
    context = _tls(cafile)
    try:
        body = _exchange(request, timeout, context)
    except _Refused as refused:
        raise SubmitError(_hide(refusal(*refused.args), token)) from None
    except _TooLarge:
        raise SubmitError(
            f"the answer from {url} is not a farmtui job (over {MAX_ANSWER} bytes)",
            job_may_exist=True,
        ) from None
    except urllib.error.URLError as exc:
        reason = exc.reason
        if isinstance(reason, TimeoutError):
            raise SubmitError(
                f"the leader at {url} did not answer within {timeout:g} s; check `farm jobs`"
                " before submitting again",
                job_may_exist=True,
            ) from None
        why = reason.strerror if isinstance(reason, OSError) and reason.strerror else reason
        raise SubmitError(_hide(f"cannot reach the leader at {url}: {why}", token)) from None
    except TimeoutError:
        raise SubmitError(
            f"the leader at {url} did not answer within {timeout:g} s; check `farm jobs`"
            " before submitting again",
            job_may_exist=True,
        ) from None
    except OSError as exc:  # TLS errors (ssl.SSLError) too
        raise SubmitError(_hide(f"cannot talk to the leader at {url}: {exc}", token)) from None
    try:
        job = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        job = None
    if not isinstance(job, dict) or not isinstance(job.get("id"), str):
        raise SubmitError(f"the answer from {url} is not a farmtui job", job_may_exist=True)
    return job


class _Refused(Exception):
    """An HTTP error answer: its status, its body (read), its reason phrase."""


class _TooLarge(OSError):
    """An answer over MAX_ANSWER bytes."""


def _read_answer(answer: Any) -> bytes:
    body: bytes = answer.read(MAX_ANSWER + 1)
    if len(body) > MAX_ANSWER:
        raise _TooLarge(f"the answer is over {MAX_ANSWER} bytes")
    return body


def _exchange(request: urllib.request.Request, timeout: float, context: Any) -> bytes:
    """The body of the answer to ``request``, all of it within ``timeout`` seconds.

    urllib's timeout bounds each read of the socket, not the exchange: a leader
    (or a proxy) that trickles its answer a byte at a time would hold Blender's
    interface forever. The exchange runs in a thread that is waited for until
    the deadline, then abandoned (TimeoutError); it ends at its next socket
    timeout. _Refused for an HTTP error, urllib's own errors otherwise.
    """
    outcome: list[bytes | BaseException] = []

    def run() -> None:
        try:
            with urllib.request.urlopen(request, timeout=timeout, context=context) as answer:
                outcome.append(_read_answer(answer))
        except urllib.error.HTTPError as exc:
            with exc:
                try:
                    body = exc.read(4096)
                except OSError:
                    body = b""
            outcome.append(_Refused(exc.code, body, exc.reason))
        except BaseException as exc:  # noqa: BLE001  # handed to the caller's thread
            outcome.append(exc)

    worker = threading.Thread(target=run, name="farmtui-submit", daemon=True)
    worker.start()
    worker.join(timeout)
    if not outcome:
        raise TimeoutError
    result = outcome[0]
    if isinstance(result, BaseException):
        raise result
    return result


def _tls(cafile: str) -> Any:
    """An SSL context trusting ``cafile``, or None for the system's CAs.

    ``ssl`` is imported only here: some Blender builds run with a Python whose
    ``_ssl`` cannot load, and plain http must work there (urllib copes too).
    """
    if not cafile:
        return None
    try:
        import ssl

        return ssl.create_default_context(cafile=cafile)
    except ImportError:
        raise SubmitError("this Blender's Python has no TLS support (ssl)") from None
    except OSError as exc:
        raise SubmitError(f"cannot read the CA file {cafile}: {exc.strerror or exc}") from None


def _hide(text: str, token: str) -> str:
    # A token of a few characters is not a secret anyone could find in a message.
    return text.replace(token, "(token)") if len(token) >= 4 else text


def status_line(job: Mapping[str, Any]) -> str:
    """What the panel shows after a submit: the job id and where to follow it."""
    job_id = str(job.get("id", ""))
    name = one_line(str(job.get("name", "")), 60)
    return f"submitted {name} as job {job_id}: see `farm show {job_id}` or open `farm console`"
