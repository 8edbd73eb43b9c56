"""Renderers run as another user than the agent: ``farm agent --render-user NAME``.

A job's command is whatever its submitter wrote. Run as the agent's own user,
it can do what the agent can: read the agent's token file (named in the
agent's command line), take the token, connect as a node and report other
users' chunks done with frames of its own. A break round did exactly that
from a plain ``user`` token. So an agent run as root may start every
renderer as an unprivileged user instead, through util-linux's ``setpriv``
(exec'd in place: the renderer keeps the pid, process group and session its
supervisor gave it). That user cannot read the agent's files or its
processes' memory and environment, nor signal them.

What the renderer must write is handed over to it: the attempt's working
folder and output folder, made by the agent first, then given to the user
with ``lchown`` (never through a symlink). Once its renderer is gone, they
are taken back, with what it wrote in them (``agent.no_follow.take_back``),
before anything is judged, delivered or kept; only regular files taken back
are delivered (``agent.staging.open_output``), and the agent writes in the
sync root only through folders it opened without following a symlink
(``agent.no_follow``). Every renderer on a node runs as that one user: chunks
of different jobs rendering at once can still reach each other's folders, and
a file one opened then stays open to it until its own tree is gone.
"""

from __future__ import annotations

import os
import pwd
import shutil
import stat
from dataclasses import dataclass
from pathlib import Path

from agent.errors import AgentError

# The renderer's environment says who it runs as, as a login would.
_IDENTITY = ("USER", "LOGNAME")


@dataclass(frozen=True, slots=True)
class RenderUser:
    name: str
    uid: int
    gid: int
    home: str
    # Its groups (primary and supplementary), as ``setpriv --init-groups`` gives them.
    groups: frozenset[int]
    setpriv: str

    @classmethod
    def named(cls, who: str) -> RenderUser:
        """The user ``who`` (a name or a number); AgentError saying in one line why not."""
        if os.geteuid() != 0:
            raise AgentError(
                f"--render-user {who} needs the agent to run as root: it starts each renderer "
                "as that user"
            )
        try:
            entry = pwd.getpwuid(int(who)) if who.isdigit() else pwd.getpwnam(who)
        except (KeyError, OverflowError):
            raise AgentError(f"--render-user {who}: no such user on this machine") from None
        if entry.pw_uid == 0:
            raise AgentError(
                f"--render-user {who} is root: renderers would run as root; "
                "name an unprivileged user"
            )
        if _hard_links_unprotected():
            raise AgentError(
                "--render-user needs fs.protected_hardlinks = 1 (sysctl -w "
                "fs.protected_hardlinks=1): else the user could link the agent's files, its "
                "output among them, wherever it likes"
            )
        setpriv = shutil.which("setpriv")
        if setpriv is None:
            raise AgentError("--render-user needs setpriv (util-linux) on the PATH")
        return cls(
            name=entry.pw_name,
            uid=entry.pw_uid,
            gid=entry.pw_gid,
            home=entry.pw_dir,
            groups=frozenset(os.getgrouplist(entry.pw_name, entry.pw_gid)),
            setpriv=setpriv,
        )

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run as this user: its ids and groups, no capability passed on."""
        return [
            self.setpriv,
            f"--reuid={self.uid}",
            f"--regid={self.gid}",
            "--init-groups",
            "--inh-caps=-all",
            "--",
            *argv,
        ]

    def environment(self, env: dict[str, str]) -> None:
        """Its home and name in the renderer's environment, not the agent's."""
        env["HOME"] = self.home
        for variable in _IDENTITY:
            env[variable] = self.name

    def hand_over(self, top: Path, *inner: Path) -> None:
        """Give ``top`` and the folders from it down to each of ``inner`` to this user.

        The agent made them, and nobody else could write in ``top`` until now:
        ``lchown`` changes the entries themselves, never what a symlink points to.
        """
        folders = {top}
        for path in inner:
            if path.is_relative_to(top):
                below = path.relative_to(top).parts
                folders.update(top.joinpath(*below[:depth]) for depth in range(1, len(below) + 1))
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            os.chown(folder, self.uid, self.gid, follow_symlinks=False)

    def check_reaches(self, folder: Path, flag: str) -> None:
        """AgentError unless this user may pass through every folder down to ``folder``.

        Renderers are given absolute paths in it (``{outdir}``, their working
        folder): a parent closed to the user fails every chunk, so the agent
        says so at start. (Access control lists are not read: they may allow more.)
        """
        path = folder.absolute()
        for step in [*reversed(path.parents), path]:
            try:
                info = os.stat(step)
            except OSError as exc:
                raise AgentError(f"cannot use {step}: {exc.strerror or exc}") from None
            if not self._may_search(info):
                raise AgentError(
                    f"--render-user {self.name} cannot enter {step}, on the way to {flag} "
                    f"{folder}: let it (chmod o+x {step}) or choose another {flag}"
                )

    def _may_search(self, info: os.stat_result) -> bool:
        if info.st_uid == self.uid:
            return bool(info.st_mode & stat.S_IXUSR)
        if info.st_gid in self.groups:
            return bool(info.st_mode & stat.S_IXGRP)
        return bool(info.st_mode & stat.S_IXOTH)


def _hard_links_unprotected() -> bool:
    """Whether users may hard link files they do not own (Linux's fs.protected_hardlinks)."""
    try:
        return Path("/proc/sys/fs/protected_hardlinks").read_text().strip() == "0"
    except OSError:
        return False
