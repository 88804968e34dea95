"""Loupe promises offline: no command of the CLI makes a DNS lookup or opens a connection.

Every sub-command runs in a child process guarded by ``tests/engine/offline_guard.py``:
an audit hook ends it on any Python-level ``socket.connect`` / ``getaddrinfo`` /
``gethostby*``, and on Linux a seccomp filter kills it (SIGSYS) when native code creates
an internet socket, which every connection and every DNS query sent needs — onnxruntime's
C++ telemetry included, which no audit hook sees. No external tool (strace) is needed, so
nothing is skipped. ONNX export also runs in a fresh process with onnxruntime imported
before torch, the order the export command uses (that order made onnxruntime look up its
telemetry host seconds after an export).

Two tests prove the guard itself is live: a lookup from Python and a socket from C, each
in a guarded child, must end that child.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.engine import offline_guard

ROOT = Path(__file__).resolve().parents[2]
NATIVE = sys.platform == "linux"  # where the seccomp level is installed

PRELUDE = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    from tests.engine import offline_guard
    print("guard:", offline_guard.install(), flush=True)
""")


def _guarded(script: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run ``script`` after the guard in a child Python; its argv[2:] are ``args``."""
    return subprocess.run(
        [sys.executable, "-c", PRELUDE + textwrap.dedent(script), str(ROOT), *args],
        capture_output=True, text=True, timeout=timeout,
    )


def _verdict(done: subprocess.CompletedProcess) -> str:
    if done.returncode == offline_guard.PYTHON_EXIT:
        return "network access from Python"
    if done.returncode == -offline_guard.NATIVE_SIGNAL:
        return "an internet socket from native code"
    return f"exit code {done.returncode}"


def _assert_offline_success(done: subprocess.CompletedProcess) -> None:
    expected = "guard: python+native" if NATIVE else "guard: python"
    assert expected in done.stdout, done.stdout[-2000:] + done.stderr[-2000:]
    assert done.returncode == 0, (
        f"{_verdict(done)}\n--- stdout\n{done.stdout[-3000:]}\n--- stderr\n{done.stderr[-3000:]}"
    )


# --------------------------------------------------------------------------- the guard


def test_the_guard_ends_a_process_that_looks_up_a_name_from_python():
    done = _guarded("""
        import socket
        try:
            socket.getaddrinfo("example.com", 80)
        except Exception:
            pass  # a library swallowing the error must not hide the lookup
        print("still running")
    """, timeout=60)
    assert done.returncode == offline_guard.PYTHON_EXIT, done.stderr[-1000:]
    assert "socket.getaddrinfo" in done.stderr and "still running" not in done.stdout


def test_the_guard_kills_a_process_whose_native_code_makes_an_internet_socket():
    done = _guarded("""
        import ctypes, socket
        socket.socketpair()  # stays inside the process: allowed
        print("socketpair ok", flush=True)
        ctypes.CDLL(None).socket(socket.AF_INET6, socket.SOCK_DGRAM, 0)  # as a resolver does
        print("still running", flush=True)
    """, timeout=60)
    assert "socketpair ok" in done.stdout, done.stderr[-1000:]
    if NATIVE:
        assert done.returncode == -offline_guard.NATIVE_SIGNAL, _verdict(done)
        assert "still running" not in done.stdout
    else:  # no native level here: the Python level is what the other tests rely on
        assert done.returncode == 0 and "still running" in done.stdout


# --------------------------------------------------------------------------- every command

EVERY_COMMAND = """
    import shutil, time
    from pathlib import Path
    from loupe.engine.cli import main
    from loupe.engine.core.resources import sample_dir

    tmp = Path(sys.argv[2])
    DATA = (str(sample_dir()), "--label", "upper", "--subset", "0.3", "--test-fraction", "0.2")
    TINY = ("--size", "32", "--bs", "32", "--threads", "2")
    model = tmp / "m.loupe"
    images = sorted(p for p in sample_dir().iterdir() if p.suffix == ".png")[:3]
    folder = tmp / "some"
    folder.mkdir()
    for image in images:
        shutil.copy(image, folder / image.name)

    def run(*argv):
        code = main(list(argv))
        if code:
            sys.exit(f"loupe {' '.join(argv)} exited {code}")
        print("ran:", argv[0], flush=True)

    run("inspect", *DATA)
    run("train", *DATA, *TINY, "--arch", "resnet18", "--pretrained", "none",
        "--epochs", "1", "--freeze-epochs", "0", "--out", str(model))
    run("train", *DATA, *TINY, "--epochs", "1", "--freeze-epochs", "0",
        "--out", str(tmp / "default.loupe"))
    run("lr-find", *DATA, "--subset", "0.1", *TINY, "--arch", "resnet18",
        "--pretrained", "none", "--plot", str(tmp / "lr.png"))
    run("evaluate", str(model), str(sample_dir()), "--subset", "0.3", "--test")
    run("predict", str(model), str(images[0]))
    run("predict", str(model), str(images[0]), "--cam", str(tmp / "cam.png"))
    run("predict", "--imagenet", str(images[0]))
    run("predict-folder", str(model), str(folder), "--csv", str(tmp / "p.csv"))
    run("analyze", str(model), str(sample_dir()), "--subset", "0.3",
        "--out", str(tmp / "analysis"))
    run("export", str(model), "--onnx", str(tmp / "m.onnx"),
        "--torchscript", str(tmp / "m.pt"))
    run("weights", "list")
    run("weights", "import", sys.argv[3], "--arch", "resnet18")
    time.sleep(6)  # onnxruntime's telemetry uploads from a timer, seconds after an export
    print("all commands done", flush=True)
"""


def test_every_cli_command_stays_offline(tmp_path):
    weights = _resnet18_weights(tmp_path / "resnet18.safetensors")
    work = tmp_path / "work"
    work.mkdir()
    done = _guarded(EVERY_COMMAND, str(work), str(weights))
    _assert_offline_success(done)
    ran = [line.split(": ", 1)[1] for line in done.stdout.splitlines() if line.startswith("ran:")]
    assert ran == ["inspect", "train", "train", "lr-find", "evaluate", "predict", "predict",
                   "predict", "predict-folder", "analyze", "export", "weights", "weights"]
    assert "all commands done" in done.stdout


def _resnet18_weights(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from loupe.engine.models.factory import create_model

    torch.manual_seed(0)
    state = create_model("resnet18", 1000).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


EXPORT_ONLY = """
    import time
    from loupe.engine.cli import main
    from loupe.engine.inference.export import require_onnx
    require_onnx()  # onnxruntime first, then torch: the order the export command uses
    code = main(["export", sys.argv[2], "--onnx", sys.argv[3]])
    time.sleep(6)  # onnxruntime's telemetry uploads from a timer, seconds later
    sys.exit(code)
"""


def test_onnx_export_in_a_fresh_process_sets_no_telemetry_dns(tmp_path):
    """onnxruntime's 1DS telemetry (native code) looked up mobile.events.data.microsoft.com
    a few seconds after an export, with onnxruntime imported before torch."""
    from tests.engine.predict_helpers import make_bundle

    model = make_bundle(tmp_path / "m.loupe", size=32)
    done = _guarded(EXPORT_ONLY, str(model), str(tmp_path / "m.onnx"), timeout=300)
    _assert_offline_success(done)
    assert (tmp_path / "m.onnx").is_file()
    env = subprocess.run(
        [sys.executable, "-c", "import os; from loupe.engine.inference.export import "
         "require_onnx; require_onnx(); print(os.environ.get('ORT_DISABLE_TELEMETRY'))"],
        capture_output=True, text=True, timeout=60,
    )
    assert env.stdout.strip() == "1", env.stderr[-2000:]

