"""`pytest --nettrap`: run this pytest session under `nettrap run`, pytest-socket style.

With `--nettrap` (or `--nettrap=record`), `--nettrap=deny` or `--nettrap-report PATH` on the
command line, in `addopts` or in PYTEST_ADDOPTS, the session is started again, once, as

    nettrap run --runner pytest [--default deny] [--report PATH] -- <python> <pytest> <args>

replacing this process (`os.execv`), so pytest's exit status is nettrap's: the report, the
to-do list and enforcement (exit 86) with no change to the CI command. It happens before any
conftest is imported, so nothing of the suite runs outside nettrap. The policy is nettrap's own
(the closest nettrap.toml or pyproject.toml [tool.nettrap]); `--nettrap=deny` denies every call
no rule of it allows or records.

No recursion: under `nettrap run` (NETTRAP_RUN_DIR is set, in every process of the run, xdist
workers included) and in xdist workers the options do nothing, so `nettrap run -- pytest
--nettrap` is one run too. Without the options this module does nothing: it registers options
and one early hook, and imports nothing beyond what pytest has already imported.

Registered as the entry point `nettrap-option` (`-p no:nettrap-option` turns it off); the
plugin `nettrap`, registered by nettrap's runner adapter inside a run, is another one.
"""

import argparse
import os
import sys

import pytest

MODES = ("record", "deny")


def pytest_addoption(parser):
    group = parser.getgroup("nettrap", "nettrap (network calls per test)")
    group.addoption(
        "--nettrap",
        dest="nettrap",
        action="store_const",
        const="record",
        default=None,
        help="run this session under `nettrap run`: every network call recorded and reported "
        "per test (nettrap-report.json, nettrap-todo.md); --nettrap=deny denies every call the "
        "policy (nettrap.toml or pyproject.toml [tool.nettrap]) does not allow or record",
    )
    # `--nettrap=MODE` as literal option strings: an option with an optional value would take
    # the next word (`pytest --nettrap tests/`) as its value.
    for mode in MODES:
        group.addoption(
            "--nettrap=" + mode,
            dest="nettrap",
            action="store_const",
            const=mode,
            help=argparse.SUPPRESS,
        )
    group.addoption(
        "--nettrap-report",
        dest="nettrap_report",
        metavar="PATH",
        default=None,
        help="with --nettrap: where nettrap writes its JSON report (implies --nettrap) "
        "[default: nettrap-report.json]",
    )


def _under_nettrap():
    return bool(os.environ.get("NETTRAP_RUN_DIR")) or bool(os.environ.get("NETTRAP_PYTEST_REEXEC"))


def _pytest_command():
    """How this pytest was started, to start it again the same way: `python -m pytest` or
    `python /path/to/pytest` (a console script), with this interpreter and its own options
    (`-W error`, `-X dev`, `-O`, a shebang's `-I`: they change what the tests do)."""
    orig = list(getattr(sys, "orig_argv", None) or [])
    args = sys.argv[1:]
    # Python 3.10+: the interpreter's command line; its tail is pytest's arguments.
    if len(orig) > len(args) + 1 and orig[len(orig) - len(args):] == args:
        return [sys.executable] + orig[1 : len(orig) - len(args)]
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    if spec is not None and spec.name in ("pytest", "pytest.__main__", "py.test"):
        return [sys.executable, "-m", "pytest"]
    argv0 = sys.argv[0] if sys.argv else ""
    if argv0 and os.path.isfile(argv0):
        return [sys.executable, os.path.abspath(argv0)]
    return [sys.executable, "-m", "pytest"]


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_load_initial_conftests(early_config, parser, args):
    ns = early_config.known_args_namespace
    mode = getattr(ns, "nettrap", None)
    report = getattr(ns, "nettrap_report", None)
    if (mode or report) and not _under_nettrap() and not _is_worker(early_config):
        _reexec(early_config, mode or "record", report)
    yield


def _is_worker(config):
    return hasattr(config, "workerinput") or bool(os.environ.get("PYTEST_XDIST_WORKER"))


def _reexec(config, mode, report):
    from nettrap import binary

    exe = binary()
    if exe is None:
        raise pytest.UsageError(
            "--nettrap: the `nettrap` command is not installed (pip install nettrap)"
        )
    params = config.invocation_params
    if list(params.args) != sys.argv[1:]:
        raise pytest.UsageError(
            "--nettrap: only a pytest started from the command line can be run again under "
            "nettrap (this one was started by pytest.main()); use `nettrap run -- pytest ...`"
        )
    argv = [exe, "run", "--runner", "pytest"]
    if mode == "deny":
        argv += ["--default", "deny"]
    if report:
        argv += ["--report", report]
    argv += ["--"] + _pytest_command() + list(params.args)
    capman = config.pluginmanager.getplugin("capturemanager")
    if capman is not None:
        capman.stop_global_capturing()
    sys.stdout.flush()
    sys.stderr.flush()
    os.chdir(str(params.dir))
    os.environ["NETTRAP_PYTEST_REEXEC"] = "1"
    os.execv(exe, argv)
