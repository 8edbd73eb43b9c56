"""A farmtui job as an Open Job Description job template (``farm show JOB --openjd``).

The template runs the same command on the same frames with any OpenJD tool:

- the frames are a ``Frames`` job parameter in OpenJD's dialect (``1-100:5``, see
  ``farmtui.frames.openjd_range``) feeding a ``Frame`` task parameter: ``INT`` for
  one frame per chunk, ``CHUNK[INT]`` (TASK_CHUNKING) with the job's chunk size;
- ``{scene}`` is a ``Scene`` PATH parameter, ``{outdir}``/``{output}`` an ``OutputDir``
  one (defaults: the job's values, relative to the sync root);
- the argv is ``onRun``'s command and args. With one frame per task every frame
  token is ``{{Task.Param.Frame}}``. A chunk is an OpenJD range expression, which
  farmtui's ``{start}``/``{end}``/``{step}``/``{frames}`` are cut from: the command
  runs under a few lines of Python (``python3 -c``) that cut them and exec it. The
  same lines write an ffmpeg task's list of its files (``{input_list}``) and double
  a ``%`` in its output folder (``{outdir_printf}``), as an agent does;
- tags are a host requirement (``attr.farmtui.tags`` allOf), the environment a
  job environment of variables, the maximum render time the action's timeout.

The result is checked by openjd-model before it is returned, so what farmtui
prints is a template every OpenJD tool accepts.
"""

from __future__ import annotations

import math
import re
from pathlib import PurePosixPath
from typing import Any

from farmtui.errors import FarmError
from farmtui.frames import openjd_range, parse_frames
from farmtui.jobfields import command_for
from farmtui.protocol import JobView
from farmtui.renderers import literal, tokens_used

TAGS_ATTRIBUTE = "attr.farmtui.tags"
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")
_FRAME_TOKENS = frozenset({"start", "end", "step", "frames"})
# The paths the runner is given in argv[4:7], and fills in itself: a path OpenJD put
# into the command's words would be read again by the runner ("x{start}.mov" as a token).
_RUNNER_PATHS = ("scene", "outdir", "output")
# What the chunk runner fills in itself; "lb" and "rb" are literal braces.
_RUNNER_TOKENS = _FRAME_TOKENS | {"input_list", "outdir_printf", *_RUNNER_PATHS}
# A farmtui argument's tokens and its literal braces: doubled, or alone.
_TOKEN_OR_BRACE = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}|[{}]")

# Cuts farmtui's frame tokens from a chunk's OpenJD range (argv[1], "1-10:2,15"),
# puts them into the command (argv[7:]) and execs it. With an image sequence in
# argv[2] it writes {input_list} as an agent does (``farmtui.renderers.input_list``),
# into the session's folder (OpenJD removes it with the session). With an output
# folder in argv[3] it is {outdir_printf}, each '%' doubled (OpenJD cannot double it).
# argv[4:7] are {scene}, {outdir} and {output}: filled in one pass with the rest, a
# path is never read for tokens. {lb} and {rb} are literal braces. No '{{' in it: it
# is an OpenJD format string too.
CHUNK_RUNNER = """\
import os, re, sys, tempfile
frames = []
for part in sys.argv[1].replace(' ', '').split(','):
    a, b, s = re.fullmatch(r'(-?[0-9]+)(?:-(-?[0-9]+)(?::(-?[0-9]+))?)?', part).groups()
    a = int(a); b = a if b is None else int(b); s = int(s or 1)
    frames += range(a, b + (1 if s > 0 else -1), s)
frames.sort()
steps = set(y - x for x, y in zip(frames, frames[1:]))
tokens = {'frames': ','.join(map(str, frames))}
if len(steps) <= 1:
    tokens.update(start=str(frames[0]), end=str(frames[-1]), step=str(steps.pop() if steps else 1))
if sys.argv[2]:
    folder, name = os.path.split(sys.argv[2])
    def one(frame):
        if '#' in name:
            pad = list(re.finditer('#+', name))[-1]
            return name[:pad.start()] + '%0*d' % (len(pad.group()), frame) + name[pad.end():]
        field = lambda m: '%' if m.group() == '%%' else m.group() % frame
        return re.sub('%%|%0?[0-9]*d', field, name)
    lines = ['ffconcat version 1.0']
    for frame in frames:
        path = os.path.join(folder, one(frame)).replace("'", "'" + chr(92) + "''")
        lines += ["file '" + path + "'", 'option pattern_type none', 'duration 1']
    fd, tokens['input_list'] = tempfile.mkstemp(suffix='.ffconcat', dir='.')
    os.write(fd, ('\\n'.join(lines) + '\\n').encode())
    os.close(fd)
tokens['outdir_printf'] = sys.argv[3].replace('%', '%%')
tokens.update(scene=sys.argv[4], outdir=sys.argv[5], output=sys.argv[6], lb='{', rb='}')
def fill(m):
    if m.group(1) not in tokens:
        sys.exit('frames ' + tokens['frames'] + ' are not evenly spaced for ' + m.group(0))
    return tokens[m.group(1)]
names = 'start|end|step|frames|input_list|outdir_printf|scene|outdir|output|lb|rb'
argv = [re.sub('[{](' + names + ')[}]', fill, a) for a in sys.argv[7:]]
os.execvp(argv[0], argv)
"""


class ExportError(FarmError):
    """A job that cannot be written as an OpenJD template (said in one line)."""


def job_template(job: JobView) -> dict[str, Any]:
    """The job as an OpenJD job template (a dict for YAML or JSON), validated."""
    spec = job.spec
    argv = command_for(spec)
    frames = parse_frames(spec.frames)
    chunked = spec.chunk > 1
    listed = bool(spec.scene) and "input_list" in tokens_used(argv)
    if spec.scene:
        # A renderer's template names the scene itself (blender -b shot.blend), its
        # braces doubled (literal, not tokens).
        argv = ["{scene}" if arg == literal(spec.scene) else arg for arg in argv]
    uses = tokens_used(argv)

    parameters: list[dict[str, Any]] = [
        {
            "name": "Frames",
            "type": "STRING",
            "description": "Frames to render, as an OpenJD range expression (1-100:5 steps by 5)",
            "default": openjd_range(frames),
        }
    ]
    values: dict[str, str] = {}
    if ("scene" in uses or listed) and spec.scene:
        parameters.append(
            {"name": "Scene", "type": "PATH", "objectType": "FILE", "dataFlow": "IN",
             "default": spec.scene}
        )  # fmt: skip
        values["scene"] = "{{Param.Scene}}"
    if uses & {"outdir", "outdir_printf", "output"} and spec.output:
        folder = str(PurePosixPath(spec.output).parent)
        parameters.append(
            {"name": "OutputDir", "type": "PATH", "objectType": "DIRECTORY", "dataFlow": "OUT",
             "default": folder}
        )  # fmt: skip
        values["outdir"] = "{{Param.OutputDir}}"
        values["output"] = "{{Param.OutputDir}}/" + PurePosixPath(spec.output).name

    frame_parameter: dict[str, Any] = {"name": "Frame", "range": "{{Param.Frames}}"}
    extensions: list[str] = []
    if chunked:
        extensions.append("TASK_CHUNKING")
        frame_parameter["type"] = "CHUNK[INT]"
        frame_parameter["chunks"] = {
            "defaultTaskCount": spec.chunk,
            "rangeConstraint": "NONCONTIGUOUS",
        }
    else:
        frame_parameter["type"] = "INT"
        values.update(
            start="{{Task.Param.Frame}}",
            end="{{Task.Param.Frame}}",
            frames="{{Task.Param.Frame}}",
            step="1",
        )
    if "outdir_printf" in uses and "outdir" not in values:
        raise ExportError("the command uses {outdir_printf}, which this job has no value for")
    braced = any(_TOKEN_OR_BRACE.sub(_token_only, arg) != arg for arg in argv)
    if listed or "outdir_printf" in uses or (chunked and uses & _FRAME_TOKENS) or braced:
        # (A literal brace too: OpenJD has no way to write "{{" but as an expression.)
        command = "python3"
        args = ["-c", CHUNK_RUNNER, "{{Task.Param.Frame}}", values["scene"] if listed else ""]
        args.append(values["outdir"] if "outdir_printf" in uses else "")
        args += [values.get(name, "") for name in _RUNNER_PATHS]
        args += [_fill(arg, values, keep_frames=True) for arg in argv]
    else:
        command, *args = (_fill(arg, values) for arg in argv)

    on_run: dict[str, Any] = {"command": command}
    if args:
        on_run["args"] = args
    max_render = spec.timeouts.max_render
    if max_render is not None and not spec.timeouts.per_frame:
        on_run["timeout"] = max(1, math.ceil(max_render))
    step: dict[str, Any] = {
        "name": "Render",
        "parameterSpace": {"taskParameterDefinitions": [frame_parameter]},
        "script": {"actions": {"onRun": on_run}},
    }
    requirements: dict[str, Any] = {}
    if spec.gpus:
        amounts: list[dict[str, Any]] = [{"name": "amount.worker.gpu", "min": spec.gpus}]
        if spec.gpu_memory:
            amounts.append({"name": "amount.worker.gpu.memory", "min": spec.gpu_memory})
        requirements["amounts"] = amounts
    if spec.tags:
        requirements["attributes"] = [{"name": TAGS_ATTRIBUTE, "allOf": list(spec.tags)}]
    if requirements:
        step["hostRequirements"] = requirements
    template: dict[str, Any] = {"specificationVersion": "jobtemplate-2023-09"}
    if extensions:
        template["extensions"] = extensions
    template["name"] = _name(job)
    template["parameterDefinitions"] = parameters
    if spec.env:
        template["jobEnvironments"] = [{"name": "FarmEnvironment", "variables": dict(spec.env)}]
    template["steps"] = [step]
    check(template)
    return template


def _name(job: JobView) -> str:
    # '{{' in a name would be read as an expression; the name is free text otherwise.
    name = (job.name or job.id).replace("{{", "{ {").replace("}}", "} }")
    return name or "farmtui job"


def _token_only(match: re.Match[str]) -> str:
    """A token as it is, a literal brace left out (``braced``: whether an argument has one)."""
    return match.group(0) if match.group(1) is not None else ""


def _fill(arg: str, values: dict[str, str], *, keep_frames: bool = False) -> str:
    """A farmtui argument with its tokens as OpenJD text (the runner's kept for it).

    For the runner every literal brace is ``{lb}`` or ``{rb}``: doubled, OpenJD would
    read it as its own ``{{``; alone, next to a token, as one too ("{start}}").
    """

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name is None:
            if keep_frames:
                return "{lb}" if match.group(0)[0] == "{" else "{rb}"
            return match.group(0)[0]
        runners = keep_frames and name in _RUNNER_TOKENS
        if runners and name not in _RUNNER_PATHS:
            return match.group(0)  # the runner's own: a chunk's frames, its list of files
        if name not in values:
            raise ExportError(f"the command uses {{{name}}}, which this job has no value for")
        return match.group(0) if runners else values[name]

    return (_TOKEN_OR_BRACE if keep_frames else _TOKEN).sub(one, arg)


def check(template: dict[str, Any]) -> None:
    """Refuse a template that openjd-model does not accept (ExportError, one line)."""
    from openjd.model import DecodeValidationError, decode_job_template

    try:
        decode_job_template(template=template, supported_extensions=["TASK_CHUNKING"])
    except DecodeValidationError as exc:
        raise ExportError(" ".join(str(exc).split())) from None


def to_yaml(template: dict[str, Any]) -> str:
    """The template as YAML, its keys in the specification's order."""
    import yaml

    text: str = yaml.safe_dump(template, sort_keys=False, allow_unicode=True, width=100)
    return text
