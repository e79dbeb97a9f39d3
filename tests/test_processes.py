import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from ingest.processes import give_back_memory, process_pool

PARENT = textwrap.dedent("""
    import os, sys, time
    from ingest.processes import process_pool
    pool = process_pool("kb-test", 2)
    jobs = [pool.submit(TASK) for _ in range(2)]  # both helpers busy, as in a long write
    time.sleep(0.5)
    print(" ".join(str(pid) for pid in pool._processes), flush=True)
    time.sleep(600)
""")
SLEEP = "time.sleep, 600"
# A C loop that never lets go of the GIL, as Chroma's embedded client holds it for a whole write: a watcher
# thread in the helper cannot run until it ends.
HOLDS_GIL = "sum, range(10**13)"


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_helpers_are_named_and_do_their_work():
    with process_pool("kb-test", 1) as pool:
        assert pool.submit(os.getpid).result() != os.getpid()
        pid = pool.submit(os.getpid).result()
        with open(f"/proc/{pid}/comm") as handle:
            assert handle.read().strip() == "kb-test"
        assert pool.submit(give_back_memory).result() is None


@pytest.mark.parametrize("task", [SLEEP, HOLDS_GIL], ids=["sleeping", "holding-the-gil"])
def test_helpers_end_when_kb_is_killed_mid_task(task):
    """kill -9 of kb must not leave a store process writing, or a worker parsing, behind it."""
    parent = subprocess.Popen([sys.executable, "-c", PARENT.replace("TASK", task)], stdout=subprocess.PIPE, text=True,
                              cwd=os.path.dirname(os.path.dirname(__file__)))
    helpers = [int(pid) for pid in parent.stdout.readline().split()]
    assert len(helpers) == 2 and all(_alive(pid) for pid in helpers)
    parent.send_signal(signal.SIGKILL)
    parent.wait()
    deadline = time.monotonic() + 30  # a bound for a loaded machine, not a speed claim
    while any(_alive(pid) for pid in helpers) and time.monotonic() < deadline:
        time.sleep(0.1)
    left = [pid for pid in helpers if _alive(pid)]
    for pid in left:  # a failed run must not leave a helper spinning for hours
        os.kill(pid, signal.SIGKILL)
    assert not left
