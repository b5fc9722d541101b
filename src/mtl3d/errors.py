"""User-facing errors: the CLI prints these as one line and exits non-zero (no traceback)."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input (bad path, unknown name, bad config) that they can fix."""


def unknown_name(kind: str, name: str, valid: list[str] | tuple[str, ...]) -> UserError:
    return UserError(f"unknown {kind} {name!r}; valid: {', '.join(sorted(valid))}")


class Terminated(BaseException):
    """SIGTERM or SIGINT arrived: raised in the main thread so that cleanup runs on the way out (worker
    processes ended, temporary files removed). A ``BaseException`` like ``KeyboardInterrupt``."""

    def __init__(self, signum: int) -> None:
        import signal

        super().__init__(signal.Signals(signum).name)
        self.signum = signum
