"""A long command's progress on stderr: one updating line on a terminal, one line per stage
otherwise (a log file, a pipe, CI).

The library reports progress as short messages through a callback (``api.partition(progress=...)``:
the import, then each level solve). :func:`stage_progress` turns them into what the stream can
show: on a terminal, click's progress bar redrawn in place (length unknown: a marker that moves,
the number of messages so far, the latest message cut to the terminal's width), settled on a final
"done after S s" when the block ends; elsewhere, each message on its own ``... message`` line.
"""

from __future__ import annotations

import contextlib
import itertools
import shutil
import sys
import time
from collections.abc import Callable, Iterator
from typing import TextIO

import click

Progress = Callable[[str], None]

#: Characters of the moving marker's track (the bar of click's progress bar).
BAR_WIDTH = 12
#: The terminal line's layout (click's fields) and the room a position of up to 6 digits takes.
_TEMPLATE, _SEP = "%(label)s  [%(bar)s]  %(info)s", "  "
_POSITION_DIGITS = 6


@contextlib.contextmanager
def stage_progress(label: str, *, first: str = "starting", enabled: bool = True,
                   stream: TextIO | None = None) -> Iterator[Progress | None]:
    """The progress callback to hand the library, for the duration of the block.

    Parameters
    ----------
    label
        What runs (``"partition lenet"``), at the start of the terminal line.
    first
        The terminal line's message until the first progress message (what runs first).
    enabled
        False (``-q``, ``--json``): yields None, nothing is written.
    stream
        Where progress goes (default: stderr). On a terminal (``stream.isatty()``) one line is
        redrawn per message and left as ``<label> [bar] <count>  done after S s`` when the block
        ends (``stopped after S s`` when it raises; an error then prints on the next line); otherwise each message
        is written as its own line ``... <message>``.

    Yields
    ------
    callable or None
        ``progress(message)``; None when not ``enabled``.
    """
    if not enabled:
        yield None
        return
    stream = stream if stream is not None else sys.stderr
    if not stream.isatty():
        yield lambda msg: click.echo(f"... {msg}", file=stream)
        return
    started = time.perf_counter()
    bar = click.progressbar(itertools.count(), label=label, file=stream, show_pos=True, show_eta=False,
                            width=BAR_WIDTH, bar_template=_TEMPLATE, info_sep=_SEP,
                            item_show_func=_fit_to_terminal(label))
    bar.current_item = first  # drawn when the block starts
    ended = "done"
    with bar:
        try:
            yield lambda msg: bar.update(1, msg)
        except BaseException:
            ended = "stopped"
            raise
        finally:
            bar.finish()
            bar.current_item = f"{ended} after {time.perf_counter() - started:.1f} s"
            bar.render_progress()


def _fit_to_terminal(label: str) -> Callable[[str | None], str | None]:
    """click's ``item_show_func``: the message cut so the whole line fits the terminal's width
    (a longer line would wrap, and the next redraw would start on the wrapped part)."""

    def show(msg: str | None) -> str | None:
        if msg is None:
            return None
        clutter = len(_TEMPLATE % {"label": label, "bar": "-" * BAR_WIDTH, "info": ""}) + _POSITION_DIGITS + len(_SEP)
        room = shutil.get_terminal_size().columns - clutter - 1  # the last column may wrap on its own
        one_line = " ".join(msg.split())
        return one_line if len(one_line) <= room else one_line[:max(room - 3, 0)] + "..."

    return show
