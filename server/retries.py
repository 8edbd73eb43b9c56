"""Self-healing: exponential backoff per chunk, and blocking a node that keeps failing a job.

Only errors count: a failure the farm caused (a node vanished, an agent or the
leader restarted) requeues the chunk as ``preempted`` and uses no retry.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.model import Job
from server.scheduler_config import SchedulerConfig


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    retries: int
    delay: float
    cap: float

    def backoff(self, errors: int) -> float:
        """Seconds to wait before the retry that follows the ``errors``-th error."""
        return min(self.cap, self.delay * 2.0 ** max(0, errors - 1))


def retry_policy(job: Job, config: SchedulerConfig) -> RetryPolicy:
    """The job's own settings where it has them, else the leader's defaults."""
    spec = job.spec
    return RetryPolicy(
        retries=config.retries if spec.retries is None else spec.retries,
        delay=config.retry_delay if spec.retry_delay is None else spec.retry_delay,
        cap=config.retry_cap if spec.retry_cap is None else spec.retry_cap,
    )


def note_node_error(job: Job, node: str, config: SchedulerConfig, now: float) -> bool:
    """Count an error of ``job`` on ``node``; True when that blocks the node for the job."""
    count = job.node_errors.get(node, 0) + 1
    if config.block_after > 0 and count >= config.block_after:
        job.node_errors.pop(node, None)
        job.blocked[node] = now + config.block_for
        return True
    job.node_errors[node] = count
    return False


def is_blocked(job: Job, node: str, now: float) -> bool:
    until = job.blocked.get(node)
    return until is not None and until > now


def expire_blocks(job: Job, now: float) -> list[str]:
    """Lift blocks whose time is up; the names of the nodes let back in."""
    expired = [node for node, until in job.blocked.items() if until <= now]
    for node in expired:
        del job.blocked[node]
    return expired
