#!/usr/bin/env python3
"""Breaks a model folder in one precise way, for the bad-input tests.

  corrupt.py truncate FILE NBYTES         keep only the first NBYTES
  corrupt.py header-len FILE N            overwrite the 8-byte header length
  corrupt.py header-shift FILE D          add D (may be negative) to it
  corrupt.py header FILE PYEXPR           rewrite the JSON header: PYEXPR
                                          edits `h` (a dict) in place
  corrupt.py deep-header FILE N           a header of N nested arrays
  corrupt.py json FILE PYEXPR             edit a JSON file: PYEXPR edits `j`
  corrupt.py text FILE TEXT               replace a file's content
"""
import json
import struct
import sys


def read_header(path):
    data = open(path, "rb").read()
    n = struct.unpack("<Q", data[:8])[0]
    return json.loads(data[8:8 + n]), data[8 + n:]


def main():
    cmd, path = sys.argv[1], sys.argv[2]
    if cmd == "truncate":
        data = open(path, "rb").read()
        open(path, "wb").write(data[:int(sys.argv[3])])
    elif cmd == "header-len":
        data = bytearray(open(path, "rb").read())
        data[:8] = struct.pack("<Q", int(sys.argv[3]))
        open(path, "wb").write(bytes(data))
    elif cmd == "header-shift":
        data = bytearray(open(path, "rb").read())
        n = struct.unpack("<Q", data[:8])[0] + int(sys.argv[3])
        data[:8] = struct.pack("<Q", n)
        open(path, "wb").write(bytes(data))
    elif cmd == "header":
        h, body = read_header(path)
        exec(sys.argv[3], {"h": h})
        text = json.dumps(h).encode()
        text += b" " * (-len(text) % 8)
        open(path, "wb").write(struct.pack("<Q", len(text)) + text + body)
    elif cmd == "deep-header":
        n = int(sys.argv[3])
        text = b"[" * n + b"]" * n
        open(path, "wb").write(struct.pack("<Q", len(text)) + text)
    elif cmd == "json":
        j = json.load(open(path))
        exec(sys.argv[3], {"j": j})
        json.dump(j, open(path, "w"), indent=1)
    elif cmd == "text":
        open(path, "w").write(sys.argv[3])
    else:
        sys.exit("unknown command " + cmd)


if __name__ == "__main__":
    main()
