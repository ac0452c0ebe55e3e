import os
import signal
import sys

from .cli import main

code = main()
if code == 130:
    # Interrupted, and main has already cleaned up. Exit at once with 130: CPython exits by SIGINT instead of
    # the code given when a KeyboardInterrupt ever escaped code that a C extension ran (even if caught later).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
# Done, and the outputs written: a Ctrl-C from now on has nothing to stop, and one landing in the libraries'
# exit handlers (dask's) printed their tracebacks.
signal.signal(signal.SIGINT, signal.SIG_IGN)
sys.exit(code)
