"""bnas_tf.memory: the malloc-arena cap of the search program."""

from __future__ import annotations

from bnas_tf import memory

import subprocess
import sys
import textwrap

import pytest

# Threads that allocate with malloc, then glibc's own report of its arenas (stderr).
_PROBE = textwrap.dedent(
    """
    import ctypes, sys, threading
    from bnas_tf.memory import limit_malloc_arenas
    cap = int(sys.argv[1])
    print("set", limit_malloc_arenas(cap), flush=True)
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype = ctypes.c_void_p
    libc.free.argtypes = [ctypes.c_void_p]
    def work():
        for _ in range(50):
            libc.free(libc.malloc(1 << 16))
    threads = [threading.Thread(target=work) for _ in range(6)]
    [t.start() for t in threads]
    [t.join() for t in threads]
    libc.malloc_stats()
    """
)


def _arenas(cap: int) -> tuple[str, int]:
    proc = subprocess.run(
        [sys.executable, "-c", _PROBE, str(cap)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip(), proc.stderr.count("Arena ")


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc_stats")
def test_the_cap_limits_the_arenas_threads_get():
    capped_out, capped = _arenas(1)
    default_out, default = _arenas(0)
    assert capped_out == "set True" and default_out == "set False"
    assert capped == 1  # every thread shares the main arena
    assert default > 1  # glibc's default: new threads get arenas of their own


@pytest.mark.parametrize("bad", [-1, 1.5, True, "2"])
def test_a_bad_arena_count_is_refused_with_its_name(bad):
    with pytest.raises(ValueError, match="malloc arenas must be a non-negative integer"):
        memory.limit_malloc_arenas(bad)
