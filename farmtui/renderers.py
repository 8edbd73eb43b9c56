"""Command lines per renderer: argv templates and token expansion.

A job's command is an argv template (never a shell string). The leader and
the CLI call :func:`build_argv` at submit time to fill an empty argv from the
renderer's name, scene and output pattern; the agent calls :func:`expand` for
each chunk, once it knows where the chunk must write (staging or sync root).

Tokens: ``{start}`` ``{end}`` ``{step}`` ``{frames}`` (comma list)
``{outdir}`` ``{output}`` (``{outdir}`` joined with the pattern's file name,
``####`` left as written), ``{outdir_printf}`` (``{outdir}`` with each ``%``
doubled, for a printf-style file pattern such as ffmpeg's), ``{scene}`` and
``{input_list}`` (an ffconcat list of exactly the chunk's files of the scene's
image sequence, written by the agent into the attempt's folder).
``{{`` and ``}}`` stand for literal braces; any other ``{name}`` is an error, so a
typo never reaches a renderer.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import overload

from farmtui.frames import frame_path, printf_pattern
from farmtui.protocol import JobSpec

# Where the agent writes a chunk's ``{input_list}``, in the attempt's working folder.
INPUT_LIST = ".farmtui/inputs.ffconcat"
TOKENS = frozenset(
    {"start", "end", "step", "frames", "outdir", "outdir_printf", "output", "scene", "input_list"}
)
# The tokens every agent knows: those of the agents whose hello did not yet list theirs.
# A job using another is given only to a node whose agent said it knows it.
FIRST_TOKENS = frozenset({"start", "end", "step", "frames", "outdir", "output", "scene"})

# Renderers with a command builder; "generic" needs an argv from the submitter.
RENDERERS = ("blender", "ffmpeg", "demo", "generic", "aerender", "nuke", "houdini", "maya")

_HRENDER = (
    "import os, runpy, sys; sys.argv[0] = 'hrender.py'; "
    "runpy.run_path(os.path.join(os.environ['HFS'], 'bin', 'hrender.py'), run_name='__main__')"
)
_RANGE_TOKENS = frozenset({"start", "end", "step"})
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PADDING = re.compile(r"#+")

# ffmpeg renders exactly a chunk's frames {start}-{end}x{step} (ascending, however
# the job runs) and names each file after its job frame: frame N of the job is
# a movie's frame N (1-based, n+1), an image sequence's file N. The image2 muxer
# numbers files consecutively from -start_number, which is wrong for a stepped
# chunk (1,4,7 -> 1,2,3), so instead every frame's timestamp is set to its job
# frame number in a time base of one second (settb=1, setpts=N+1), `-r 1` keeps
# that time base through the encoder, and -frame_pts names each file after its
# timestamp. trim stops decoding after the chunk's last frame, so a chunk at the
# start of a long input ends early.
FFMPEG_CHUNK_FILTER = (
    r"settb=1,setpts=N+1,trim=end_frame={end},"
    r"select=between(n+1\,{start}\,{end})*not(mod(n+1-{start}\,{step}))"
)
# An image sequence is read from a list of exactly the chunk's files, one image per
# frame (ffmpeg's concat reader, {input_list}): its image2 reader reads consecutive
# files and stops at the first gap, so a plate on twos (only odd files, a job of
# 1-39x2) failed every chunk. The list is ascending; its n-th image is frame
# {start}+n*{step}. -xerror: a file missing or unreadable fails the chunk, naming it
# ("Could not open file : .../p_0007.png"), instead of ending the chunk early.
FFMPEG_LIST_INPUT = ("-xerror", "-f", "concat", "-safe", "0", "-i", "{input_list}")
FFMPEG_LIST_FILTER = r"settb=1,setpts=N*{step}+{start}"
# The format Blender writes a file extension in (its -F names). Blender replaces an
# image extension that is not its format's (a PNG scene asked for f_####.jpg wrote
# f_0001.png, and the chunk failed for files it never wrote), so -F says it.
# ".exr": the scene's own flavour, single or multilayer (-F would drop a
# multilayer scene's passes); ask for one in the command's options (-F OPEN_EXR).
# ".tga" (TGA or raw TGA), ".bmp" (-F BMP on an RGBA scene wrote a broken header
# in Blender 3.4) and ".cin" (-F CINEON hung Blender 3.4 on an 8-bit scene) are the
# scene's too, as is any other name (none: a scene with File Extensions off).
BLENDER_FORMATS: dict[str, str | None] = {
    ".png": "PNG",
    ".jpg": "JPEG",
    ".jpeg": "JPEG",
    ".tif": "TIFF",
    ".tiff": "TIFF",
    ".exr": None,
    ".hdr": "HDR",
    ".dpx": "DPX",
    ".jp2": "JP2",
    ".webp": "WEBP",
    ".rgb": "IRIS",
}
# ffmpeg's names for the (video) filter option, merged into the adapter's, and those of
# the options that cannot go with it (``_ffmpeg_filters``).
_FFMPEG_VIDEO_FILTER = re.compile(r"-vf|-filter(:v)?(:\d+)?")
_FFMPEG_OTHER_FILTERS = re.compile(r"-(filter_complex|lavfi|filter_script).*")
# Blender options that would undo the adapter's scene, output or chunk of frames.
_BLENDER_ADAPTERS_OWN = frozenset(
    {"-a", "--render-anim", "-f", "--render-frame", "-s", "--frame-start", "-e", "--frame-end",
     "-j", "--frame-jump", "-o", "--render-output", "-b", "--background"}
)  # fmt: skip
# What ffmpeg's image2 reader may read as a pattern in a file's name.
_PATTERN_CHARACTERS = frozenset("%*?[]{}")
# A frame field of a printf-style name ("%04d", "%d"), a doubled "%%" left out.
_PRINTF_FIELD = re.compile(r"%0?\d*d")
# A printf-style name's fields and its "%%" (a literal "%"), read left to right.
_PRINTF_TOKEN = re.compile(r"%%|%0?\d*d")
# Files ffmpeg reads one image each (its image2 reader); any other name is a movie,
# "#" or "%20d" in it or not (a movie "my%20day.mp4" was read as a sequence).
IMAGE_EXTENSIONS = frozenset(
    {".png", ".jpg", ".jpeg", ".exr", ".tif", ".tiff", ".dpx", ".tga", ".bmp", ".webp",
     ".hdr", ".cin", ".jp2", ".j2c", ".sgi", ".rgb", ".gif", ".ppm", ".pgm", ".pbm"}
)  # fmt: skip


class RendererError(ValueError):
    """An unknown renderer, a missing scene/output, or an argv with a bad token."""


def expand(argv: Sequence[str], tokens: Mapping[str, str]) -> list[str]:
    """Substitute ``{token}`` in every argument; unknown or unset tokens raise RendererError."""

    def substitute(match: re.Match[str]) -> str:
        text = match.group(0)
        if text == "{{":
            return "{"
        if text == "}}":
            return "}"
        name = match.group(1)
        if name not in TOKENS:
            raise RendererError(
                f"unknown token {{{name}}} in the command; known: "
                + " ".join(f"{{{t}}}" for t in sorted(TOKENS))
            )
        if name not in tokens:
            if name in _RANGE_TOKENS and "frames" in tokens:
                shown = tokens["frames"]
                shown = shown if len(shown) <= 40 else shown[:37] + "..."
                raise RendererError(
                    f"this chunk's frames ({shown}) are not evenly spaced, so "
                    "{start}-{end}x{step} cannot name them; resubmit the job "
                    "(it is cut into evenly spaced chunks now) or use {frames}"
                )
            raise RendererError(f"token {{{name}}} has no value for this chunk")
        return tokens[name]

    return [_TOKEN.sub(substitute, arg) for arg in argv]


def tokens_used(argv: Sequence[str]) -> set[str]:
    """The names of the tokens ``argv`` uses (a literal ``{{name}}`` is not one)."""
    return {m.group(1) for arg in argv for m in _TOKEN.finditer(arg) if m.group(1)}


def outdir_tokens(outdir: str) -> dict[str, str]:
    """``{outdir}`` and ``{outdir_printf}`` for a chunk that writes into ``outdir``."""
    return {"outdir": outdir, "outdir_printf": outdir.replace("%", "%%")}


def frame_tokens(frames: Sequence[int]) -> dict[str, str]:
    """``{start}`` ``{end}`` ``{step}`` ``{frames}`` for a chunk's frames.

    ``{start}-{end}x{step}`` names exactly the chunk's frames (ascending, even when
    the chunk runs backwards). A chunk whose frames are not evenly spaced (cut by a
    leader before chunks followed the runs of the list) has only ``{frames}``:
    any range would render frames that are not the chunk's.
    """
    if not frames:
        raise RendererError("a chunk has no frames")
    tokens = {"frames": ",".join(str(f) for f in frames)}
    steps = {b - a for a, b in zip(frames, frames[1:], strict=False)}
    if len(steps) <= 1 and 0 not in steps:
        tokens["start"] = str(min(frames[0], frames[-1]))
        tokens["end"] = str(max(frames[0], frames[-1]))
        tokens["step"] = str(abs(steps.pop()) if steps else 1)
    return tokens


def _split_pattern(pattern: str) -> tuple[str, str, int, str]:
    """(folder, name before the padding, padding width, name after the padding)."""
    path = PurePosixPath(pattern)
    name = path.name
    matches = list(_PADDING.finditer(name))
    if not matches:
        raise RendererError(f"output pattern {pattern!r} needs '#' padding (frame_####.png)")
    last = matches[-1]
    folder = "" if str(path.parent) == "." else str(path.parent)
    return folder, name[: last.start()], len(last.group()), name[last.end() :]


def literal(text: str) -> str:
    """``text`` as an argv template writes it: a brace in a name is not a token."""
    return text.replace("{", "{{").replace("}", "}}")


def _literal_pattern(pattern: str) -> tuple[str, int, str]:
    """The output pattern's file name around its padding, its braces written as literal."""
    _, head, width, tail = _split_pattern(pattern)
    return literal(head), width, literal(tail)


def _blender_format(tail: str, extra: Sequence[str]) -> list[str]:
    """``-F FORMAT`` for the extension ending ``tail`` (the pattern's name after its
    padding), unless the options already give one."""
    fmt = BLENDER_FORMATS.get(PurePosixPath("f" + tail).suffix.lower())
    if fmt is None or _has_flag(extra, "-F", "--render-format"):
        return []
    return ["-F", fmt]


def _need(value: str | None, what: str, renderer: str) -> str:
    if not value:
        article = "an" if what[0] in "aeiou" else "a"
        raise RendererError(f"renderer {renderer!r} needs {article} {what}")
    return value


def is_image_sequence(scene: str) -> bool:
    """An image's name with a frame field: ``frame_####.png`` or ``frame_%04d.png``."""
    path = PurePosixPath(scene)
    if path.suffix.lower() not in IMAGE_EXTENSIONS:
        return False
    return "#" in path.name or _PRINTF_FIELD.search(path.name.replace("%%", "")) is not None


def printf_sequence(scene: str) -> str:
    """An image sequence named with the farm's padding (``shot/frame_####.png``) as ffmpeg's
    image2 reader takes it (``shot/frame_%04d.png``), as the output's is; one already in
    ``%04d`` with its folder's ``%`` doubled; a movie as it is."""
    path = PurePosixPath(scene)
    if not is_image_sequence(scene):
        return scene
    # ffmpeg reads the whole path as the pattern: a "%" in a folder is doubled too (a folder
    # "plates 100%" failed every chunk: break rounds 33d and 34a).
    folder = scene[: len(scene) - len(path.name)].replace("%", "%%")
    if "#" not in path.name:
        return folder + path.name
    _, head, width, tail = _split_pattern(scene)
    return folder + printf_pattern(head.replace("%", "%%") + "#" * width + tail.replace("%", "%%"))


def sequence_file(scene: str, frame: int) -> str:
    """The file of an image sequence (``frame_####.png`` or ``frame_%04d.png``) for ``frame``."""
    path = PurePosixPath(scene)
    folder, name = scene[: len(scene) - len(path.name)], path.name
    if "#" in name:
        return folder + frame_path(name, frame)
    return folder + _PRINTF_TOKEN.sub(
        lambda m: "%" if m.group(0) == "%%" else m.group(0) % frame, name
    )


def input_list(scene: str, frames: Sequence[int]) -> str:
    """``{input_list}``'s content: ffmpeg's concat list of the sequence's file for each
    of ``frames``, ascending (see ``FFMPEG_LIST_INPUT``)."""
    if not is_image_sequence(scene):
        raise RendererError(f"{{input_list}} needs an image sequence as its scene, not {scene!r}")
    if "\n" in scene or "\r" in scene:
        raise RendererError("{input_list} cannot list a scene whose name has a line break")
    # Quoted, a quote closed, escaped and opened again: the reader takes the rest as it is.
    # A file whose name has a pattern's characters is opened by ffmpeg's image2 reader,
    # which would read it as a pattern again ("100%done" as %d, "x%{y}" as a glob):
    # pattern_type none says not to (to any other reader, it is an unused option, and
    # a warning a frame in the chunk's log). A duration gives each image a time (the
    # filter sets the frames' own): without one, the reader logged three lines of
    # "DTS ... out of order" a frame.
    lines = ["ffconcat version 1.0"]
    for frame in sorted(frames):
        path = sequence_file(scene, frame)
        quoted = path.replace("'", "'\\''")
        lines.append(f"file '{quoted}'")
        if _PATTERN_CHARACTERS.intersection(path):
            lines.append("option pattern_type none")
        lines.append("duration 1")
    return "\n".join(lines) + "\n"


def _ffmpeg_filters(extra: Sequence[str]) -> tuple[list[str], list[str]]:
    """``extra`` without its video filters, and those filters: they go after the adapter's,
    which picks the chunk's frames (ffmpeg keeps only the last -vf it is given, so one
    before the adapter's was dropped without a word)."""
    if other := next((arg for arg in extra if _FFMPEG_OTHER_FILTERS.fullmatch(arg)), None):
        raise RendererError(
            f"ffmpeg's {other} cannot go with the adapter's -vf, which picks each "
            "chunk's frames; give a -vf, or the whole command to a generic job"
        )
    rest: list[str] = []
    filters: list[str] = []
    options = iter(extra)
    for option in options:
        if _FFMPEG_VIDEO_FILTER.fullmatch(option):
            value = next(options, None)
            if value is None:
                raise RendererError(f"ffmpeg's {option} needs a filter after it")
            filters.append(value)
        else:
            rest.append(option)
    return rest, filters


def _has_flag(extra: Sequence[str], *flags: str) -> bool:
    return any(arg in flags for arg in extra)


@overload
def build_argv(renderer: JobSpec) -> list[str]: ...


@overload
def build_argv(
    renderer: str,
    scene: str | None = None,
    output_pattern: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]: ...


def build_argv(
    renderer: str | JobSpec,
    scene: str | None = None,
    output_pattern: str | None = None,
    extra: Sequence[str] = (),
) -> list[str]:
    """The argv template for a renderer, with tokens left for the agent to expand.

    ``build_argv(spec)`` returns ``spec.argv`` when the submitter gave one,
    else the template for ``spec.renderer``. ``extra`` arguments go where the
    renderer reads options (before the frame flags for Blender, whose
    arguments are processed in order).
    """
    if isinstance(renderer, JobSpec):
        spec = renderer
        if spec.argv:
            return list(spec.argv)
        argv = build_argv(spec.renderer, spec.scene, spec.output, spec.extra_args)
        if spec.gpus and spec.renderer.lower() == "blender":
            # Cycles reads its device after "--"; the agent's CUDA_VISIBLE_DEVICES says which.
            argv += ["--", "--cycles-device", "CUDA"]
        return argv
    extra = list(extra)
    name = renderer.lower()
    if name == "generic":
        if not extra:
            raise RendererError("renderer 'generic' needs a command: farm submit ... -- ARGV")
        return extra
    if "" in extra:
        # Blender read it as a scene to open, ffmpeg as an output to write: every
        # chunk failed on every node.
        raise RendererError(f"{name}'s options cannot hold an empty word")
    if name == "demo":
        # `farm` as the node finds it, like any renderer: never this machine's interpreter.
        # --frames=: a chunk of negative frames ("-5,-4") is a value, not an option.
        return ["farm", "demo-render", "--frames={frames}", "--output={output}", *extra]
    if name == "blender":
        scene = literal(_need(scene, "scene (.blend)", name))
        if "--" in extra:
            raise RendererError(
                "blender's options cannot hold `--`: what follows it is for Python, and "
                "the chunk's -f would be too"
            )
        if taken := next((arg for arg in extra if arg in _BLENDER_ADAPTERS_OWN), None):
            raise RendererError(
                f"blender's {taken} is the adapter's: it names the scene, the output and "
                "each chunk's frames (-a rendered the whole range in every chunk)"
            )
        head, width, tail = _literal_pattern(_need(output_pattern, "output pattern", name))
        # Blender reads its arguments in order: the scene first, then the output
        # path and format, then -f renders exactly the chunk's frames (gaps and order kept).
        return [
            "blender",
            "-b",
            scene,
            "-o",
            "{outdir}/" + head + "#" * width + tail,
            *_blender_format(tail, extra),
            *extra,
            "-f",
            "{frames}",
        ]
    if name == "ffmpeg":
        if "--" in extra:
            raise RendererError("ffmpeg's options cannot hold `--`: ffmpeg takes none")
        scene = literal(_need(scene, "input (--scene)", name))
        head, width, tail = _literal_pattern(_need(output_pattern, "output pattern", name))
        # '%' is the image2 muxer's own escape: a literal one in the name is '%%'.
        out = printf_pattern(head.replace("%", "%%") + "#" * width + tail.replace("%", "%%"))
        sequence = is_image_sequence(scene)
        extra, filters = _ffmpeg_filters(extra)
        return [
            "ffmpeg",
            "-hide_banner",
            "-nostdin",
            "-y",
            *(FFMPEG_LIST_INPUT if sequence else ["-i", scene]),
            *extra,
            "-vf",
            ",".join([FFMPEG_LIST_FILTER if sequence else FFMPEG_CHUNK_FILTER, *filters]),
            "-fps_mode",
            "passthrough",
            "-r",
            "1",
            "-frame_pts",
            "1",
            # ffmpeg reads the whole output path as its pattern: a "%" in the node's folder
            # (its state folder, the job's outdir) must be doubled, which only the node can do.
            "{outdir_printf}/" + out,
        ]
    if name == "aerender":
        scene = literal(_need(scene, "project (.aep)", name))
        head, width, tail = _literal_pattern(_need(output_pattern, "output pattern", name))
        comp = [] if _has_flag(extra, "-comp", "-rqindex") else ["-rqindex", "1"]
        # No -reuse: every chunk's whole tree dies with the chunk.
        return [
            "aerender",
            "-project",
            scene,
            *comp,
            *extra,
            "-output",
            "{outdir}/" + head + "[" + "#" * width + "]" + tail,
            "-s",
            "{start}",
            "-e",
            "{end}",
            "-i",
            "{step}",
            "-v",
            "ERRORS_AND_PROGRESS",
            "-close",
            "DO_NOT_SAVE_CHANGES",
            "-sound",
            "OFF",
        ]
    if name == "nuke":
        scene = literal(_need(scene, "script (.nk)", name))
        # Nuke writes where the script's Write nodes say; pick one with -X in extra.
        return ["nuke", "-x", "-F", "{start}-{end}x{step}", *extra, scene]
    if name == "houdini":
        scene = literal(_need(scene, "scene (.hip)", name))
        head, width, tail = _literal_pattern(_need(output_pattern, "output pattern", name))
        rop = [] if _has_flag(extra, "-d") else ["-d", "/out/mantra1"]
        # hrender.py ships in $HFS/bin; run it under hython without a shell.
        return [
            "hython",
            "-c",
            _HRENDER,
            "-e",
            "-f",
            "{start}",
            "{end}",
            "-i",
            "{step}",
            *rop,
            *extra,
            "-o",
            "{outdir}/" + head + f"$F{width}" + tail,
            "-v",
            scene,
        ]
    if name == "maya":
        scene = literal(_need(scene, "scene (.ma/.mb)", name))
        head, width, tail = _literal_pattern(_need(output_pattern, "output pattern", name))
        separator = head[-1] if head and head[-1] in "._" else ""
        prefix = head[:-1] if separator else head
        ext = tail.lstrip(".")
        naming = f"name{separator}#.ext" if ext else f"name{separator}#"
        return [
            "Render",
            "-s",
            "{start}",
            "-e",
            "{end}",
            "-b",
            "{step}",
            "-rd",
            "{outdir}",
            "-im",
            prefix,
            "-fnc",
            naming,
            "-pad",
            str(width),
            *extra,
            scene,
        ]
    raise RendererError(f"unknown renderer {renderer!r}; known: {', '.join(RENDERERS)}")
