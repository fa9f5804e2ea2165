"""nettrap's Python runner adapter: tells nettrap which test is running, and where calls come from.

Loaded at interpreter start by nettrap's `sitecustomize` inside `nettrap run` (never otherwise).
It appends events to the run's timeline (`$NETTRAP_RUN_DIR/timeline.jsonl`, format in nettrap's
`src/attribution/SPEC.md`), which nettrap joins to the calls its engines saw:

* unittest and Django's runner (serial, and `--parallel` with fork or spawn): the
  test's start, phases (setup, call, teardown) and outcome, hooked on `unittest.TestCase` (and
  Django's `SimpleTestCase`) when the program imports them. Ids are `test.id()`, as Django
  prints them (`app.tests.Class.test_method`).
* pytest (and xdist workers): through the plugin `_nettrap_pytest`, registered with each pytest
  session of this process when pytest's config module loads; it calls `begin`, `phase` and
  `end` here.
* Call sites: an audit hook (`socket.connect`, `socket.sendto`, `socket.getaddrinfo`) writes,
  just before each call, the first frame in the project's own code and the client library; for
  database drivers whose C library connects on its own (psycopg2, psycopg 3, MySQLdb), their
  connect functions are wrapped when the program imports them.

While a test runs, NETTRAP_TEST holds its id in the real environment, so child processes and
the LD_PRELOAD shim see it too. A process started inside a test (a test that runs
a test runner) reports its own tests as nested in that test. Nothing here may raise into the
user's program, and nothing costs anything until a test or a socket call happens.
"""

import os
import sys

# unittest leaves frames of modules that set this out of failure tracebacks: the user sees their
# own failing line, not the adapter's wrappers.
__unittest = True

_RUN_DIR = os.environ.get("NETTRAP_RUN_DIR")
_TIMELINE = os.path.join(_RUN_DIR, "timeline.jsonl") if _RUN_DIR else None
_VAR = "NETTRAP_TEST"
_PHASES = ("setup", "call", "teardown")


def _strip_phase(value):
    for p in _PHASES:
        suffix = " (%s)" % p
        if value.endswith(suffix):
            return value[: -len(suffix)]
    return value


# A test of a parent process was running when this process started: its tests are nested.
_OUTER = _strip_phase(os.environ[_VAR]) if os.environ.get(_VAR) else None

_stack = []  # running tests in this process, outermost first: [id, ...]
_outcomes = {}  # test id -> outcome, filled by the result hooks
_roles = set()  # pids that said what they are
_state = {"pytest": False, "failed": False}


_encoder = []


def _encode(event):
    if not _encoder:
        import json

        _encoder.append(json.JSONEncoder(separators=(",", ":"), default=str, ensure_ascii=False))
    return _encoder[0].encode(event)


def _now():
    import time

    return time.monotonic_ns()


_fd = {"pid": None, "fd": -1, "id": None}


def _timeline_fd():
    """The timeline, opened once per process. Before each use its identity is checked, so a
    program that closed the descriptor (and maybe reused its number) is never written to."""
    pid = os.getpid()
    if _fd["pid"] == pid and _fd["fd"] >= 0:
        try:
            st = os.fstat(_fd["fd"])
            if (st.st_dev, st.st_ino) == _fd["id"]:
                return _fd["fd"]
        except OSError:
            pass
    fd = os.open(_TIMELINE, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    st = os.fstat(fd)
    # The descriptor of a parent (fork) stays open in the child, as any inherited one does.
    _fd.update(pid=pid, fd=fd, id=(st.st_dev, st.st_ino))
    return fd


_pending = []  # encoded phase events not written yet (see emit)


def _drop_pending():
    del _pending[:]


def _line(event):
    event.setdefault("t", _now())
    event["pid"] = os.getpid()
    # Ids are never cut (a cut id would merge tests): one write to an O_APPEND file is not
    # interleaved with another process's, whatever its length.
    return (_encode(event) + "\n").encode("utf-8", "surrogateescape")


def emit(event, defer=False):
    """Appends one event (a dict) to the timeline. Events are joined to calls by their time, not
    by their order, so a phase change (`defer`) waits for the next event of this process and goes
    out in the same write: a test costs two writes, not five. Losing a deferred phase (the process
    killed inside a test) loses only which phase a call was in."""
    if not _TIMELINE:
        return
    try:
        line = _line(event)
        if defer and len(_pending) < 64:
            _pending.append(line)
            return
        data = b"".join(_pending) + line
        del _pending[:]
        os.write(_timeline_fd(), data)
    except Exception as e:
        _fail("cannot write the timeline: %s" % e)


def flush():
    """Writes deferred events now (before a fork, at exit)."""
    if _pending:
        try:
            data = b"".join(_pending)
            del _pending[:]
            os.write(_timeline_fd(), data)
        except Exception as e:
            _fail("cannot write the timeline: %s" % e)


def _fail(why, runner="python"):
    """Tells nettrap, once per process, that the adapter cannot do its job here. nettrap says it
    once for the whole run, in its summary after the command: nothing is written into the
    runner's own output (where it could land mid-line, between a runner's progress dots)."""
    if _state["failed"]:
        return
    _state["failed"] = True
    del _pending[:]
    try:
        tell_failure(runner, why)
    except Exception:
        pass


def tell_failure(runner, why):
    """An `adapter` failure event, appended to the timeline or, when that cannot be written, to
    the failures file beside it (nettrap reads both). If neither can be, nettrap will never
    know: then the first process of the run to get here says it on stderr, on a line of its
    own."""
    line = _encode({"ev": "adapter", "t": _now(), "pid": os.getpid(), "runner": runner,
                    "status": "failed", "why": why})
    data = (line + "\n").encode("utf-8", "surrogateescape")
    if _RUN_DIR:
        for name, create in (("timeline.jsonl", 0), ("adapter-failures.jsonl", os.O_CREAT)):
            try:
                fd = os.open(os.path.join(_RUN_DIR, name),
                             os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC | create, 0o644)
                try:
                    if os.write(fd, data) == len(data):
                        return
                finally:
                    os.close(fd)
            except Exception:
                pass
    # Once per run: this process and those it starts (the run directory is out of reach, so
    # the environment carries it; workers forked earlier may say it too).
    if os.environ.get("NETTRAP_ADAPTER_TOLD"):
        return
    try:
        os.environ["NETTRAP_ADAPTER_TOLD"] = "1"
    except Exception:
        pass
    # A newline first: the runner may be in the middle of a line (unittest's dots).
    sys.stderr.write("\nnettrap: %s adapter: %s; falling back to NETTRAP_TEST\n" % (runner, why))
    sys.stderr.flush()


def role(runner, name):
    """Says once what this process is to its runner (xdist worker gw1, django worker 2)."""
    pid = os.getpid()
    if pid in _roles:
        return
    _roles.add(pid)
    emit({"ev": "process", "runner": runner, "role": name})


def _set_env(test_id):
    # The bare id, set once per test: a test or fixture that compares os.environ before and
    # after (a leak check) sees the same value in its set-up and its teardown. Children inherit
    # it; this process's own calls take their phase from the timeline.
    try:
        os.environ[_VAR] = test_id
    except Exception:
        pass


class Token(object):
    __slots__ = ("test", "nested", "key", "phase", "owned", "held")

    def __init__(self, test, nested, key):
        self.test, self.nested, self.key, self.phase = test, nested, key, None
        # Whether a test's entry point (TestCase.run, ...) will end it; a test started early by
        # its class or module fixture is owned by the entry point that runs it next.
        self.owned = True
        # The events of a test started early, held (with their times) until it really runs:
        # if its class or module cannot be set up, unittest does not run it, nor count it.
        self.held = None


def begin(test_id, runner, file=None, key=None, hold=False):
    """A test starts in this process. `key` identifies the running test object, so re-entrant
    hooks (Django's __call__ around unittest's run) start it once. Returns a token for `end`,
    or None when this test is already running. `hold`: its events wait for `release` (or are
    dropped by `cancel`)."""
    if _stack and key is not None and _stack[-1].key is key:
        return None
    outer = _stack[0].test if _stack else _OUTER
    event = {"ev": "start", "test": test_id, "runner": runner}
    if file:
        event["file"] = file
    if outer is not None:
        event["outer"] = outer
    token = Token(test_id, outer is not None, key)
    if hold and _TIMELINE:
        token.held = [_line(event)]
    else:
        emit(event)
    _stack.append(token)
    if not token.nested and token.held is None:
        _set_env(test_id)
    return token


def phase(token, name):
    if token is None or token.phase == name:
        return  # tearDown then doCleanups: one teardown
    token.phase = name
    event = {"ev": "phase", "test": token.test, "phase": name}
    if token.nested:
        event["outer"] = _stack[0].test if _stack and _stack[0] is not token else _OUTER
    if token.held is not None:
        token.held.append(_line(event))
    else:
        emit(event, defer=True)


def release(token):
    """A held test runs after all: its events go out, with the times they were taken at."""
    held, token.held = token.held, None
    if held:
        _pending.extend(held)
        flush()
        if not token.nested:
            _set_env(token.test)


def cancel(token):
    """A held test will not run: nothing of it is told (calls made meanwhile are nobody's,
    naming the fixture that made them; NETTRAP_TEST was not set for it)."""
    token.held = None
    if token in _stack:
        _stack.remove(token)


def end(token, outcome=None, duration_s=None):
    if token is None:
        return
    release(token)
    event = {"ev": "end", "test": token.test}
    if outcome:
        event["outcome"] = outcome
    if duration_s is not None:
        event["duration_s"] = duration_s
    if token.nested:
        event["outer"] = _stack[0].test if _stack and _stack[0] is not token else _OUTER
    emit(event)
    if token in _stack:
        _stack.remove(token)
    if not token.nested:
        try:
            os.environ.pop(_VAR, None)
        except Exception:
            pass


def fixture(state, name, scope, location):
    emit({"ev": "fixture", "state": state, "name": name, "scope": scope, "location": location})


def pytest_active(active=True):
    """The pytest plugin runs in this process (until its session ends): unittest cases are
    pytest items meanwhile."""
    _state["pytest"] = active


# --- unittest and Django -------------------------------------------------------------------

_OUTCOME_METHODS = {
    "addSuccess": "passed",
    "addFailure": "failed",
    "addError": "error",
    "addSkip": "skipped",
    "addExpectedFailure": "xfailed",
    "addUnexpectedSuccess": "xpassed",
}
_RANK = {"passed": 0, "skipped": 1, "xfailed": 1, "xpassed": 2, "failed": 3, "error": 4}
_patched_results = set()


def _note_outcome(test, outcome):
    try:
        test_id = test.id()
    except Exception:
        return
    old = _outcomes.get(test_id)
    if old is None or _RANK.get(outcome, 0) >= _RANK.get(old, 0):
        _outcomes[test_id] = outcome


def _wrap_outcome(method, outcome):
    def wrapper(self, test, *args, **kwargs):
        _note_outcome(test, outcome)
        return method(self, test, *args, **kwargs)

    wrapper.__wrapped__ = method
    wrapper._nettrap = True
    return wrapper


def _wrap_subtest(method):
    def wrapper(self, test, subtest, err, *args, **kwargs):
        if err is not None:
            failed = False
            try:
                failed = issubclass(err[0], test.failureException)
            except Exception:
                pass
            _note_outcome(test, "failed" if failed else "error")
        return method(self, test, subtest, err, *args, **kwargs)

    wrapper.__wrapped__ = method
    wrapper._nettrap = True
    return wrapper


def _patch_result_class(cls):
    """Hooks a result class's outcome methods, once (the runner's own class, whatever it is:
    unittest's, Django's RemoteTestResult in parallel workers, a custom one)."""
    if cls in _patched_results:
        return
    _patched_results.add(cls)
    for name, outcome in _OUTCOME_METHODS.items():
        method = getattr(cls, name, None)
        if callable(method) and not getattr(method, "_nettrap", False):
            try:
                setattr(cls, name, _wrap_outcome(method, outcome))
            except Exception:
                pass
    method = getattr(cls, "addSubTest", None)
    if callable(method) and not getattr(method, "_nettrap", False):
        try:
            setattr(cls, "addSubTest", _wrap_subtest(method))
        except Exception:
            pass


_files = {}


def _test_file(test):
    module = type(test).__module__
    if module not in _files:
        try:
            path = sys.modules[module].__file__
            rel = os.path.relpath(path)
            _files[module] = path if rel.startswith("..") else rel
        except Exception:
            _files[module] = None
    return _files[module]


def _overrides(cls, name):
    """Whether a test class has its own `name` (setUpClass, tearDownClass), not unittest's."""
    import unittest

    own = getattr(getattr(cls, name, None), "__func__", None)
    base = getattr(getattr(unittest.TestCase, name, None), "__func__", None)
    return own is not None and own is not base


def _django_role():
    runner = sys.modules.get("django.test.runner")
    worker = getattr(runner, "_worker_id", 0) if runner else 0
    if worker:
        role("django", "django worker %d" % worker)


def _runner_of(test):
    testcases = sys.modules.get("django.test.testcases")
    base = getattr(testcases, "SimpleTestCase", None) if testcases else None
    if base is not None and isinstance(test, base):
        _django_role()
        return "django"
    return "unittest"


def _wrap_entry(original):
    """TestCase.run (and Django's SimpleTestCase.__call__, which sets up the test's database and
    settings before run): the test starts and ends here."""

    def wrapper(self, *args, **kwargs):
        if _state["pytest"]:
            return original(self, *args, **kwargs)
        token = None
        try:
            if args and args[0] is not None:
                _patch_result_class(type(args[0]))
            elif kwargs.get("result") is not None:
                _patch_result_class(type(kwargs["result"]))
            test_id = self.id()
            early = _running(self)
            if early is not None and not early.owned:
                early.owned = True  # started by its class or module fixture's set-up
                token = early
                release(token)
            else:
                _outcomes.pop(test_id, None)
                token = begin(test_id, _runner_of(self), _test_file(self), key=self)
        except Exception:
            token = None
        try:
            return original(self, *args, **kwargs)
        finally:
            if token is not None:
                try:
                    end(token, _outcomes.pop(token.test, None))
                except Exception:
                    pass

    wrapper.__wrapped__ = original
    wrapper._nettrap = True
    return wrapper


def _wrap_phase(original, name):
    """A hook that runs in one phase of the running test: a method (`self` is the test) or the
    function of a classmethod (`self` is its class, Django 5.1+'s `_pre_setup`)."""

    def wrapper(self, *args, **kwargs):
        token = _stack[-1] if _stack and not _state["pytest"] else None
        if token is not None and not (
            token.key is self or (isinstance(self, type) and isinstance(token.key, self))
        ):
            token = None
        if token is not None:
            try:
                phase(token, name)
            except Exception:
                pass
        return original(self, *args, **kwargs)

    wrapper.__wrapped__ = original
    wrapper._nettrap = True
    return wrapper


def _running(test):
    return _stack[-1] if _stack and _stack[-1].key is test else None


def _wrap_class_setup(original):
    """TestSuite._handleClassSetUp(test, result): setUpClass (Django's setUpTestData too) runs for
    the test about to run, so the test starts here, in setup, as pytest counts a class fixture's
    set-up in the first test that needs it. The calls also name the fixture."""

    def wrapper(self, test, result, *args, **kwargs):
        if _state["pytest"] or not hasattr(test, "id"):
            return original(self, test, result, *args, **kwargs)
        cls = test.__class__
        token = _running(test)
        label = None
        try:
            if (
                getattr(result, "_previousTestClass", None) is not cls
                and not getattr(result, "_moduleSetUpFailed", False)
                and _overrides(cls, "setUpClass")
            ):
                label = (cls.__qualname__, _test_file(test))
                if token is None:
                    token = _early_begin(test)
                fixture("start", label[0], "class", label[1])
        except Exception:
            label = None
        try:
            return original(self, test, result, *args, **kwargs)
        finally:
            if label is not None:
                fixture("end", label[0], "class", label[1])
                _end_if_fixture_failed(token, test, result)

    wrapper.__wrapped__ = original
    wrapper._nettrap = True
    return wrapper


def _early_begin(test):
    _outcomes.pop(test.id(), None)
    token = begin(test.id(), _runner_of(test), _test_file(test), key=test, hold=True)
    if token is not None:
        token.owned = False
        phase(token, "setup")
    return token


def _end_if_fixture_failed(token, test, result):
    # The class or module set-up failed: the test will not run, and unittest does not count it
    # ("Ran N tests"; it reports the fixture's error instead): nor does nettrap.
    failed = getattr(result, "_moduleSetUpFailed", False) or getattr(
        test.__class__, "_classSetupFailed", False
    )
    if failed and token is not None and token in _stack:
        cancel(token)


def _wrap_module_setup(original):
    """TestSuite._handleModuleFixture(test, result): tears the previous module down, then runs
    setUpModule for the test about to run. The test starts only when setUpModule itself runs
    (the module's function is wrapped for that one call)."""

    def wrapper(self, test, result, *args, **kwargs):
        if _state["pytest"] or not hasattr(test, "id"):
            return original(self, test, result, *args, **kwargs)
        module = sys.modules.get(test.__class__.__module__)
        setup = getattr(module, "setUpModule", None) if module is not None else None
        patched = False
        if callable(setup) and not getattr(setup, "_nettrap", False):

            def setUpModule(*a, **kw):
                token = _running(test) or _early_begin(test)
                fixture("start", module.__name__, "module", _test_file(test))
                try:
                    return setup(*a, **kw)
                finally:
                    fixture("end", module.__name__, "module", _test_file(test))
                    del token

            setUpModule._nettrap = True
            try:
                module.setUpModule = setUpModule
                patched = True
            except Exception:
                pass
        try:
            return original(self, test, result, *args, **kwargs)
        finally:
            if patched:
                try:
                    module.setUpModule = setup
                except Exception:
                    pass
                _end_if_fixture_failed(_running(test), test, result)

    wrapper.__wrapped__ = original
    wrapper._nettrap = True
    return wrapper


def _wrap_teardown_fixture(original, scope):
    """Class and module tear-downs run between tests: their calls are nobody's, but name the
    fixture."""

    def wrapper(self, *args, **kwargs):
        result = args[-1] if args else kwargs.get("result")
        name = None
        try:
            previous = getattr(result, "_previousTestClass", None)
            if _state["pytest"] or previous is None:
                pass
            elif scope == "class":
                test = args[0] if len(args) > 1 else kwargs.get("test")
                if previous is not getattr(test, "__class__", None) and _overrides(
                    previous, "tearDownClass"
                ):
                    name = previous.__qualname__
            else:
                module = sys.modules.get(previous.__module__)
                if callable(getattr(module, "tearDownModule", None)):
                    name = previous.__module__
        except Exception:
            name = None
        if name is not None:
            fixture("start", name, scope + " teardown", None)
        try:
            return original(self, *args, **kwargs)
        finally:
            if name is not None:
                fixture("end", name, scope + " teardown", None)

    wrapper.__wrapped__ = original
    wrapper._nettrap = True
    return wrapper


def _patch_suite(module):
    cls = module.TestSuite
    _patch(cls, "_handleClassSetUp", _wrap_class_setup)
    _patch(cls, "_handleModuleFixture", _wrap_module_setup)
    _patch(cls, "_tearDownPreviousClass", lambda m: _wrap_teardown_fixture(m, "class"))
    _patch(cls, "_handleModuleTearDown", lambda m: _wrap_teardown_fixture(m, "module"))


_UNITTEST_PHASES = {
    "_callSetUp": "setup",
    "_callTestMethod": "call",
    "_callTearDown": "teardown",
    "doCleanups": "teardown",
}
_DJANGO_PHASES = {"_pre_setup": "setup", "_post_teardown": "teardown"}


def _patch(cls, name, make):
    method = vars(cls).get(name)
    if callable(method) and not getattr(method, "_nettrap", False):
        setattr(cls, name, make(method))


def _patch_unittest(module):
    cls = module.TestCase
    _patch(cls, "run", _wrap_entry)
    for name, ph in _UNITTEST_PHASES.items():
        _patch(cls, name, lambda m, ph=ph: _wrap_phase(m, ph))


def _patch_async_case(module):
    cls = module.IsolatedAsyncioTestCase
    for name, ph in _UNITTEST_PHASES.items():
        _patch(cls, name, lambda m, ph=ph: _wrap_phase(m, ph))


def _patch_django(module):
    cls = module.SimpleTestCase
    _patch(cls, "__call__", _wrap_entry)
    for name, ph in _DJANGO_PHASES.items():
        method = vars(cls).get(name)
        if isinstance(method, classmethod) and not getattr(method.__func__, "_nettrap", False):
            setattr(cls, name, classmethod(_wrap_phase(method.__func__, ph)))
        else:
            _patch(cls, name, lambda m, ph=ph: _wrap_phase(m, ph))


def _patch_unittest_result(module):
    _patch_result_class(module.TestResult)


def _patch_pytest(module):
    """Registers nettrap's pytest plugin with every pytest session of this process (xdist
    workers, pytester's inner sessions): where this adapter is loaded, and only there. `-p
    no:nettrap` turns it off."""
    cls = module.Config
    original = cls.__init__

    def __init__(self, *args, **kwargs):
        original(self, *args, **kwargs)
        try:
            pm = self.pluginmanager
            if not pm.is_blocked("nettrap") and pm.get_plugin("nettrap") is None:
                import _nettrap_pytest

                pm.register(_nettrap_pytest, "nettrap")
        except Exception as e:
            _fail("cannot register the pytest plugin: %s" % e, "pytest")

    __init__.__wrapped__ = original
    cls.__init__ = __init__


# --- database drivers whose C library connects on its own --------------------------------
# libpq (psycopg2, psycopg) and libmysqlclient (MySQLdb) connect from C: no audit hook sees
# it. Their Python connect functions are wrapped, when the program imports the driver, to
# write the call site just before the library connects. Nothing changes in what they do.


_DRIVERS = ("psycopg2", "psycopg", "MySQLdb")


def _first(value):
    """The first of libpq's comma-separated hosts or ports."""
    if value is None:
        return None
    return str(value).split(",", 1)[0].strip() or None


def _db_site(library, host, port):
    """The site of a database driver's connect, unless it goes to a Unix socket (no network)."""
    try:
        host = _first(host)
        if host is None or host.startswith("/") or host.startswith("@"):
            return
        try:
            port = int(_first(port))
        except Exception:
            port = None
        file, line, func, outer = _site(sys._getframe(2))
        import threading

        emit({
            "ev": "site",
            "tid": threading.get_native_id(),
            "kind": "connect",
            "host": host,
            "port": port,
            "file": file,
            "line": line,
            "func": func,
            "library": outer or library,
        })
    except Exception:
        pass


def _libpq_params(parse, args, kwargs):
    """host and port of a libpq connect(dsn, **kwargs), with libpq's environment defaults."""
    params = {}
    dsn = args[0] if args else kwargs.get("dsn", kwargs.get("conninfo"))
    if isinstance(dsn, str) and dsn and parse is not None:
        try:
            params.update(parse(dsn))
        except Exception:
            pass
    for key in ("host", "hostaddr", "port"):
        if kwargs.get(key) is not None:
            params[key] = kwargs[key]
    host = params.get("hostaddr") or params.get("host")
    host = host or os.environ.get("PGHOSTADDR") or os.environ.get("PGHOST")
    port = params.get("port") or os.environ.get("PGPORT") or 5432
    return host, port


def _wrap_db_connect(original, library, target):
    def connect(*args, **kwargs):
        try:
            host, port = target(args, kwargs)
            _db_site(library, host, port)
        except Exception:
            pass
        return original(*args, **kwargs)

    connect.__wrapped__ = original
    connect._nettrap = True
    try:
        import functools

        functools.update_wrapper(connect, original)
    except Exception:
        pass
    return connect


def _patch_psycopg2(module):
    original = getattr(module, "connect", None)
    if not callable(original) or getattr(original, "_nettrap", False):
        return

    def target(args, kwargs):
        parse = getattr(getattr(module, "extensions", None), "parse_dsn", None)
        return _libpq_params(parse, args, kwargs)

    module.connect = _wrap_db_connect(original, "psycopg2", target)


def _patch_psycopg(module):
    """psycopg 3: `psycopg.connect` is `Connection.connect` (a classmethod); the async one too."""

    def target(args, kwargs):
        conninfo = getattr(module, "conninfo", None)
        parse = getattr(conninfo, "conninfo_to_dict", None)
        return _libpq_params(parse, args, kwargs)

    for name in ("Connection", "AsyncConnection"):
        cls = getattr(module, name, None)
        method = vars(cls).get("connect") if isinstance(cls, type) else None
        if isinstance(method, classmethod) and not getattr(method.__func__, "_nettrap", False):
            func = method.__func__

            def bound(args, kwargs):  # the class is the first argument
                return target(args[1:], kwargs)

            setattr(cls, "connect", classmethod(_wrap_db_connect(func, "psycopg", bound)))
    connection = getattr(module, "Connection", None)
    if connection is not None and getattr(module, "connect", None) is not None:
        module.connect = connection.connect


def _patch_mysqldb(module):
    """MySQLdb.connect(host, user, passwd, db, port, ...): `localhost` is its Unix socket."""

    def target(args, kwargs):
        host = args[0] if args else kwargs.get("host")
        port = args[4] if len(args) > 4 else kwargs.get("port") or 3306
        if host in (None, "", "localhost") or kwargs.get("unix_socket"):
            return None, None
        return host, port

    original = getattr(module, "connect", None)
    if callable(original) and not getattr(original, "_nettrap", False):
        wrapped = _wrap_db_connect(original, "MySQLdb", target)
        for name in ("connect", "Connect"):
            if getattr(module, name, None) is original:
                setattr(module, name, wrapped)


_ON_IMPORT = {
    "_pytest.config": _patch_pytest,
    "unittest.case": _patch_unittest,
    "unittest.async_case": _patch_async_case,
    "unittest.result": _patch_unittest_result,
    "unittest.suite": _patch_suite,
    "django.test.testcases": _patch_django,
    "psycopg2": _patch_psycopg2,
    "psycopg": _patch_psycopg,
    "MySQLdb": _patch_mysqldb,
}


class _ImportHook(object):
    """Patches a watched module right after it is first imported (a post-import hook)."""

    def find_module(self, name, path=None):  # the pre-3.4 protocol: not ours
        return None

    def find_spec(self, name, path=None, target=None):
        if name not in _ON_IMPORT:
            return None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, "find_spec"):
                continue
            spec = finder.find_spec(name, path, target)
            if spec is not None:
                loader = spec.loader
                if loader is not None and hasattr(loader, "exec_module"):
                    spec.loader = _PatchingLoader(loader, _ON_IMPORT[name])
                return spec
        return None


class _PatchingLoader(object):
    def __init__(self, loader, patch):
        self._loader, self._patch = loader, patch

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        # Importers reach the original loader's extras (get_resource_reader, ...) through us.
        module.__spec__.loader = self._loader
        self._loader.exec_module(module)
        try:
            self._patch(module)
        except Exception as e:
            runner = "pytest" if module.__name__.startswith("_pytest") else "unittest"
            if module.__name__ in _DRIVERS:
                return  # a driver's call sites only: its calls are still seen and attributed
            _fail("cannot hook %s: %s" % (module.__name__, e), runner)

    def __getattr__(self, name):
        return getattr(self._loader, name)


# --- call sites ----------------------------------------------------------------------------

_SOCKET_EVENTS = frozenset(("socket.connect", "socket.sendto", "socket.getaddrinfo"))
_INET = (2, 10)  # AF_INET, AF_INET6 (Linux)
_HERE = os.path.dirname(os.path.abspath(__file__))
_stdlib = None


def _stdlib_dir():
    global _stdlib
    if _stdlib is None:
        _stdlib = os.path.dirname(os.path.abspath(os.__file__)) + os.sep
    return _stdlib


def _library(filename):
    for marker in ("site-packages", "dist-packages"):
        i = filename.find(os.sep + marker + os.sep)
        if i >= 0:
            rest = filename[i + len(marker) + 2:]
            top = rest.split(os.sep, 1)[0]
            if top.endswith(".py"):
                top = top[:-3]
            return top.split(".", 1)[0] or None
    return None


def _site(frame):
    """(file, line, func, library) of the first frame in the project's own code, and the
    outermost third-party package between it and the call."""
    library = None
    stdlib = _stdlib_dir()
    while frame is not None:
        filename = frame.f_code.co_filename
        if filename.startswith("<") or filename.startswith(_HERE):
            frame = frame.f_back
            continue
        lib = _library(filename)
        if lib is not None:
            if lib not in ("_pytest", "pytest", "pluggy", "_nettrap_adapter", "_nettrap_pytest"):
                library = lib
            frame = frame.f_back
            continue
        if filename.startswith(stdlib):
            frame = frame.f_back
            continue
        rel = os.path.relpath(filename)
        return (filename if rel.startswith("..") else rel), frame.f_lineno, frame.f_code.co_name, library
    return None, None, None, library


def _numeric(host):
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str) or not host:
        return host is None
    import socket

    for family in (socket.AF_INET, socket.AF_INET6):
        try:
            socket.inet_pton(family, host.split("%", 1)[0])
            return True
        except (OSError, ValueError):
            pass
    return False


def _audit(event, args):
    if event not in _SOCKET_EVENTS:
        return
    try:
        if event == "socket.getaddrinfo":
            host, port = args[0], args[1]
            if _numeric(host):
                return  # no lookup leaves the process
        else:
            address = args[1]
            if getattr(args[0], "family", None) not in _INET:
                return  # AF_UNIX, AF_NETLINK, ...: not a network call
            if not isinstance(address, tuple) or len(address) < 2:
                return
            host, port = address[0], address[1]
        if isinstance(host, bytes):
            host = host.decode("ascii", "replace")
        if not isinstance(port, int):
            try:
                port = int(port)
            except Exception:
                port = None
        file, line, func, library = _site(sys._getframe(1))
        import threading

        emit({
            "ev": "site",
            "tid": threading.get_native_id(),
            "kind": event[len("socket."):],
            "host": host if isinstance(host, str) else None,
            "port": port,
            "file": file,
            "line": line,
            "func": func,
            "library": library,
        })
    except Exception:
        pass


def install():
    if not _TIMELINE or getattr(sys, "_nettrap_installed", False):
        return
    sys._nettrap_installed = True
    sys.meta_path.insert(0, _ImportHook())
    for name, patch in _ON_IMPORT.items():
        if name in sys.modules:
            patch(sys.modules[name])
    if hasattr(sys, "addaudithook"):
        sys.addaudithook(_audit)
    # Deferred events are the parent's: written before a fork, never twice by the child.
    os.register_at_fork(before=flush, after_in_child=_drop_pending)
    import atexit

    atexit.register(flush)
