"""A process that must stay offline: any network or name lookup ends it at once.

``install()`` is called first thing in a child Python process (see test_offline.py):

- Python level: an audit hook sees ``socket.connect``, ``socket.getaddrinfo`` and the
  ``gethostby*`` family (a library's ``try/except`` cannot swallow it: the process exits
  with :data:`PYTHON_EXIT` and names the call on stderr).
- Native level, on Linux: a seccomp filter (installed through ctypes: no tool, no
  package) kills the process with SIGSYS when anything — onnxruntime's C++ telemetry
  included — creates an internet socket (AF_INET, AF_INET6): every connection and every
  DNS query sent by this process needs one. Unix-domain sockets stay allowed (glibc asks
  nscd for user names through one); a host lookup answered by a local daemon over such
  a socket (nscd, systemd-resolved's varlink) is the one thing this level cannot see.

Either way the parent sees a non-zero exit instead of a silent lookup.
"""

from __future__ import annotations

import ctypes
import os
import platform
import signal
import struct
import sys

PYTHON_EXIT = 97
NATIVE_SIGNAL = signal.SIGSYS
_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
           "socket.gethostbyname_ex", "socket.gethostbyaddr", "socket.bind")

# seccomp: (AUDIT_ARCH_*, __NR_socket) per machine
_ARCHES = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}
_FAMILIES = (2, 10)  # AF_INET, AF_INET6
_LD_W_ABS, _JEQ_K, _RET_K = 0x20, 0x15, 0x06
_ALLOW, _KILL_PROCESS = 0x7FFF0000, 0x80000000
_PR_SET_NO_NEW_PRIVS, _PR_SET_SECCOMP, _SECCOMP_MODE_FILTER = 38, 22, 2


def _audit(event: str, args: tuple) -> None:
    if event in _EVENTS:
        os.write(2, f"\nOFFLINE GUARD: {event} {args!r}\n".encode(errors="replace"))
        os._exit(PYTHON_EXIT)


def _op(code: int, jt: int, jf: int, k: int) -> bytes:
    return struct.pack("HBBI", code, jt, jf, k)


def _filter_program(arch: int, nr_socket: int) -> bytes:
    n = len(_FAMILIES)
    checks = [_op(_JEQ_K, n - i, 0, family) for i, family in enumerate(_FAMILIES)]
    return b"".join([
        _op(_LD_W_ABS, 0, 0, 4),                 # seccomp_data.arch
        _op(_JEQ_K, 0, 3 + n, arch),             # another ABI: allow
        _op(_LD_W_ABS, 0, 0, 0),                 # seccomp_data.nr
        _op(_JEQ_K, 0, 1 + n, nr_socket),        # not socket(): allow
        _op(_LD_W_ABS, 0, 0, 16),                # args[0] (low half): the family
        *checks,                                 # a family we refuse: kill
        _op(_RET_K, 0, 0, _ALLOW),
        _op(_RET_K, 0, 0, _KILL_PROCESS),
    ])


class _SockFprog(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]


def _install_seccomp() -> None:
    arch, nr_socket = _ARCHES[platform.machine()]
    program = _filter_program(arch, nr_socket)
    buffer = ctypes.create_string_buffer(program, len(program))
    fprog = _SockFprog(len(program) // 8, ctypes.addressof(buffer))
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(_PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_NO_NEW_PRIVS) failed")
    if libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(fprog), 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_SECCOMP) failed")


def install() -> str:
    """Guard this process; returns which levels are guarded ("python+native" on Linux)."""
    sys.addaudithook(_audit)
    if sys.platform == "linux" and platform.machine() in _ARCHES:
        _install_seccomp()
        return "python+native"
    return "python"
