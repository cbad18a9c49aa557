"""The `kumo` command line.

Each sub-command lives in its own module under `kumovideo.cli` and exposes
`register(subparsers)`, which adds its parser and sets `func` to a callable taking the
parsed namespace. Errors the user can fix (`KumoInputError`, missing files, bad
arguments) print one line and exit with status 2; no traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
import time

STARTED = time.perf_counter()  # when `kumo` started (before torch and diffusers are imported)

# Sub-command modules, in the order `kumo --help` lists them.
COMMAND_MODULES = [
    *("generate", "interpolate", "extend", "v2a", "info"),
    *("shapes", "train", "eval", "bench", "data", "serve"),
]


class _ArgumentParser(argparse.ArgumentParser):
    def error(self, message):  # argparse's default also exits 2; keep it to one line.
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    from kumovideo import __version__

    parser = _ArgumentParser(prog="kumo", description="KumoVideo text-to-video generation")
    parser.add_argument("--version", action="version", version=f"kumo (kumovideo) {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_ArgumentParser)
    sub.required = True
    for name in COMMAND_MODULES:
        try:
            module = importlib.import_module(f"kumovideo.cli.{name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"kumovideo.cli.{name}":
                continue  # command not part of this build
            raise
        module.register(sub)
    return parser


class _LevelFormatter(logging.Formatter):
    """`kumo: warning: ...`, or `kumo: error: ...` for an error (with its traceback, if any)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return f"kumo: {'error' if record.levelno >= logging.ERROR else 'warning'}: {record.getMessage()}"


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is at the time (so in-process callers that swap it,
    such as tests, see the warnings), each distinct warning once per command (an evaluation
    calls the pipeline batch after batch, and its size warning would otherwise repeat per
    batch), every error (a server's failures each get their line and traceback), on a line of
    its own above any progress bar (`tqdm.write`), not after the bar's text."""

    def __init__(self) -> None:
        super().__init__()
        self.said: set[str] = set()

    def emit(self, record: logging.LogRecord) -> None:
        line = record.getMessage()
        if record.levelno < logging.ERROR:
            if line in self.said:
                return
            self.said.add(line)
        try:
            from tqdm import tqdm

            tqdm.write(self.format(record), file=sys.stderr)
        except Exception:  # as logging.StreamHandler.emit: a broken stream never raises into the caller
            self.handleError(record)

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value):
        pass


def _configure_logging() -> None:
    """Warnings from kumovideo print as one line each; library chatter stays quiet."""
    log = logging.getLogger("kumovideo")
    handler = next((h for h in log.handlers if isinstance(h, _StderrHandler)), None)
    if handler is None:
        handler = _StderrHandler()
        handler.setFormatter(_LevelFormatter())
        log.addHandler(handler)
    handler.said = set()  # a new command (tests run many in one process) says each line again
    log.setLevel(logging.WARNING)
    log.propagate = False
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    try:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.set_verbosity_error()
    except ImportError:
        pass
    try:  # transformers' "Loading weights" bar would add lines before a one-line error
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()
        transformers_logging.disable_progress_bar()
    except ImportError:
        pass


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    from kumovideo.utils.errors import KumoInputError

    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging()
    try:
        return int(args.func(args) or 0)
    except KumoInputError as exc:
        print(f"kumo: error: {exc}", file=sys.stderr)
        return 2
    except FileNotFoundError as exc:
        print(f"kumo: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("kumo: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
