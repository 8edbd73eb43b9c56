"""The rules between a job's fields, and where a value its type allows still means nothing.

A maximum render time of 0, a retry delay longer than its cap, scout frames
outside the frame list, a frame offset without a frame-by-frame dependency. The
CLI and the job file reader run ``check_job`` before sending; the leader runs it
for POST, and ``check_patch`` for PATCH on the job's current spec with the patch
applied; so does the console. fileseq (``farmtui.frames``) and the renderers are
imported inside the checks, not when the package is (see ``table.py``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import msgspec

from farmtui.jobfields.errors import JobFieldError
from farmtui.jobfields.msgspec_errors import revalidate
from farmtui.jobfields.scene_path import check_scene
from farmtui.protocol import MAX_FRAME_WINDOW, JobPatch, JobSpec

# Timeouts where 0 would fire at once: a limit is more than 0, or unset for none.
_NO_ZERO: tuple[tuple[str, str], ...] = (
    ("max_render", "maximum render time"),
    ("max_start", "maximum start time"),
    ("script_timeout", "script timeout"),
)


def _seconds(value: float) -> str:
    return f"{value:g}s"


def check_settings(spec: JobSpec) -> None:
    """The rules on what can change after submission: timeouts and retries."""
    t = spec.timeouts
    for name, what in _NO_ZERO:
        if getattr(t, name) == 0:
            raise JobFieldError(
                f"the {what} must be more than 0 (leave it unset for no limit)",
                ("timeouts", name),
            )
    if t.min_render is not None and t.max_render is not None and t.min_render > t.max_render:
        raise JobFieldError(
            f"the minimum render time ({_seconds(t.min_render)}) is longer than the "
            f"maximum render time ({_seconds(t.max_render)})",
            ("timeouts", "min_render"),
        )
    if (
        spec.retry_delay is not None
        and spec.retry_cap is not None
        and spec.retry_delay > spec.retry_cap
    ):
        raise JobFieldError(
            f"the retry delay ({_seconds(spec.retry_delay)}) is longer than the "
            f"retry cap ({_seconds(spec.retry_cap)})",
            ("retry_delay",),
        )


def command_for(spec: JobSpec) -> list[str]:
    """The job's argv: the submitter's, or its renderer's template when empty.

    Refused: an unknown renderer, a generic job without a command, a template
    missing what it needs, an unknown ``{token}``, or ``{output}``/``{scene}``
    in a job that has none (a typo fails here, not on every node).
    """
    from farmtui.renderers import (
        TOKENS,
        RendererError,
        build_argv,
        expand,
        is_image_sequence,
        tokens_used,
    )

    if spec.renderer.lower() == "generic" and not spec.argv:
        raise JobFieldError(
            "a generic job needs its command after `--` (argv in a job file or the API)",
            ("argv",),
        )
    try:
        argv = build_argv(spec)
        expand(argv, dict.fromkeys(TOKENS, ""))
    except RendererError as exc:
        raise JobFieldError(str(exc), ("argv",)) from None
    if not argv[0]:
        raise JobFieldError("the command's program is empty", ("argv",))
    if spec.extra_args:
        # A command given whole (not the one built with them, as a client sends it)
        # would leave them out without a word.
        built: list[str] | None = None
        if spec.renderer.lower() != "generic":
            with contextlib.suppress(RendererError):
                built = build_argv(msgspec.structs.replace(spec, argv=[]))
        if built is None or (spec.argv and spec.argv != built):
            raise JobFieldError(
                "extra-args go into a renderer's built command; a command of your own "
                "(after `--`) takes its options in it",
                ("extra_args",),
            )
    if "input_list" in tokens_used(argv) and not is_image_sequence(spec.scene or ""):
        raise JobFieldError(
            "the command uses {input_list} but the job's scene is not an image sequence "
            "(plates/p_####.png)",
            ("argv",),
        )
    for token, value, what in (
        ("output", spec.output, "output pattern"),
        ("scene", spec.scene, "scene"),
    ):
        if not value:
            try:
                expand(argv, dict.fromkeys(TOKENS - {token}, ""))
            except RendererError:
                raise JobFieldError(
                    f"the command uses {{{token}}} but the job has no {what}", ("argv",)
                ) from None
    return argv


def check_job(spec: JobSpec, root: Path | None = None) -> list[int]:
    """Refuse a bad spec with a JobFieldError; the job's frames when it is good.

    Every entry point runs this: the CLI and the job file reader before sending,
    the leader on POST (with ``root``, its sync root, to judge absolute scene paths).
    Checks the Struct's own limits again first, for specs built in Python.
    """
    from farmtui.frames import check_output_pattern, parse_frames

    revalidate(spec)
    try:
        frames = parse_frames(spec.frames)
    except ValueError as exc:
        raise JobFieldError(str(exc), ("frames",)) from None
    if spec.scout is not None:
        try:
            scouts = parse_frames(spec.scout)
        except ValueError as exc:
            raise JobFieldError(f"scout frames: {exc}", ("scout",)) from None
        outside = sorted(set(scouts) - set(frames))
        if outside:
            raise JobFieldError(
                f"scout frame {outside[0]} is not in the frame list {spec.frames!r}", ("scout",)
            )
    if spec.output is not None:
        try:
            check_output_pattern(spec.output)
        except ValueError as exc:
            raise JobFieldError(str(exc), ("output",)) from None
    check_scene(spec.scene, root)
    command_for(spec)
    check_renderer_frames(spec, frames)
    check_settings(spec)
    check_scheduling(spec)
    return frames


# Blender's last frame (MAXFRAME): -f 1048575 renders 1048574 again.
BLENDER_MAX_FRAME = 1_048_574


def check_renderer_frames(spec: JobSpec, frames: Sequence[int]) -> None:
    """Frames a renderer's own command line cannot name, refused at submit, not on nodes."""
    renderer = spec.renderer.lower()
    if spec.argv or not frames or renderer not in ("blender", "ffmpeg"):
        return
    low, high = min(frames), max(frames)
    if low < 0 and renderer == "blender":
        # Blender's -f reads "-3" as three frames back from the scene's end frame.
        raise JobFieldError(
            f"blender cannot render negative frames ({low}): its -f counts them "
            "back from the scene's end frame",
            ("frames",),
        )
    if renderer == "ffmpeg":
        from farmtui.renderers import is_image_sequence

        first = 0 if is_image_sequence(spec.scene or "") else 1
        if low < first:
            # Frame N is an image sequence's file N, a movie's Nth frame counted from 1.
            what = "an image sequence" if first == 0 else "a movie"
            raise JobFieldError(
                f"ffmpeg cannot render frame {low} of {what}: its frames start at {first}",
                ("frames",),
            )
    if renderer == "blender" and high > BLENDER_MAX_FRAME:
        raise JobFieldError(
            f"blender cannot render frame {high}: its last frame is {BLENDER_MAX_FRAME:,}",
            ("frames",),
        )


def check_scheduling(spec: JobSpec) -> None:
    """What the dependency, GPU and limit fields mean together."""
    start, end = spec.after_offset
    if start > end:
        raise JobFieldError(
            f"the frame offset {start}:{end} ends before it starts (write A:B with A <= B)",
            ("after_offset",),
        )
    if end - start > MAX_FRAME_WINDOW:
        raise JobFieldError(
            f"the frame offset {start}:{end} spans {end - start + 1} frames; "
            f"a frame may wait for at most {MAX_FRAME_WINDOW + 1}",
            ("after_offset",),
        )
    if (spec.after_frames or spec.after_offset != (0, 0)) and not spec.after:
        raise JobFieldError(
            "a frame-by-frame dependency needs a job to wait on (--after JOB:frames)",
            ("after_frames",),
        )
    if spec.after_offset != (0, 0) and not spec.after_frames:
        raise JobFieldError(
            "a frame offset applies to frame-by-frame dependencies (--after JOB:frames)",
            ("after_offset",),
        )
    if spec.gpu_memory and not spec.gpus:
        raise JobFieldError("a GPU memory needs GPUs to apply to (--gpus N)", ("gpu_memory",))
    seen = [name for i, name in enumerate(spec.limits) if name in spec.limits[:i]]
    if seen:
        raise JobFieldError(f"limit {seen[0]!r} is named twice", ("limits",))


def apply_patch(spec: JobSpec, patch: JobPatch) -> JobSpec:
    """The spec with every setting the patch gives (those not None) replaced."""
    changes = {name: getattr(patch, name) for name in patch.__struct_fields__}
    return msgspec.structs.replace(
        spec, **{name: value for name, value in changes.items() if value is not None}
    )


def check_patch(spec: JobSpec, patch: JobPatch) -> JobSpec:
    """The job's spec with the patch applied, checked as a whole; JobFieldError otherwise.

    So a minimum render time above the job's existing maximum is refused even
    when the patch sets only the minimum.
    """
    merged = apply_patch(spec, revalidate(patch))
    check_settings(merged)
    return merged
