"""A worker process of the package's process pools ends when its parent dies (it used to finish its task,
minutes of training, with nobody to read the result)."""
import os
import signal
import subprocess
import sys
import time

import pytest

PARENT = r"""
import sys, time
from ivim_demo.core.threads import process_pool

def pid_then_sleep(_):
    import os
    print(os.getpid(), flush=True)
    time.sleep(120)

if __name__ == "__main__":
    with process_pool(1) as pool:
        pool.submit(pid_then_sleep, 0)
        time.sleep(120)
"""


@pytest.mark.skipif(os.name != "posix", reason="the watch is POSIX only")
def test_a_pool_worker_ends_when_its_parent_is_killed(tmp_path):
    script = tmp_path / "parent.py"
    script.write_text(PARENT)
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())  # the worker's pid, printed once it runs its task
    os.kill(worker, 0)  # alive
    parent.send_signal(signal.SIGKILL)
    parent.wait(timeout=10)
    deadline = time.time() + 10
    while time.time() < deadline:
        try:
            os.kill(worker, 0)
        except ProcessLookupError:
            break
        time.sleep(0.2)
    else:
        os.kill(worker, signal.SIGKILL)
        pytest.fail("the worker outlived its parent by 10 s")
