"""Where output goes: native log lines held back, progress bars still on the terminal."""

from __future__ import annotations

import os
import subprocess
import sys

CODE = """
import os, sys, time
from catdog import console

def work():
    with console.quiet_stderr():  # as the Ray engine holds fd 2 while it runs
        for i in range(3):
            os.write(2, b"native noise\\n")  # a C++ library's log line
            print("python noise", file=sys.stderr)
            time.sleep(0.2)
            yield i
    if os.environ.get("FAIL"):
        with console.quiet_stderr():
            os.write(2, b"the reason it failed\\n")
            raise RuntimeError("failed")

for _ in console.progress_bar(work(), total=3, unit="img", mininterval=0):
    pass
"""


def _on_a_terminal(**env) -> str:
    """stderr of CODE in a child whose stderr is a terminal (a pty), so that bars are drawn."""
    main, child = os.openpty()
    done = subprocess.run([sys.executable, "-c", CODE], stderr=child, stdout=subprocess.DEVNULL,
                          env={**os.environ, **env}, timeout=60)
    os.close(child)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 65536)
        except OSError:  # the pty's other end is closed: all read
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(main)
    return done.returncode, b"".join(chunks).decode(errors="replace")


def test_native_lines_are_held_back_while_the_bar_still_shows():
    code, seen = _on_a_terminal()
    assert code == 0
    assert "3/3" in seen and "img" in seen  # the bar, drawn while fd 2 was held
    assert "native noise" not in seen and "python noise" not in seen


def test_what_was_held_is_shown_when_the_block_fails():
    code, seen = _on_a_terminal(FAIL="1")
    assert code == 1 and "the reason it failed" in seen and "RuntimeError: failed" in seen


THREADS = """
import os, threading, time
from catdog import console

held = threading.Event()

def warm_up():  # a server's background warm-up, in a native library that logs
    with console.quiet_stderr():
        held.set()
        time.sleep(0.5)

worker = threading.Thread(target=warm_up)
worker.start()
held.wait()
os.write(2, b"Uvicorn running on http://127.0.0.1:8000\\n")  # the main thread meanwhile
worker.join()
"""


def test_a_hold_taken_off_the_main_thread_swallows_nothing_the_main_thread_writes():
    done = subprocess.run([sys.executable, "-c", THREADS], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert "Uvicorn running on http://127.0.0.1:8000" in done.stderr
