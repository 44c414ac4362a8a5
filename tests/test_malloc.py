"""glibc malloc tuning (edgeml/transport/malloc.py) and the CLI flag that turns it off."""

from __future__ import annotations

import platform
import subprocess
import sys
import textwrap

import pytest

from edgeml import cli
from edgeml.transport import malloc

glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="needs glibc"
)

# In a fresh interpreter: is an 8 MiB malloc served by mmap (counted in mallinfo2's hblkhd)
# before and after tune_malloc()? Tuning must move it onto the heap, where a free keeps it.
_PROBE = textwrap.dedent(
    """
    import ctypes, json
    from edgeml.transport.malloc import tune_malloc

    class MallInfo2(ctypes.Structure):
        _fields_ = [(n, ctypes.c_size_t) for n in
                    ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                     "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = MallInfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = (ctypes.c_size_t,)
    libc.free.argtypes = (ctypes.c_void_p,)

    def mmapped_by_8mib_malloc():
        before = libc.mallinfo2().hblkhd
        p = libc.malloc(8 << 20)
        grew = libc.mallinfo2().hblkhd - before
        libc.free(p)
        return grew >= 8 << 20

    out = {"before": mmapped_by_8mib_malloc(), "applied": tune_malloc(),
           "again": tune_malloc()}
    out["after"] = mmapped_by_8mib_malloc()
    print(json.dumps(out))
    """
)


@glibc_only
def test_tune_malloc_keeps_big_buffers_off_mmap() -> None:
    import json

    res = subprocess.run(
        [sys.executable, "-c", _PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    out = json.loads(res.stdout.strip().splitlines()[-1])
    assert out == {"before": True, "applied": True, "again": True, "after": False}


def test_tune_malloc_disabled_is_a_no_op() -> None:
    assert malloc.tune_malloc(enabled=False) is False


class _Called(Exception):
    pass


@pytest.mark.parametrize("flag, expected", [([], True), (["--no-malloc-tuning"], False)])
def test_serve_cli_passes_the_flag(monkeypatch, tmp_path, flag, expected) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(malloc, "tune_malloc", lambda enabled=True: seen.append(enabled))
    from edgeml.transport import server

    def fake_serve(config, ready=None):
        raise _Called

    monkeypatch.setattr(server, "serve", fake_serve)
    with pytest.raises(_Called):
        cli.main(["serve", str(tmp_path), "--port", "0", *flag])
    assert seen == [expected]


@pytest.mark.parametrize("flag, expected", [([], True), (["--no-malloc-tuning"], False)])
def test_edge_cli_passes_the_flag(monkeypatch, tmp_path, flag, expected) -> None:
    seen: list[bool] = []
    monkeypatch.setattr(malloc, "tune_malloc", lambda enabled=True: seen.append(enabled))
    from edgeml.runtime import edge

    def fake_run_edge(config):
        raise _Called

    monkeypatch.setattr(edge, "run_edge", fake_run_edge)
    argv = ["edge", str(tmp_path), "--cloud", "127.0.0.1:1", "--policy", "edge_only", *flag]
    with pytest.raises(_Called):
        cli.main(argv)
    assert seen == [expected]
