"""nettrap's Python start-up hook (only on PYTHONPATH inside `nettrap run`).

Python imports the first `sitecustomize` on sys.path at start-up (unless -S or -I). nettrap
puts this one first, loads its runner adapter (`_nettrap_adapter`), then runs the project's
own `sitecustomize`, if any, exactly as Python would have: the adapter never shadows it.
"""


def _nettrap_start():
    import os
    import sys

    here = os.path.dirname(os.path.abspath(__file__))
    try:
        if sys.version_info >= (3, 8):  # audit hooks, monotonic_ns; older ones run untouched
            import _nettrap_adapter

            _nettrap_adapter.install()
    except Exception as e:  # never break the user's program
        why = "not loaded (%s: %s)" % (type(e).__name__, e)
        try:
            # nettrap says it once for the run, after the command (see `tell_failure`).
            adapter = sys.modules.get("_nettrap_adapter")
            if adapter is not None and hasattr(adapter, "tell_failure"):
                adapter.tell_failure("python", why)
            else:
                import json
                import time

                line = json.dumps({"ev": "adapter", "t": time.monotonic_ns(), "pid": os.getpid(),
                                   "runner": "python", "status": "failed", "why": why})
                path = os.path.join(os.environ["NETTRAP_RUN_DIR"], "adapter-failures.jsonl")
                fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
                try:
                    os.write(fd, (line + "\n").encode())
                finally:
                    os.close(fd)
        except Exception:
            pass
    # Chain to the next sitecustomize on sys.path, as if ours were not there.
    try:
        import importlib.machinery
        import importlib.util

        rest = [p for p in sys.path if os.path.abspath(p or os.curdir) != here]
        spec = importlib.machinery.PathFinder.find_spec("sitecustomize", rest)
        if spec is not None and spec.loader is not None:
            module = importlib.util.module_from_spec(spec)
            sys.modules["sitecustomize"] = module
            spec.loader.exec_module(module)
    except Exception as e:
        # What site.py itself prints when a sitecustomize fails.
        sys.stderr.write("Error in sitecustomize; set PYTHONVERBOSE for traceback:\n"
                         "%s: %s\n" % (type(e).__name__, e))


_nettrap_start()
del _nettrap_start
