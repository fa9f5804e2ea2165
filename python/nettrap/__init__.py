"""nettrap: find, and control, the tests in a suite that talk to the network.

The `nettrap` command is the binary this wheel installs beside this package. The package holds
the pytest plugin behind `pytest --nettrap` (`nettrap.pytest_plugin`) and `binary()`, which finds
that command. Importing it imports nothing (pytest loads it in every session).
"""


def binary():
    """The `nettrap` command of this installation: the scripts directory of the environment this
    package is installed in first (a virtual environment need not be activated), then the user
    scheme's, then PATH; None if there is none."""
    import os
    import shutil
    import sys
    import sysconfig

    dirs = [sysconfig.get_path("scripts"), os.path.dirname(sys.executable)]
    try:
        dirs.append(sysconfig.get_path("scripts", "posix_user"))
    except KeyError:
        pass
    for d in dirs:
        path = os.path.join(d, "nettrap") if d else None
        if path and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    return shutil.which("nettrap")
