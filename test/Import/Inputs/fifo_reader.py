#!/usr/bin/env python3
"""fifo_reader.py FIFO OUT -- CMD...: runs CMD while a thread copies what
arrives on FIFO into OUT; exits with CMD's status, or 1 when FIFO is no
longer a FIFO afterwards (a tool replaced it by a regular file)."""
import os
import stat
import subprocess
import sys
import threading

fifo, out = sys.argv[1], sys.argv[2]
cmd = sys.argv[sys.argv.index("--") + 1:]


def reader():
    # Opening for reading blocks until the writer opens its end.
    with open(fifo, "rb") as src, open(out, "wb") as dst:
        dst.write(src.read())


t = threading.Thread(target=reader, daemon=True)
t.start()
# The writer refuses a FIFO with no reader: wait until ours is blocked in
# open() before starting the command.
import time
time.sleep(0.5)
status = subprocess.run(cmd, timeout=300).returncode
t.join(timeout=60)
if t.is_alive():
    sys.exit("the reader saw no end of file")
if not stat.S_ISFIFO(os.lstat(fifo).st_mode):
    sys.exit(f"{fifo} is no longer a FIFO")
sys.exit(status)
