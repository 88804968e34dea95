"""Loupe promises offline: no command of the CLI makes a DNS lookup or opens a connection.

Every sub-command runs through ``loupe.engine.cli.main`` with an audit hook that refuses
``socket.connect``, ``socket.getaddrinfo`` and ``socket.gethostbyname`` to anything but
this machine (audit hooks cannot be removed, so the hook is gated on a flag). Native code
(onnxruntime's telemetry) does not raise audit events, so ONNX export is also run in a
fresh process, with onnxruntime imported before torch as the CLI does, under strace when
it is installed.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from loupe.engine.cli import main
from loupe.engine.core.resources import sample_dir

_GUARD = False
_SEEN: list[str] = []
_LOCAL_HOSTS = {None, "", "localhost", "127.0.0.1", "::1", b"localhost", b"127.0.0.1", b"::1"}
_EVENTS = ("socket.connect", "socket.getaddrinfo", "socket.gethostbyname",
           "socket.gethostbyname_ex", "socket.gethostbyaddr")


def _is_local(event: str, args: tuple) -> bool:
    if event == "socket.connect":
        address = args[1]
        if isinstance(address, str | bytes):  # AF_UNIX
            return True
        host = address[0] if isinstance(address, tuple) and address else None
    else:
        host = args[0] if args else None
    return host in _LOCAL_HOSTS


def _audit(event: str, args: tuple) -> None:
    if _GUARD and event in _EVENTS and not _is_local(event, args):
        _SEEN.append(f"{event} {args!r}")
        raise RuntimeError(f"network access attempted during an offline test: {event}")


sys.addaudithook(_audit)


@pytest.fixture
def guard():
    global _GUARD
    _SEEN.clear()
    _GUARD = True
    try:
        yield _SEEN
    finally:
        _GUARD = False


DATA = (str(sample_dir()), "--label", "upper", "--subset", "0.3", "--test-fraction", "0.2")
TINY = ("--size", "32", "--bs", "32", "--threads", "2")


def _run(capsys, *argv: str) -> str:
    code = main(list(argv))
    out, err = capsys.readouterr()
    assert code == 0, f"loupe {' '.join(argv)} exited {code}: {err}"
    return out


def test_every_cli_command_stays_offline(guard, tmp_path, capsys):
    with pytest.raises(RuntimeError):  # the guard is live
        socket.getaddrinfo("example.com", 80)
    with pytest.raises(RuntimeError):
        socket.gethostbyname("example.com")
    guard.clear()

    model = tmp_path / "m.loupe"
    images = sorted(p for p in sample_dir().iterdir() if p.suffix == ".png")[:3]
    folder = tmp_path / "some"
    folder.mkdir()
    for image in images:
        shutil.copy(image, folder / image.name)

    _run(capsys, "inspect", *DATA)
    _run(capsys, "train", *DATA, *TINY, "--arch", "resnet18", "--pretrained", "none",
         "--epochs", "1", "--freeze-epochs", "0", "--out", str(model))
    _run(capsys, "train", *DATA, *TINY, "--epochs", "1", "--freeze-epochs", "0",
         "--out", str(tmp_path / "default.loupe"))
    _run(capsys, "lr-find", *DATA, "--subset", "0.1", *TINY, "--arch", "resnet18",
         "--pretrained", "none", "--plot", str(tmp_path / "lr.png"))
    _run(capsys, "evaluate", str(model), str(sample_dir()), "--subset", "0.3", "--test")
    _run(capsys, "predict", str(model), str(images[0]))
    _run(capsys, "predict", str(model), str(images[0]), "--cam", str(tmp_path / "cam.png"))
    _run(capsys, "predict", "--imagenet", str(images[0]))
    _run(capsys, "predict-folder", str(model), str(folder), "--csv", str(tmp_path / "p.csv"))
    _run(capsys, "analyze", str(model), str(sample_dir()), "--subset", "0.3",
         "--out", str(tmp_path / "analysis"))
    _run(capsys, "export", str(model), "--onnx", str(tmp_path / "m.onnx"),
         "--torchscript", str(tmp_path / "m.pt"))
    _run(capsys, "weights", "list")
    weights = _resnet18_weights(tmp_path / "resnet18.safetensors")
    _run(capsys, "weights", "import", str(weights), "--arch", "resnet18")
    assert guard == []


def _resnet18_weights(path: Path) -> Path:
    import torch
    from safetensors.torch import save_file

    from loupe.engine.models.factory import create_model

    torch.manual_seed(0)
    state = create_model("resnet18", 1000).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path


EXPORT_SCRIPT = textwrap.dedent("""
    import sys, time
    from loupe.engine.cli import main
    from loupe.engine.inference.export import require_onnx
    require_onnx()  # onnxruntime first, then torch: the order the export command uses
    code = main(["export", sys.argv[1], "--onnx", sys.argv[2]])
    time.sleep(6)  # onnxruntime's telemetry uploads from a timer, seconds later
    sys.exit(code)
""")


def test_onnx_export_in_a_fresh_process_sets_no_telemetry_dns(tmp_path):
    """onnxruntime's 1DS telemetry (native code) looked up mobile.events.data.microsoft.com
    a few seconds after an export; strace sees native connects that audit hooks cannot."""
    from tests.engine.predict_helpers import make_bundle

    model = make_bundle(tmp_path / "m.loupe", size=32)
    script = tmp_path / "export.py"
    script.write_text(EXPORT_SCRIPT, encoding="utf-8")
    strace = shutil.which("strace")
    trace = tmp_path / "trace.txt"
    prefix = [strace, "-f", "-qq", "-e", "trace=connect", "-o", str(trace)] if strace else []
    done = subprocess.run(
        [*prefix, sys.executable, str(script), str(model), str(tmp_path / "m.onnx")],
        capture_output=True, text=True, timeout=120,
    )
    if strace and done.returncode != 0 and ("ptrace" in done.stderr.lower()
                                             or not trace.is_file()):
        pytest.skip(f"strace cannot trace here: {done.stderr[-300:]}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert (tmp_path / "m.onnx").is_file()
    if strace:
        connects = [line for line in trace.read_text().splitlines()
                    if "connect(" in line and "AF_UNIX" not in line and "AF_NETLINK" not in line]
        assert connects == []
    env = subprocess.run(
        [sys.executable, "-c", "import os; from loupe.engine.inference.export import "
         "require_onnx; require_onnx(); print(os.environ.get('ORT_DISABLE_TELEMETRY'))"],
        capture_output=True, text=True, timeout=60,
    )
    assert env.stdout.strip() == "1", env.stderr[-2000:]
    if not strace:
        pytest.skip("strace is not installed: native connects were not checked")
