"""Server processes `kubeserve serve` starts: start, wait for ready, stop and wait for exit.

Each child runs in its own session (process group), so a Ctrl-C in the terminal reaches only
`kubeserve serve`, which then stops the child in order and waits for it: exiting while the
server still holds its ports would make the next `kubeserve serve` fail to bind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from ..errors import LocalError

POLL_INTERVAL_S = 0.25
# After the main process exits, stragglers of its group (TorchServe's Python workers) get this
# long to notice their parent is gone before they are killed.
STRAGGLER_GRACE_S = 5.0


class Child:
    def __init__(
        self,
        name: str,
        command: Sequence[str],
        *,
        env: dict[str, str],
        log_path: Path | None,
        noise: Sequence[str] = (),
    ) -> None:
        self.name = name
        self.command = list(command)
        self.env = env
        self.log_path = log_path  # None: the child writes to our stdout and stderr
        self.noise = tuple(noise)  # log lines containing these are left out of tail()
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        if self.log_path is not None:
            self.log_path.parent.mkdir(parents=True, exist_ok=True)
            output = open(self.log_path, "ab")  # noqa: SIM115 - the child owns it from here
        try:
            self.process = await asyncio.create_subprocess_exec(
                *self.command,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=output if self.log_path is not None else None,
                stderr=asyncio.subprocess.STDOUT if self.log_path is not None else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise LocalError(f"cannot start {self.name} ({self.command[0]}): {exc}") from exc
        finally:
            if self.log_path is not None:
                output.close()

    @property
    def pid(self) -> int:
        assert self.process is not None, "not started"
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        return None if self.process is None else self.process.returncode

    async def wait(self) -> int:
        assert self.process is not None, "not started"
        return await self.process.wait()

    async def stop(self, *, signal_pid: int | None = None, grace_s: float = 30.0) -> None:
        """SIGTERM (to `signal_pid`, default the child), wait for the child, then its group."""
        if self.process is None:
            return
        if self.process.returncode is None:
            target = self.process.pid
            if signal_pid is not None and process_group(signal_pid) == self.process.pid:
                target = signal_pid  # only ever a process of the group we started
            with contextlib.suppress(ProcessLookupError):
                os.kill(target, signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), grace_s)
            except TimeoutError:
                print(
                    f"{self.name} did not stop within {grace_s:.0f} s; killing it", file=sys.stderr
                )
                _kill_group(self.process.pid)
                await self.process.wait()
        await self._reap_group()

    async def _reap_group(self) -> None:
        assert self.process is not None
        group = self.process.pid
        loop = asyncio.get_running_loop()
        deadline = loop.time() + STRAGGLER_GRACE_S
        while group_alive(group) and loop.time() < deadline:
            await asyncio.sleep(POLL_INTERVAL_S)  # bounded: stragglers have no exit event
        if group_alive(group):
            _kill_group(group)

    def tail(self, lines: int = 20) -> list[str]:
        if self.log_path is None or not self.log_path.is_file():
            return []
        with open(self.log_path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            handle.seek(max(0, handle.tell() - 64 * 1024))
            text = handle.read().decode(errors="replace")
        kept = [
            line
            for line in text.splitlines()
            if line.strip() and not any(word in line for word in self.noise)
        ]
        return kept[-lines:]

    def last_line(self) -> str:
        tail = self.tail(1)
        return tail[0] if tail else ""


def process_group(pid: int) -> int | None:
    try:
        return os.getpgid(pid)
    except (ProcessLookupError, PermissionError):
        return None


def group_alive(pgid: int) -> bool:
    """Whether any live (non-zombie) process remains in process group `pgid`."""
    proc = Path("/proc")
    if not proc.is_dir():
        try:
            os.killpg(pgid, 0)
        except (ProcessLookupError, PermissionError):
            return False
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp ...
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) >= 3 and int(fields[2]) == pgid and fields[0] != "Z":
            return True
    return False


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signal.SIGKILL)


async def wait_until_ready(
    child: Child,
    check: Callable[[], Awaitable[bool]],
    *,
    timeout_s: float,
    stop: asyncio.Event,
) -> bool:
    """Poll `check` (bounded by `timeout_s`) until it is true; False if `stop` is set first.

    Raises LocalError, with the child's last log lines, if it exits or times out.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    exited = asyncio.ensure_future(child.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while True:
            if await check():
                return True
            if stop.is_set():
                return False
            if exited.done():
                raise ChildFailed(
                    child, f"{child.name} exited with status {exited.result()} before it was ready"
                )
            if loop.time() >= deadline:
                raise ChildFailed(child, f"{child.name} was not ready after {timeout_s:.0f} s")
            # Wakes at once on exit or stop; otherwise after one poll interval.
            await asyncio.wait(
                {exited, stopped}, timeout=POLL_INTERVAL_S, return_when=asyncio.FIRST_COMPLETED
            )
    finally:
        for task in (exited, stopped):
            task.cancel()


async def serve_until_stopped(child: Child, stop: asyncio.Event) -> None:
    """Wait for `stop`; a child that exits first is a failure."""
    exited = asyncio.ensure_future(child.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not stop.is_set() and exited.done():
            raise ChildFailed(
                child, f"{child.name} exited unexpectedly with status {exited.result()}"
            )
    finally:
        for task in (exited, stopped):
            task.cancel()


async def run_to_completion(child: Child, stop: asyncio.Event) -> int | None:
    """Run a one-shot child; None (after stopping it) if `stop` is set first."""
    await child.start()
    exited = asyncio.ensure_future(child.wait())
    stopped = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({exited, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if exited.done():
            return exited.result()
        await child.stop()
        return None
    finally:
        for task in (exited, stopped):
            task.cancel()


class ChildFailed(LocalError):
    """A server process failed; carries its last log lines for the user."""

    def __init__(self, child: Child, message: str) -> None:
        super().__init__(message)
        self.log_tail = child.tail()
