"""Which argv tokens a job's commands use that not every agent knows.

An agent expands the tokens of ``farmtui.renderers.TOKENS`` it was built with;
a token added since (``{outdir_printf}``, ``{input_list}``) fails every attempt
on an older agent with "unknown token". Agents say which they know in their
hello (``AgentHello.tokens``), and a job is given only to nodes that know all
of its commands' tokens (``SchedulerState._fits``).
"""

from __future__ import annotations

from farmtui.renderers import FIRST_TOKENS, tokens_used
from server.frame_states import tally_of
from server.model import Job


def tokens_needed(job: Job) -> frozenset[str]:
    """The tokens of ``job``'s commands (render, pre- and post-job) beyond FIRST_TOKENS;
    worked out once for each spec the job has."""
    spec, tally = job.spec, tally_of(job)
    if tally.needs is None or tally.needs[0] is not spec:
        used = tokens_used([*spec.argv, *(spec.pre_job or ()), *(spec.post_job or ())])
        tally.needs = (spec, frozenset(used - FIRST_TOKENS))
    return tally.needs[1]
