"""nettrap's pytest plugin, registered by nettrap's Python adapter with every pytest session of a
process the adapter is loaded in (`nettrap run`; `-p no:nettrap` turns it off).

It reports each test pytest runs in this process (every xdist worker included) to nettrap's
timeline through `_nettrap_adapter`: start, phases, outcome, the worker's role, and the shared
(non-function-scoped) fixtures being set up, so a call made while a session fixture connects is
attributed to the test that triggered it and names the fixture. Nested sessions (pytester's
in-process runs) are reported as nested in the outer test.
"""

import os

import pytest

try:
    import _nettrap_adapter as _adapter
except Exception:  # the adapter is not loaded (not under nettrap): do nothing
    _adapter = None

_running = {}  # nodeid -> token
_outcome = {}  # nodeid -> outcome


def pytest_configure(config):
    if _adapter is None:
        return
    _adapter.pytest_active()
    worker = getattr(config, "workerinput", None)
    if worker and worker.get("workerid"):
        _adapter.role("pytest", worker["workerid"])


def pytest_unconfigure(config):
    # An in-process session (pytest.main() from a unittest test) has ended: unittest cases
    # are unittest's again. An inner session of an outer pytest session leaves it on.
    if _adapter is not None and not _adapter._stack:
        _adapter.pytest_active(False)


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item, nextitem):
    token = None
    if _adapter is not None:
        try:
            _outcome.pop(item.nodeid, None)
            token = _adapter.begin(item.nodeid, "pytest", item.location[0], key=item)
        except Exception:
            token = None
    try:
        yield
    finally:
        if token is not None:
            _adapter.end(token, _outcome.pop(item.nodeid, None))


def _phase(item, name):
    if _adapter is None:
        return
    try:
        token = _adapter._stack[-1] if _adapter._stack else None
        if token is not None and token.key is item:
            _adapter.phase(token, name)
    except Exception:
        pass


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_setup(item):
    _phase(item, "setup")
    yield


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_call(item):
    _phase(item, "call")
    yield


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_teardown(item, nextitem):
    _phase(item, "teardown")
    yield


_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 2, "failed": 3, "error": 4}


def pytest_runtest_logreport(report):
    # The final report of each phase (xfail already applied), in the process that ran it; in
    # an xdist controller it is a worker's, whose test is not running here: ignored.
    if _adapter is None or report.nodeid not in _running_ids():
        return
    try:
        xfail = hasattr(report, "wasxfail")
        if report.failed:
            outcome = "failed" if report.when == "call" else "error"
        elif report.skipped:
            outcome = "xfailed" if xfail else "skipped"
        elif report.when == "call":
            outcome = "xpassed" if xfail else "passed"
        else:
            return
        old = _outcome.get(report.nodeid)
        if old is None or _RANK[outcome] >= _RANK[old]:
            _outcome[report.nodeid] = outcome
    except Exception:
        pass


def _running_ids():
    return [t.test for t in _adapter._stack]


_tearing_down = {}  # id(fixturedef) -> its label, while its finalizers run


@pytest.hookimpl(hookwrapper=True)
def pytest_fixture_setup(fixturedef, request):
    shared = _adapter is not None and getattr(fixturedef, "scope", "function") != "function"
    if shared:
        try:
            func = fixturedef.func
            path = func.__code__.co_filename
            rel = os.path.relpath(path)
            location = path if rel.startswith("..") else rel
        except Exception:
            location = None
        _adapter.fixture("start", fixturedef.argname, fixturedef.scope, location)
    try:
        outcome = yield
    finally:
        if shared:
            _adapter.fixture("end", fixturedef.argname, fixturedef.scope, location)
    if shared:
        # Its teardown (the code after `yield`, its finalizers) runs in the teardown of the test
        # after which pytest drops it: calls made there name the fixture too. pytest runs a
        # fixture's finalizers last-registered first, and this one is registered after the
        # fixture's own (pytest's set-up registers a generator's teardown): it runs first.
        # `pytest_fixture_post_finalizer` runs after the last.
        label = (fixturedef.argname, fixturedef.scope, location)

        def teardown_starts():
            _tearing_down[id(fixturedef)] = label
            _adapter.fixture("start", *label)

        try:
            if outcome.excinfo is None:
                fixturedef.addfinalizer(teardown_starts)
        except Exception:
            pass


def pytest_fixture_post_finalizer(fixturedef, request):
    if _adapter is None:
        return
    label = _tearing_down.pop(id(fixturedef), None)
    if label is not None:
        _adapter.fixture("end", *label)
