"""What every command shares: the click group, the library's parameter names as options
(``FLAGS``), the error and warning handling, and the options several commands take.

Library code raises :class:`hypar.errors.HyparError`; :func:`hypar_errors_and_warnings` turns it
into a one-line ``Error: ...`` on stderr with exit code 1 (usage errors exit 2, as click does),
naming the library's parameters by this CLI's options (``FLAGS``).
"""

from __future__ import annotations

import contextlib
import os
import warnings

import click

from hypar import __version__
from hypar.config import SettingError, parse_dims, parse_input_shapes
from hypar.errors import HyparError, HyparWarning
from hypar.vocab import Convention, Objective, Search, Space

# The library's parameter names (hypar.errors.HyparError.naming) as this CLI's options.
FLAGS = {"array_path": "--array", "arrays": "--array", "pes": "--pes", "n_pes": "--pes", "levels": "--levels",
         "fanouts": "--levels", "batch": "--batch", "plan": "--plan", "baseline_name": "--baseline",
         "solver": "--solver", "memory_cap_gb": "--memory-gb", "executor": "--executor", "scheduler": "--scheduler",
         "out_dir": "-o", "models": "MODELS", "dims": "--dim", "input_shapes": "--input-shape",
         "dtype": "--dtype"}


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="hypar")
def cli() -> None:
    """hypar: hybrid-parallelism partitioning of ONNX models over hierarchical PE arrays.

    \b
    Example:
      hypar partition models/alexnet.onnx --pes 16
    """


def _click_error(exc: HyparError) -> click.ClickException:
    """The click error that prints ``exc`` in this CLI's terms: a SettingError is a usage error of
    its option (exit 2); any other HyparError a one-line ``Error: ...`` (exit 1)."""
    if isinstance(exc, SettingError):
        return click.BadParameter(exc.message_in(FLAGS), param_hint=FLAGS.get(exc.parameter, exc.parameter))
    return click.ClickException(exc.message_in(FLAGS))


@contextlib.contextmanager
def _hypar_errors_and_warnings():
    """Turn HyparError into a one-line ``Error: ...`` (exit 1; usage errors exit 2) and HyparWarning
    into a one-line ``Warning: ...`` on stderr, also under click's CliRunner (which bypasses
    :func:`main`)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", HyparWarning)
        try:
            yield
        except HyparError as exc:
            raise _click_error(exc) from None
        finally:
            others = []
            for w in caught:
                if issubclass(w.category, HyparWarning):
                    click.echo(f"Warning: {' '.join(str(w.message).split())}", err=True)
                else:
                    others.append(w)
    for w in others:
        warnings.showwarning(w.message, w.category, w.filename, w.lineno)


def _dim_options(f):
    """--dim / --input-shape of every command that reads a model (next to --batch); see :func:`_bound`."""
    f = click.option("--input-shape", "input_shapes", multiple=True, metavar="INPUT=D0,D1,...",
                     help="Bind every dim of one model input, e.g. --input-shape x=1,3,640,640 (repeatable; "
                          "fixed dims must match, the batch changes with --batch).")(f)
    return click.option("--dim", "dims", multiple=True, metavar="NAME=VALUE", help="Bind a symbolic input "
                        "dim by its name wherever it appears, e.g. --dim sequence=128 (repeatable).")(f)


def _bound(dims: tuple[str, ...], input_shapes: tuple[str, ...]) -> dict:
    """The library's ``dims`` and ``input_shapes`` keywords from the options' texts (None when not
    given); a SettingError (a usage error of the option) when one cannot be read."""
    return {"dims": parse_dims(dims) or None, "input_shapes": parse_input_shapes(input_shapes) or None}


def _array_options(f):
    """--array / --pes / --levels, shared by the commands that need a PE array."""
    f = click.option("--levels", default=None, metavar="F1,F2,...",
                     help="Fanout of every level, top first (e.g. 2,2,4), default PE figures.")(f)
    f = click.option("--pes", type=click.IntRange(min=2), default=None, metavar="N",
                     help="N identical PEs in 2-way levels (N not a power of two: k-way levels).")(f)
    f = click.option("--array", "array_path", type=click.Path(), default=None, metavar="CFG.yaml",
                     help="PE array description (see solver_configs/README.md).")(f)
    return f


_CONVENTION_HELP = ("How traffic on arrays with several levels is priced: hierarchical = what an execution "
                    "with hierarchical collectives sends; reference = the papers' code (AccPar).")


def _convention_option(read_back: bool):
    """--convention: for a new plan default hierarchical; for a plan read back (``read_back``:
    evaluate, verify) default the plan's own, else hierarchical."""
    if read_back:
        return click.option("--convention", type=click.Choice(Convention.values()), default=None,
                            help=_CONVENTION_HELP + " Default: the plan's, else hierarchical.")
    return click.option("--convention", type=click.Choice(Convention.values()), default=Convention.HIERARCHICAL.value,
                        show_default=True, help=_CONVENTION_HELP)


def _search_options(f):
    """--objective / --space / --search / --convention of hypar's own plan, shared by partition and
    sweep."""
    f = _convention_option(read_back=False)(f)
    f = click.option("--search", "search_how", type=click.Choice(Search.values()), default=Search.AUTO.value,
                     show_default=True, help="auto: refine, then the joint problem where it is computable "
                     "(the ILP where small enough, chains also by DP; the plan says what it reached); greedy: "
                     "top level first (the papers); refine: re-solve one level at a time until nothing improves; "
                     "joint: refine, then all levels in one ILP where small enough.")(f)
    f = click.option("--space", type=click.Choice(Space.values()), default="full", show_default=True,
                     help="hypar: types I/II; accpar: I/II/III; full: also the layouts of non-weighted nodes.")(f)
    f = click.option("--objective", type=click.Choice(Objective.values()), default="time",
                     show_default=True, help="time: step seconds (AccPar); comm: bytes moved (HyPar); "
                     "energy: joules.")(f)
    return f


def _check_writable(path: str | None, flag: str) -> None:
    """Before any long work: a one-line error naming ``flag`` when ``path`` could not be written
    (its folder is missing or not writable, or ``path`` is a folder). Writes nothing."""
    if not path:
        return
    folder = os.path.dirname(os.path.abspath(path))
    why = None
    if os.path.isdir(path):
        why = "it is a folder"
    elif not os.path.isdir(folder):
        why = f"folder {os.path.dirname(path) or folder} does not exist"
    elif not os.access(folder, os.W_OK):
        why = f"folder {os.path.dirname(path) or folder} is not writable"
    if why:
        raise click.ClickException(f"cannot write {path}: {why}; choose another {flag} path")


def _write_file(path: str, text: str, flag: str) -> None:
    """Write ``text`` to ``path``; a one-line error naming ``flag`` when it cannot be written."""
    try:
        with open(path, "w") as fh:
            fh.write(text)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}; choose another {flag} path") from None


def _plot_plan(plan: dict, path: str) -> None:
    """Draw ``plan`` into ``path``; a one-line error when it cannot be written."""
    from hypar.present.plots import plot_plan

    try:
        plot_plan(plan, path)
    except OSError as exc:
        raise click.ClickException(f"cannot write {path}: {exc.strerror}; choose another --plot path") from None
