"""
User errors, the one way: every config and command line checks its input before any work, and a
bad input ends as ONE line on stderr and exit status 2 (argparse's convention), never a traceback.

- Configs (RLConfig, CotConfig, SFTConfig, ...) call `check_int` / `check_float` in __post_init__,
  so library users get the same ValueError as the command line.
- Every entry point parses with `ArgumentParser` (one-line argparse errors) and runs under `run`:

      if __name__ == "__main__":
          run(main)

  `run` turns a ValueError (a user error; its message says what to do) or an OSError (a path that
  cannot be read or written; it names the path) into `prog: error: message` and exit status 2.
  Anything else is a bug and keeps its traceback.

This module imports nothing of the project, so every file may use it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Callable, NoReturn


def _named(name: str, value) -> str:
    """'--steps 0' for a flag, 'steps=0' for a config field."""
    return f"{name} {value!r}" if name.startswith("--") else f"{name}={value!r}"


def check_int(name: str, value, lo: int = 1, hint: str = "") -> None:
    """ValueError unless `value` is an integer >= lo (a bool is not an integer here)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise ValueError(f"{_named(name, value)}: must be an integer >= {lo}" + (f" ({hint})" if hint else ""))


def check_float(name: str, value, lo: float = 0.0, strict: bool = True, hint: str = "") -> None:
    """ValueError unless `value` is a finite number > lo (>= lo with strict=False). NaN and inf are
    refused: NaN compares False with everything, so a plain `value <= 0` check lets it through."""
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= lo if strict else value < lo):
        raise ValueError(f"{_named(name, value)}: must be a finite number {'>' if strict else '>='} {lo}"
                         + (f" ({hint})" if hint else ""))


def check_out_dir(path: str, flag: str) -> None:
    """A directory the command will write into: refused if it is empty, a file, cannot be created
    below an existing file, or exists and is not writable (checked before any work, not after the
    training)."""
    if not path:
        raise ValueError(f"{flag} '': give a directory")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a file, not a directory; give a directory")
    if os.path.isdir(path) and not os.access(path, os.W_OK):
        raise ValueError(f"{flag} {path}: not writable; give a directory you can write to")
    _check_parent(path, flag)


def check_out_file(path: str, flag: str) -> None:
    """A file the command will write: refused if it is a directory, its folder cannot be made, or
    the nearest existing folder is not writable (checked before any work, not at the first save)."""
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a directory; give a file name")
    folder = _check_parent(os.path.dirname(os.path.abspath(path)), flag)
    if not os.access(folder, os.W_OK):
        raise ValueError(f"{flag} {path}: {folder} is not writable; give a path you can write to")


def check_in_file(path: str, flag: str, hint: str = "") -> None:
    """A file the command will read: it must exist and be a file."""
    if not os.path.exists(path):
        raise ValueError(f"{flag} {path}: no such file" + (f"; {hint}" if hint else ""))
    if os.path.isdir(path):
        raise ValueError(f"{flag} {path}: is a directory; give a file")


def _check_parent(path: str, flag: str) -> str:
    """The nearest existing ancestor of `path` (itself included), which must be a directory."""
    p = os.path.abspath(path)
    while not os.path.exists(p):
        p = os.path.dirname(p)
    if not os.path.isdir(p):
        raise ValueError(f"{flag} {path}: {p} is a file, so the directory cannot be created")
    return p


def read_json_object(path: str) -> dict:
    """The JSON object in file `path`; ValueError naming the file when it is not UTF-8 JSON or holds
    another JSON value (a list, a number, ...)."""
    try:
        with open(path, encoding="utf-8") as f:
            obj = json.load(f)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{path} must hold a JSON object, not a JSON {type(obj).__name__}")
    return obj


def make_out_dir(path: str, flag: str) -> None:
    """Create the directory a command is about to write into (check_out_dir first); ValueError
    saying what to do when it cannot be created."""
    try:
        os.makedirs(path, exist_ok=True)
    except OSError as e:
        raise ValueError(f"{flag} {path}: cannot be created ({e.strerror}); give a directory you can write to") from None


def check_device(name: str) -> None:
    """'auto' or a torch device string whose device exists here."""
    if name == "auto":
        return
    import torch
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device {name!r}: not a device; use auto, cpu, cuda, cuda:1 or mps") from None
    if device.type == "meta":
        raise ValueError(f"--device {name}: the meta device holds shapes but no data, so nothing can be computed "
                         "on it; use auto, cpu, cuda, cuda:1 or mps")
    if device.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"--device {name}: {device.type} devices are not supported; use auto, cpu, cuda, cuda:1 "
                         "or mps")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {name}: no CUDA device here; use --device cpu (or auto)")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"--device {name}: there are {torch.cuda.device_count()} CUDA devices here")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"--device {name}: no MPS device here; use --device cpu (or auto)")
    if device.type == "mps" and device.index not in (None, 0):
        raise ValueError(f"--device {name}: there is one MPS device; use --device mps")


def available_memory(device) -> int | None:
    """Bytes that new tensors on `device` can take: the free memory of a CUDA device; else the
    host's (MPS shares it): Linux's MemAvailable, capped by the cgroup limit of a container.
    None where it cannot be read (then no size is refused)."""
    import torch
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            free = next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None
    try:
        with open("/sys/fs/cgroup/memory.max") as f, open("/sys/fs/cgroup/memory.current") as g:
            limit = f.read().strip()
            if limit != "max":
                free = min(free, int(limit) - int(g.read()))
    except (OSError, ValueError):
        pass
    return free


def _bytes(n: float) -> str:
    """'3.2 GB' (decimal units)."""
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} TB"


def check_fits(what: str, need: int, device="cpu", hint: str = "") -> None:
    """ValueError when `need` bytes (a lower bound of what `what` takes) exceed the memory available
    on `device`, so that a size that cannot fit is refused before any work instead of ending in
    an allocator's traceback (or in swapping) later."""
    free = available_memory(device)
    if free is not None and need > free:
        raise ValueError(f"{what} needs at least {_bytes(need)} of memory, but {_bytes(free)} is available on "
                         f"{device}" + (f"; {hint}" if hint else ""))


def fail(prog: str, message) -> NoReturn:
    """Print `prog: error: message` as one line on stderr and exit with status 2."""
    sys.stderr.write(f"{prog}: error: {' '.join(str(message).split())}\n")
    sys.exit(2)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one line too (the stock parser prints its whole usage first,
    dozens of lines for rlvr.py); `--help` still shows everything."""

    def error(self, message: str) -> NoReturn:
        fail(self.prog, f"{message} (see --help)")


def run(main: Callable[[], None]) -> None:
    """Call an entry point; a user error ends as one line and exit status 2 (see the top)."""
    try:
        main()
    except (ValueError, OSError) as e:
        fail(os.path.basename(sys.argv[0]), e)
    except KeyboardInterrupt:  # Ctrl-C: finished work is cached or checkpointed; say so, no traceback
        sys.stderr.write(f"{os.path.basename(sys.argv[0])}: interrupted; run the same command again to resume\n")
        sys.exit(130)
