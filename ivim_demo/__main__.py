import os
import sys

from .cli import main

code = main()
if code == 130:
    # Interrupted, and main has already cleaned up. Exit at once with 130: CPython exits by SIGINT instead of
    # the code given when a KeyboardInterrupt ever escaped code that a C extension ran (even if caught later).
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(130)
sys.exit(code)
