// nettrap's Node.js runner adapter: publishes what a Node test runner does into the run's
// attribution timeline ($NETTRAP_RUN_DIR/timeline.jsonl, format: src/attribution/SPEC.md), and
// where the program is about to connect (`site` events).
//
// Loaded into every Node process (and worker thread) of the run with
//   NODE_OPTIONS="--require /abs/path/preload.cjs <the user's own NODE_OPTIONS>"
// It does nothing at all unless NETTRAP_RUN_DIR is set, and never throws into the program: every
// hook is wrapped in try/catch, and a timeline that cannot be written is given up (nettrap is
// told once, through adapter-failures.jsonl beside it: see `failed`).
//
// What it covers:
// - jest (jest-circus, the default runner since jest 27; checked with 29.7.0 and 30.2.0): a
//   worker loads jest-circus's runner (`jest-circus/runner`, the adapter function that gets the
//   test environment INSTANCE of each test file) with Node's real `require`. A `Module._load`
//   hook wraps that function and, before jest-circus looks for it, defines `handleTestEvent` on
//   the environment instance (so any environment class works: node, jsdom, custom, ESM-loaded),
//   chaining to the class's own one if it has one (its return value or promise is passed
//   through). From the events it writes:
//     test_start          -> start, phase setup (beforeEach hooks run in setup)
//     test_fn_start       -> phase call
//     test_fn_success/_failure, hook_start of afterEach -> phase teardown
//     test_done           -> end, outcome passed/failed from test.errors, duration test.duration
//     test_skip/test_todo -> end, outcome skipped (jest counts them in its total too)
//     beforeAll/afterAll  -> fixture start/end (they run outside any test; scope "file" for
//                            top-level hooks, "describe" inside a describe block)
//   Test id: `<test file relative to jest's rootDir> > <full name>`, the full name being the
//   describe blocks and the test name joined with " " exactly as jest prints it and as `-t`
//   matches it, e.g. `tests/search.test.js > search indexes a document`.
//   While a test runs, `process.env.NETTRAP_TEST = "<id> (<phase>)"` is set in the worker's real
//   environment (this module's `process` is outside jest's sandbox, whose `process.env` is a
//   copy), so children inherit it and the LD_PRELOAD shim reads it at each connect; it is
//   deleted at the end of the test. If this process started inside another test (NETTRAP_TEST or
//   PYTEST_CURRENT_TEST already set: a test that runs jest), `start` carries that test's id as
//   `outer` and NETTRAP_TEST is left alone.
//   A `process` event names the role: `jest worker N` (JEST_WORKER_ID) in a worker process or
//   thread, `jest in-band` when jest runs the tests in its own process.
//   Under `workerThreads: true` several test files run at once in one process: start/phase/end
//   then carry the thread's `tid` (and NETTRAP_TEST is the thread's copy of the environment only).
// - call sites: `net.Socket.prototype.connect` (TCP, TLS, http(s) agents all go through it) and
//   `dgram.Socket.prototype.connect`/`send` write a `site` event just before the call: host and
//   port from the arguments (unix-socket paths are skipped), `file`/`line`/`func` of the first
//   frame in the project's own code (not node: internals, not node_modules, not this file; paths
//   relative to process.cwd()), `library` = the package of the node_modules frame nearest to
//   that project frame (the library the project called; `@scope/pkg` kept), null if none.
//   `tid` is the kernel thread id: process.pid on the main thread, read once from
//   /proc/thread-self/stat in a worker thread.
//
// For the launcher: set NETTRAP_RUN_DIR (already set for the shim) and create
// $NETTRAP_RUN_DIR/timeline.jsonl (this module creates it if missing: open with 'a'); prepend
// `--require <path>` to the user's NODE_OPTIONS, keeping theirs after it, and quote the path with
// double quotes if it contains spaces (Node splits NODE_OPTIONS like a shell). Loading it twice
// (two paths) is harmless: every hook is installed once.
//
// node:test and vitest are covered too: see hookNodeTest (each test's own start and end times,
// and its phases from the runs of its hooks, written when the test file's process exits) and
// hookVitest (vitest's worker state) below.
//
// Not covered: jest-jasmine2 (an `adapter` event says so), test.concurrent tests (their
// bodies start together before the first test; their calls fall outside the tests' intervals),
// and tests with identical full names in one file (same id). A retried test (jest.retryTimes)
// writes one start/end pair per attempt, with the same id.

'use strict';

(function nettrapNodeAdapter() {
  const runDir = process.env.NETTRAP_RUN_DIR;
  if (!runDir) return;

  let fs, path;
  try {
    fs = require('fs');
    path = require('path');
  } catch (_) {
    return;
  }

  const TIMELINE = path.join(runDir, 'timeline.jsonl');
  const SELF = __filename;
  const MAX_STR = 1000; // keeps a line well under the 4 KiB of one atomic append

  // ---- the timeline -------------------------------------------------------------------------

  let fd = -1;
  let broken = false;

  function openTimeline() {
    fd = fs.openSync(TIMELINE, 'a'); // O_WRONLY|O_APPEND|O_CREAT, libuv adds O_CLOEXEC
  }

  function cut(s) {
    return typeof s === 'string' && s.length > MAX_STR ? s.slice(0, MAX_STR) + '...' : s;
  }

  function line(ev, fields, t) {
    const when = t === undefined ? process.hrtime.bigint() : t;
    let rest = '';
    if (fields) {
      for (const k of Object.keys(fields)) {
        const v = fields[k];
        if (v === undefined) continue;
        rest += ',' + JSON.stringify(k) + ':' + JSON.stringify(cut(v));
      }
    }
    return '{"ev":' + JSON.stringify(ev) + ',"t":' + when.toString() + ',"pid":' + process.pid + rest + '}\n';
  }

  // One event: one line, one write(). `t` and `pid` first; `fields` must not hold BigInts. A
  // timeline that cannot be written is given up, and nettrap told once (see `failed`).
  function emit(ev, fields, t) {
    if (broken) return;
    try {
      const text = line(ev, fields, t);
      if (fd < 0) openTimeline();
      try {
        fs.writeSync(fd, text);
      } catch (e) {
        if (!e || e.code !== 'EBADF') throw e;
        openTimeline(); // user code closed our descriptor: reopen by path, once
        fs.writeSync(fd, text);
      }
    } catch (e) {
      broken = true;
      // One runner name and one reason for every process of the run, so that nettrap says
      // it once for all of them (`node adapter, in 3 processes: ...`).
      failed('node', 'cannot write the timeline (' + ((e && e.code) || 'error') + ')');
    }
  }

  // Tells nettrap, once per process, that the adapter cannot do its job here: an `adapter`
  // event in the timeline, or, when that cannot be written, in adapter-failures.jsonl beside
  // it (created if missing). nettrap says it once for the whole run, after the command: nothing
  // goes into the program's own output (it could land mid-line). Only if neither file can be
  // written in a run directory that exists is it said on stderr, on a line of its own, by the
  // first process of the run to get there (NETTRAP_ADAPTER_TOLD, inherited by the processes it
  // starts).
  let adapterFailed = false;
  function failed(runner, why) {
    if (adapterFailed) return;
    adapterFailed = true;
    try {
      const text = line('adapter', { runner, status: 'failed', why: String(why) });
      if (!broken) {
        try {
          if (fd < 0) openTimeline();
          fs.writeSync(fd, text);
          return;
        } catch (_) {
          broken = true;
        }
      }
      try {
        fs.appendFileSync(path.join(runDir, 'adapter-failures.jsonl'), text);
        return;
      } catch (_) {}
      // No run directory (NETTRAP_RUN_DIR left over from a run that is gone): nobody to tell.
      if (process.env.NETTRAP_ADAPTER_TOLD || !fs.existsSync(runDir)) return;
      process.env.NETTRAP_ADAPTER_TOLD = '1';
      fs.writeSync(2, '\nnettrap: ' + runner + ' adapter: ' + why + '; falling back to NETTRAP_TEST\n');
    } catch (_) {}
  }

  // ---- threads ------------------------------------------------------------------------------

  let isMainThread = true;
  try {
    isMainThread = require('worker_threads').isMainThread;
  } catch (_) {}

  let cachedTid = 0;
  function tid() {
    if (cachedTid) return cachedTid;
    if (isMainThread) return (cachedTid = process.pid);
    try {
      const stat = fs.readFileSync('/proc/thread-self/stat', 'latin1');
      const n = parseInt(stat, 10);
      cachedTid = n > 0 ? n : process.pid;
    } catch (_) {
      cachedTid = process.pid; // no /proc: the site carries the pid
    }
    return cachedTid;
  }

  // ---- call sites ---------------------------------------------------------------------------

  const NM = /[\\/]node_modules[\\/]((?:@[^\\/]+[\\/])?[^\\/]+)/g;

  function packageOf(file) {
    let last = null;
    let m;
    NM.lastIndex = 0;
    while ((m = NM.exec(file)) !== null) last = m[1];
    return last === null ? null : last.replace(/\\/g, '/');
  }

  function absolute(f) {
    if (!f) return null;
    if (f.startsWith('file://')) {
      try {
        f = require('url').fileURLToPath(f);
      } catch (_) {
        return null;
      }
    }
    return path.isAbsolute(f) ? f : null; // node:net, evalmachine.<anonymous>, ...
  }

  const FRAME = /^\s*at (?:(.+?) \()?(.+?):(\d+):\d+\)?\s*$/;

  // The stack as {file, line, func}, most recent first. The formatted stack is used where it is
  // a string, so a runner that maps positions back to the sources (vitest, jest with a
  // transform, --enable-source-maps) gives the lines of the file the user wrote; else V8's raw
  // call sites.
  function captureFrames() {
    const limit = Error.stackTraceLimit;
    try {
      Error.stackTraceLimit = 100;
      const holder = {};
      Error.captureStackTrace(holder, captureFrames);
      const stack = holder.stack;
      if (typeof stack === 'string') {
        const frames = [];
        for (const text of stack.split('\n')) {
          const m = FRAME.exec(text);
          if (m === null) continue;
          let func = m[1] ? m[1].replace(/^async /, '') : null;
          if (func !== null && func.includes('<anonymous>')) func = null; // as V8's own name
          frames.push({ file: absolute(m[2]), line: Number(m[3]), func });
        }
        return frames;
      }
    } catch (_) {
    } finally {
      Error.stackTraceLimit = limit;
    }
    const prepare = Error.prepareStackTrace;
    try {
      Error.stackTraceLimit = 100;
      Error.prepareStackTrace = (_e, frames) => frames;
      const holder = {};
      Error.captureStackTrace(holder, captureFrames);
      const raw = Array.isArray(holder.stack) ? holder.stack : [];
      return raw.map((fr) => ({
        file: absolute(fr.getFileName && fr.getFileName()),
        line: fr.getLineNumber(),
        func: fr.getFunctionName() || null,
      }));
    } finally {
      Error.prepareStackTrace = prepare;
      Error.stackTraceLimit = limit;
    }
  }

  function site(kind, host, port) {
    try {
      const frames = captureFrames();
      let library = null;
      let file = null;
      let line = null;
      let func = null;
      for (const fr of frames) {
        const f = fr.file;
        if (f === null || f === SELF) continue;
        const pkg = packageOf(f);
        if (pkg !== null) {
          library = pkg; // the last one before the project frame is the outermost
          continue;
        }
        file = path.relative(process.cwd(), f) || f;
        line = fr.line;
        func = fr.func || null;
        break;
      }
      emit('site', {
        tid: tid(),
        kind,
        host: host === undefined ? null : host,
        port: port === undefined ? null : port,
        file,
        line,
        func,
        library,
      });
    } catch (_) {}
  }

  function num(p) {
    const n = Number(p);
    return Number.isInteger(n) && n >= 0 && n < 65536 ? n : null;
  }

  // net.Socket#connect(options[, cb]) | (port[, host][, cb]) | (path[, cb]); net.connect passes
  // its normalized arguments as one array ([options, cb]).
  function tcpTarget(args) {
    let a0 = args[0];
    if (Array.isArray(a0)) a0 = a0[0];
    if (a0 !== null && typeof a0 === 'object') {
      if (a0.path !== undefined && a0.path !== null) return null; // unix socket
      if (a0.port === undefined) return null;
      return [typeof a0.host === 'string' ? a0.host : 'localhost', num(a0.port)];
    }
    if (typeof a0 === 'number' || (typeof a0 === 'string' && /^\s*\d+\s*$/.test(a0))) {
      const h = Array.isArray(args[0]) ? args[0][1] : args[1];
      return [typeof h === 'string' ? h : 'localhost', num(a0)];
    }
    return null; // a path: unix socket
  }

  function hookNet() {
    const net = require('net');
    const proto = net.Socket && net.Socket.prototype;
    if (!proto || typeof proto.connect !== 'function' || proto.connect.__nettrap) return;
    const orig = proto.connect;
    const wrapped = function connect() {
      try {
        const target = tcpTarget(arguments);
        if (target !== null) site('connect', target[0], target[1]);
      } catch (_) {}
      return orig.apply(this, arguments);
    };
    Object.defineProperty(wrapped, '__nettrap', { value: true });
    Object.defineProperty(wrapped, 'length', { value: orig.length });
    proto.connect = wrapped;
  }

  function hookDgram() {
    const dgram = require('dgram');
    const proto = dgram.Socket && dgram.Socket.prototype;
    if (!proto || proto.send.__nettrap) return;
    const origConnect = proto.connect;
    const origSend = proto.send;
    const defaultHost = (sock) => {
      try {
        return sock.type === 'udp6' ? '::1' : '127.0.0.1';
      } catch (_) {
        return null;
      }
    };
    if (typeof origConnect === 'function') {
      proto.connect = function connect(port, address) {
        try {
          site('connect', typeof address === 'string' ? address : defaultHost(this), num(port));
        } catch (_) {}
        return origConnect.apply(this, arguments);
      };
    }
    if (typeof origSend === 'function') {
      // A send on an unbound socket binds it and calls send again once bound (from node:dgram's
      // queue, with no project frame on the stack): the site is written for the user's call only.
      const requeued = new WeakMap();
      const isBound = (sock) => {
        try {
          sock.address();
          return true;
        } catch (_) {
          return false;
        }
      };
      // send(msg[, offset, length][, port][, address][, cb]); no port: a connected socket
      const wrapped = function send(msg, a, b, c, d) {
        try {
          if (isBound(this)) {
            const n = requeued.get(this) || 0;
            if (n > 0) {
              requeued.set(this, n - 1);
              return origSend.apply(this, arguments);
            }
          } else {
            requeued.set(this, (requeued.get(this) || 0) + 1);
          }
          let port, address;
          if (typeof a === 'number' && typeof b === 'number' && c !== undefined && typeof c !== 'function') {
            port = c;
            address = d;
          } else if (typeof a === 'number' && typeof b === 'number' && (c === undefined || typeof c === 'function')) {
            // (msg, offset, length[, cb]) on a connected socket, or (msg, port, address=number?)
            port = undefined;
          } else {
            port = a;
            address = b;
          }
          if (port !== undefined && port !== null && typeof port !== 'function') {
            site('sendto', typeof address === 'string' ? address : defaultHost(this), num(port));
          }
        } catch (_) {}
        return origSend.apply(this, arguments);
      };
      Object.defineProperty(wrapped, '__nettrap', { value: true });
      proto.send = wrapped;
    }
  }

  try {
    hookNet();
  } catch (e) {
    failed('node', 'cannot wrap net.Socket.prototype.connect: ' + (e && e.message));
  }
  try {
    hookDgram();
  } catch (_) {}

  // ---- jest ---------------------------------------------------------------------------------

  const scopeTid = () => (isMainThread ? undefined : tid());

  // A jest run inside another runner's test (a test that runs jest in a subprocess): the outer
  // test's id, from the environment this process started with. Its tests are then written with
  // `outer`, and NETTRAP_TEST is left to the outer test.
  let outer = null;
  try {
    const env = process.env.NETTRAP_TEST || process.env.PYTEST_CURRENT_TEST;
    if (env) outer = env.replace(/ \((setup|call|teardown)\)$/, '');
  } catch (_) {}

  function fullName(test) {
    const names = [];
    for (let b = test; b && b.parent; b = b.parent) names.unshift(b.name);
    return names.join(' ');
  }

  function describeName(block) {
    const names = [];
    for (let b = block; b && b.parent; b = b.parent) names.unshift(b.name);
    return names.join(' ');
  }

  let processWritten = false;
  function writeProcess() {
    if (processWritten) return;
    processWritten = true;
    const id = process.env.JEST_WORKER_ID;
    const worker = typeof process.send === 'function' || !isMainThread;
    emit('process', {
      tid: scopeTid(),
      runner: 'jest',
      role: worker && id ? 'jest worker ' + id : 'jest in-band',
    });
  }

  // Per test file: one handler bound to the environment instance.
  function makeHandler(config, testPath) {
    let rel = testPath;
    try {
      const root = (config && config.rootDir) || process.cwd();
      rel = path.relative(root, testPath).split(path.sep).join('/') || testPath;
    } catch (_) {}
    let current = null; // {id, phase}
    let hookFixture = null;
    const base = () => ({ tid: scopeTid() });

    function setEnv() {
      if (outer !== null) return;
      try {
        if (current) process.env.NETTRAP_TEST = current.id + ' (' + current.phase + ')';
        else delete process.env.NETTRAP_TEST;
      } catch (_) {}
    }
    function phase(p, t) {
      if (!current || current.phase === p) return;
      current.phase = p;
      emit('phase', Object.assign(base(), { test: current.id, phase: p }), t);
      setEnv();
    }
    function end(outcome, durationMs) {
      if (!current) return;
      const f = Object.assign(base(), { test: current.id, outcome });
      if (typeof durationMs === 'number' && durationMs >= 0) f.duration_s = durationMs / 1000;
      const id = current.id;
      current = null;
      setEnv();
      emit('end', f);
      return id;
    }

    return function onEvent(event) {
      switch (event && event.name) {
        case 'test_start': {
          const t = process.hrtime.bigint();
          if (current) end('failed');
          const id = rel + ' > ' + fullName(event.test);
          current = { id, phase: 'setup' };
          emit('start', Object.assign(base(), { test: id, runner: 'jest', file: rel, outer: outer === null ? undefined : outer }), t);
          emit('phase', Object.assign(base(), { test: id, phase: 'setup' }), t);
          setEnv();
          break;
        }
        case 'test_fn_start':
          phase('call');
          break;
        case 'test_fn_success':
        case 'test_fn_failure':
          phase('teardown');
          break;
        case 'hook_start': {
          const type = event.hook && event.hook.type;
          if (type === 'afterEach') phase('teardown');
          else if (type === 'beforeEach') phase('setup');
          else if ((type === 'beforeAll' || type === 'afterAll') && !current) {
            const block = event.hook.parent;
            const inner = block && block.parent ? describeName(block) : '';
            hookFixture = {
              name: type + (inner ? ' ' + inner : ''),
              scope: inner ? 'describe' : 'file',
              location: rel,
            };
            emit('fixture', Object.assign(base(), { state: 'start' }, hookFixture));
          }
          break;
        }
        case 'hook_success':
        case 'hook_failure': {
          const type = event.hook && event.hook.type;
          if ((type === 'beforeAll' || type === 'afterAll') && hookFixture) {
            emit('fixture', Object.assign(base(), { state: 'end' }, hookFixture));
            hookFixture = null;
          }
          break;
        }
        case 'test_skip':
        case 'test_todo':
          end('skipped');
          break;
        case 'test_done': {
          const errs = event.test && event.test.errors;
          end(errs && errs.length > 0 ? 'failed' : 'passed', event.test && event.test.duration);
          break;
        }
        case 'teardown':
        case 'run_finish':
          if (current) end('failed');
          break;
        default:
          break;
      }
    };
  }

  const HOOKED = typeof Symbol === 'function' ? Symbol.for('nettrap.jest') : '__nettrapJest';

  function instrumentEnvironment(environment, config, testPath) {
    if (!environment || (typeof environment !== 'object' && typeof environment !== 'function')) {
      failed('jest', 'jest-circus passed no test environment object');
      return;
    }
    if (environment[HOOKED]) return;
    const ours = makeHandler(config, testPath);
    const theirs = environment.handleTestEvent; // the class's own (or an inherited) one, if any
    const handleTestEvent = function handleTestEvent(event, state) {
      try {
        ours(event, state);
      } catch (_) {}
      if (typeof theirs === 'function') return theirs.call(this, event, state);
      return undefined;
    };
    Object.defineProperty(environment, 'handleTestEvent', {
      value: handleTestEvent,
      writable: true,
      configurable: true,
      enumerable: false,
    });
    Object.defineProperty(environment, HOOKED, { value: true });
    writeProcess();
  }

  function wrapAdapter(adapter) {
    const wrapped = function jestAdapter(globalConfig, config, environment, runtime, testPath) {
      try {
        instrumentEnvironment(environment, config, testPath);
      } catch (e) {
        failed('jest', 'cannot instrument the test environment: ' + (e && e.message));
      }
      return adapter.apply(this, arguments);
    };
    Object.defineProperty(wrapped, '__nettrap', { value: true });
    return wrapped;
  }

  // jest-circus's runner (`testRunner`, default `jest-circus/runner`): jest 27-29 export the
  // adapter function itself, jest 30 `{ default: adapter }`.
  const RUNNER = /(^|[\\/])jest-circus[\\/](build[\\/])?runner(\.js)?$/;
  const JASMINE = /(^|[\\/])jest-jasmine2([\\/]build[\\/]index(\.js)?)?$/;
  const wrappedRunners = new WeakMap();

  function onLoad(request, exports) {
    if (RUNNER.test(request)) {
      if (typeof exports === 'function') {
        if (exports.__nettrap) return exports;
        let w = wrappedRunners.get(exports);
        if (!w) {
          w = wrapAdapter(exports);
          wrappedRunners.set(exports, w);
        }
        return w;
      }
      if (exports && typeof exports.default === 'function') {
        if (!exports.default.__nettrap) exports.default = wrapAdapter(exports.default);
        return exports;
      }
      failed('jest', 'jest-circus/runner exports no adapter function');
    } else if (JASMINE.test(request)) {
      failed('jest', 'the jest-jasmine2 runner is not supported (use jest-circus)');
    }
    return exports;
  }

  try {
    const Module = require('module');
    const load = Module._load;
    if (typeof load !== 'function') {
      failed('jest', 'module.Module._load is not a function');
    } else if (!load.__nettrap) {
      const hooked = function _load(request) {
        const exports = load.apply(this, arguments);
        if (typeof request === 'string' && request.indexOf('jest-') !== -1) {
          try {
            return onLoad(request, exports);
          } catch (_) {}
        }
        return exports;
      };
      Object.defineProperty(hooked, '__nettrap', { value: true });
      Module._load = hooked;
    }
  } catch (e) {
    failed('jest', 'cannot hook require: ' + (e && e.message));
  }

  // ---- node:test ----------------------------------------------------------------------------
  //
  // node:test offers no hook for the current test in Node 20, but each test is an AsyncResource
  // of type "Test" that keeps its own startTime/endTime (process.hrtime.bigint(), the timeline's
  // clock), outcome and parent. An async_hooks `init` hook collects them as they are created,
  // and at exit every test's start and end go to the timeline (calls are joined by time, so
  // late is fine; a process killed before its exit loses them). Enabled only where node:test
  // runs tests: a file's process under `node --test` (NODE_TEST_CONTEXT), or `node --test` run
  // in-process; async_hooks cost every promise something, so nowhere else.
  // Id: `<file relative to cwd> > <describe> > ... > <test>`. Children of a test have no id of
  // their own in their environment: nettrap gives them their parent's test at the time of the
  // call.
  // Phases: hooks (before, beforeEach, afterEach, after) are AsyncResources of type "Test" too,
  // of class TestHook: one object per registered hook, run once per test it applies to (its
  // own times are not kept per run). The first TestHook seen has its class's `run` wrapped to
  // note each run's start and end (node:test wraps before/after hooks in a run-once function
  // after construction: that wraps ours). A test runs its hooks within its own start and end
  // (a subtest's within its own too), so at exit each hook run goes to the innermost test
  // whose times hold it: beforeEach/before runs are its `setup`, afterEach/after runs (and
  // what follows them) its `teardown`, the rest `call`. Tests of one file run one at a time
  // unless the file asks for concurrency; with concurrent tests a hook run may land on the
  // wrong one of them.
  function hookNodeTest() {
    const execArgv = process.execArgv || [];
    const inTestFile = typeof process.env.NODE_TEST_CONTEXT === 'string';
    if (!inTestFile && !execArgv.includes('--test')) return;
    if (inTestFile) {
      // NODE_TEST_CONTEXT is inherited by every process a test starts: only the test file's
      // own process (the first to see it) pays for the hook; the others see its pid here.
      const owner = process.env.NETTRAP_NODE_TEST_FILE;
      if (owner && owner !== String(process.pid)) return;
      process.env.NETTRAP_NODE_TEST_FILE = String(process.pid);
    }
    const tests = [];
    const hookRuns = []; // { type, start, end }
    let hooksWrapped = false;
    function wrapHooks(hook) {
      hooksWrapped = true;
      const proto = Object.getPrototypeOf(hook);
      const orig = proto && proto.run;
      if (typeof orig !== 'function' || orig.__nettrap) return;
      const wrapped = function run() {
        const start = process.hrtime.bigint();
        const ret = orig.apply(this, arguments);
        try {
          const note = { type: this.hookType, start, end: undefined };
          hookRuns.push(note);
          const done = () => {
            note.end = process.hrtime.bigint();
          };
          if (ret && typeof ret.then === 'function') ret.then(done, done);
          else done();
        } catch (_) {}
        return ret;
      };
      Object.defineProperty(wrapped, '__nettrap', { value: true });
      Object.defineProperty(wrapped, 'length', { value: orig.length });
      proto.run = wrapped;
    }
    require('async_hooks')
      .createHook({
        init(_id, type, _trigger, resource) {
          if (type !== 'Test') return;
          const kind = resource && resource.constructor && resource.constructor.name;
          if (kind === 'TestHook') {
            if (!hooksWrapped) {
              try {
                wrapHooks(resource);
              } catch (_) {}
            }
          } else tests.push(resource);
        },
      })
      .enable();
    // Each test's phase changes from the hook runs inside it: [[t, phase], ...] by test.
    function phasesOf(spans) {
      const byTest = new Map();
      for (const run of hookRuns) {
        if (run.end === undefined) continue;
        let owner = null;
        for (const s of spans) {
          if (s.start <= run.start && run.end <= s.end && (owner === null || s.start >= owner.start)) owner = s;
        }
        if (owner === null) continue;
        if (!byTest.has(owner.test)) byTest.set(owner.test, []);
        byTest.get(owner.test).push(run);
      }
      const phases = new Map();
      for (const s of spans) {
        const runs = (byTest.get(s.test) || []).sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
        const setup = (r) => r.type === 'before' || r.type === 'beforeEach';
        const list = [[s.start, runs.some(setup) ? 'setup' : 'call']];
        const add = (t, p) => {
          if (list[list.length - 1][1] !== p) list.push([t, p]);
        };
        for (const r of runs) {
          if (setup(r)) {
            add(r.start, 'setup');
            add(r.end, 'call');
          } else add(r.start, 'teardown');
        }
        phases.set(s.test, list);
      }
      return phases;
    }
    process.on('exit', () => {
      let role = false;
      const spans = [];
      for (const t of tests) {
        try {
          const kind = t.constructor && t.constructor.name;
          // the root, a file's test in the orchestrator, and describe blocks are not tests
          if (!t.parent || kind === 'FileTest' || kind === 'Suite') continue;
          if (typeof t.startTime !== 'bigint' || typeof t.endTime !== 'bigint') continue;
          const names = [];
          let file = t.loc && t.loc.file;
          for (let p = t; p && p.parent; p = p.parent) {
            names.unshift(String(p.name));
            if (!file && p.loc) file = p.loc.file;
          }
          if (file && file.startsWith('file://')) file = require('url').fileURLToPath(file);
          const rel = file ? path.relative(process.cwd(), file) || file : '?';
          let outcome = t.passed ? 'passed' : 'failed';
          if (t.skipped || t.isTodo) outcome = 'skipped';
          spans.push({ test: rel + ' > ' + names.join(' > '), rel, start: t.startTime, end: t.endTime, outcome });
        } catch (_) {}
      }
      let phases = new Map();
      try {
        phases = phasesOf(spans);
      } catch (_) {}
      for (const s of spans) {
        if (!role) {
          role = true;
          emit('process', { runner: 'node:test', role: 'node:test ' + s.rel });
        }
        emit('start', { test: s.test, runner: 'node:test', file: s.rel }, s.start);
        if (s.outcome !== 'skipped') {
          for (const [t, phase] of phases.get(s.test) || []) emit('phase', { test: s.test, phase }, t);
        }
        emit('end', { test: s.test, outcome: s.outcome }, s.end);
      }
    });
  }

  try {
    hookNodeTest();
  } catch (e) {
    failed('node:test', 'cannot hook node:test: ' + (e && e.message));
  }

  // ---- vitest -------------------------------------------------------------------------------
  //
  // In a vitest worker (VITEST set in its environment: a forked process or a worker thread),
  // vitest's test runner assigns the running test to its worker state's `current` before the
  // test (its beforeEach hooks included) and its suite or file after it. The worker state is
  // installed on globalThis with Object.defineProperty('__vitest_worker__'): that one call is
  // watched (in vitest workers only), and `current` becomes an accessor that writes start and
  // end. Skipped tests never become current: they are written when the worker is done with its
  // files, so every test vitest counts is listed. Id: `<file> > <describe> > <test>`.
  // Phases: a test starts in `call`; vitest's runner records its hook states on the test's
  // result (`result.hooks.beforeEach = 'run'`, then `'pass'`/`'fail'`; `afterEach` likewise),
  // which are watched through accessors (enumerable, so what vitest sends to its reporters is
  // unchanged): beforeEach running -> setup, done -> call, afterEach running -> teardown (and
  // stays so through the cleanups that follow).
  function hookVitest() {
    if (!process.env.VITEST) return;
    const scoped = () => (isMainThread ? {} : { tid: tid() });
    const idOf = (task) => {
      const names = [];
      for (let t = task; t && t.type !== undefined && t !== task.file; t = t.suite) names.unshift(String(t.name));
      const file = task.file && task.file.filepath;
      const rel = file ? path.relative(process.cwd(), file) || file : '?';
      return [rel + ' > ' + names.join(' > '), rel];
    };
    const outcome = (task) => {
      const state = task.result && task.result.state;
      if (state === 'pass') return 'passed';
      if (state === 'fail') return 'failed';
      return 'skipped';
    };
    const started = new WeakSet();
    const files = new Set();
    let role = false;
    // An own property of `obj` turned into an accessor that calls `onSet` after each write.
    function watchProp(obj, key, onSet) {
      if (!obj || typeof obj !== 'object') return;
      const own = Object.getOwnPropertyDescriptor(obj, key);
      if (own && (!own.configurable || own.get || own.set)) return;
      let value = own ? own.value : undefined;
      Object.defineProperty(obj, key, {
        configurable: true,
        // absent until written: key enumeration stays as vitest would have it
        enumerable: !!own,
        get() {
          return value;
        },
        set(v) {
          value = v;
          if (!Object.getOwnPropertyDescriptor(obj, key).enumerable) {
            Object.defineProperty(obj, key, { enumerable: true });
          }
          try {
            onSet(v);
          } catch (_) {}
        },
      });
    }
    function watchPhases(test) {
      const [id] = idOf(test);
      const phase = (p) => emit('phase', Object.assign({ test: id, phase: p }, scoped()));
      const onHooks = (hooks) => {
        watchProp(hooks, 'beforeEach', (state) => phase(state === 'run' ? 'setup' : 'call'));
        watchProp(hooks, 'afterEach', (state) => {
          if (state === 'run') phase('teardown');
        });
      };
      const onResult = (result) => {
        if (!result || typeof result !== 'object') return;
        if (result.hooks) onHooks(result.hooks);
        watchProp(result, 'hooks', onHooks);
      };
      onResult(test.result);
      watchProp(test, 'result', onResult);
    }
    function skippedOf(file) {
      const walk = (task) => {
        if (task.type === 'test') {
          if (!started.has(task)) {
            const [id, rel] = idOf(task);
            const t = process.hrtime.bigint();
            emit('start', Object.assign({ test: id, runner: 'vitest', file: rel }, scoped()), t);
            emit('end', Object.assign({ test: id, outcome: 'skipped' }, scoped()), t);
            started.add(task);
          }
        } else if (Array.isArray(task.tasks)) task.tasks.forEach(walk);
      };
      walk(file);
    }
    function onCurrent(prev, next) {
      if (prev && prev.type === 'test' && prev !== next && started.has(prev)) {
        const [id] = idOf(prev);
        const d = prev.result && prev.result.duration;
        emit('end', Object.assign({ test: id, outcome: outcome(prev), duration_s: typeof d === 'number' ? d / 1000 : undefined }, scoped()));
      }
      if (next && next.file) files.add(next.file);
      if (next && next.type === 'test' && next !== prev) {
        const [id, rel] = idOf(next);
        if (!role) {
          role = true;
          const n = process.env.VITEST_POOL_ID || process.env.VITEST_WORKER_ID;
          emit('process', { runner: 'vitest', role: 'vitest worker ' + (n || '?') });
        }
        started.add(next);
        emit('start', Object.assign({ test: id, runner: 'vitest', file: rel }, scoped()));
        emit('phase', Object.assign({ test: id, phase: 'call' }, scoped()));
        try {
          watchPhases(next);
        } catch (_) {}
      }
      if (next === undefined) {
        for (const f of files) skippedOf(f);
        files.clear();
      }
    }
    function watchState(state) {
      if (!state || typeof state !== 'object' || state.__nettrap) return;
      let current = state.current;
      Object.defineProperty(state, '__nettrap', { value: true });
      Object.defineProperty(state, 'current', {
        configurable: true,
        enumerable: true,
        get() {
          return current;
        },
        set(next) {
          const prev = current;
          current = next;
          try {
            onCurrent(prev, next);
          } catch (_) {}
        },
      });
    }
    const define = Object.defineProperty;
    const watching = function defineProperty(obj, key, desc) {
      const result = define(obj, key, desc);
      if (key === '__vitest_worker__' && desc && desc.value) {
        try {
          watchState(desc.value);
        } catch (_) {}
      }
      return result;
    };
    define(watching, 'name', { value: 'defineProperty' });
    Object.defineProperty = watching;
  }

  try {
    hookVitest();
  } catch (e) {
    failed('vitest', 'cannot hook vitest: ' + (e && e.message));
  }
})();
