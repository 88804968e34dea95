"""Training under torch.distributed: 2 CPU processes with the gloo backend.

What each rank saw is recorded inside the ranks (their BatchLoader.epoch is wrapped), not
assumed; a rank is killed for real; Ctrl+C reaches the launcher as it would from a
terminal. Tiny colour folders at 32 px keep each multi-process test to seconds.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from PIL import Image

from loupe.engine.cli import main
from loupe.engine.core.errors import ConfigError
from loupe.engine.core.events import (
    Cancelled,
    EpochEnded,
    Failed,
    Finished,
    Progress,
    Started,
    WarningEvent,
)
from loupe.engine.data.dataset import DataSpec, prepare_data
from loupe.engine.data.labels import parse_label_rule
from loupe.engine.data.splits import parse_split_rule
from loupe.engine.training import distributed, launch, launch_worker
from loupe.engine.training.batches import BatchLoader
from loupe.engine.training.rank_loader import RankLoader

REPO = Path(__file__).resolve().parents[2]
SPLIT_SEED = 1


def _folder(root: Path, per_class: int, spread: int, seed: int = 0) -> Path:
    """Two classes of noisy solid colours with some texture; ``spread`` sets the overlap."""
    rng = random.Random(seed)
    for name, base in (("warm", (160, 100, 90)), ("cool", (90, 100, 160))):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            colour = tuple(min(255, max(0, c + rng.randint(-spread, spread))) for c in base)
            img = Image.new("RGB", (40, 40), colour)
            for _ in range(30):
                img.putpixel((rng.randrange(40), rng.randrange(40)),
                             tuple(rng.randrange(256) for _ in range(3)))
            img.save(root / name / f"{name}_{i:03d}.png")
    return root


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    return _folder(tmp_path_factory.mktemp("colours"), 40, 40)


def _prepared(root: Path):
    spec = DataSpec(root, parse_label_rule("parent"),
                    parse_split_rule("random:0.25", seed=SPLIT_SEED))
    return prepare_data(spec)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _env(**extra: str) -> dict[str, str]:
    """The test's environment (its LOUPE_HOME) for a child, with the repo importable."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", **extra)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def _runs() -> list[Path]:
    from loupe.engine.core import paths

    return sorted(p for p in paths.runs_dir().iterdir() if p.is_dir())


# -- sharding, without processes -------------------------------------------------------------


def _loader(n: int, *, train: bool, batch_size: int, seed: int = 7) -> BatchLoader:
    items = [object() for _ in range(n)]
    return BatchLoader(lambda item: torch.zeros(3, 4, 4), items, torch.zeros(n),
                       batch_size=batch_size, train=train, seed=seed)


@pytest.mark.parametrize("world_size", [1, 2, 3])
def test_training_batches_are_dealt_disjoint_equal_and_in_the_one_process_order(world_size):
    n, bs = 53, 4
    whole = _loader(n, train=True, batch_size=bs * world_size)  # the same global batch
    shares = [
        RankLoader.share(_loader(n, train=True, batch_size=bs), r, world_size)
        for r in range(world_size)
    ]
    for epoch in (0, 1, 5):
        per_rank = [share.batch_indices(epoch) for share in shares]
        steps = n // (bs * world_size)
        assert [len(b) for b in per_rank] == [steps] * world_size
        assert all(len(share) == steps for share in shares)
        # each global step is one step of a single process with the global batch size
        for step, global_batch in enumerate(whole.batch_indices(epoch)):
            dealt = [i for batches in per_rank for i in batches[step]]
            assert sorted(dealt) == sorted(global_batch)
            assert len(set(dealt)) == len(dealt)  # no image on two ranks
    # the order changes with the epoch, as on one process
    assert shares[0].batch_indices(0) != shares[0].batch_indices(1)
    # crops draw from per-rank streams; rank 0 keeps the run's own
    assert shares[0].seed == 7 and len({share.seed for share in shares}) == world_size


def test_evaluation_batches_are_contiguous_blocks_that_cover_every_item_once():
    for n, world_size in ((21, 2), (20, 3), (3, 2), (1, 3)):
        whole = _loader(n, train=False, batch_size=4)
        blocks = [
            RankLoader.share(whole, r, world_size)
            for r in range(world_size)
        ]
        order = [i for block in blocks for batch in block.batch_indices(0) for i in batch]
        assert order == list(range(n))
        assert sum(len(block) for block in blocks) == len(whole)


def test_resume_says_how_many_processes_before_and_now(monkeypatch):
    said: list = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    distributed.announce_resume({"world_size": 2, "batch_size": 8}, said.append)
    monkeypatch.setenv("WORLD_SIZE", "4")
    distributed.announce_resume({"world_size": 2, "batch_size": 8}, said.append)
    monkeypatch.setenv("WORLD_SIZE", "1")
    distributed.announce_resume({"batch_size": 8}, said.append)  # one process, as before
    assert [w.code for w in said] == ["world-size", "world-size"]
    assert "resuming on 2 processes, as the run trained before" in said[0].message
    assert "trained on 2 before" in said[1].message and "32 images instead of 16" in said[1].message


def test_nproc_is_a_count_or_one_per_gpu(monkeypatch):
    monkeypatch.setattr(launch, "gpu_count", lambda: 0)
    assert launch.resolve_nproc("2", "cpu") == 2 and launch.resolve_nproc(3, "auto") == 3
    with pytest.raises(ConfigError, match="has none"):
        launch.resolve_nproc("gpus", "auto")
    for bad in ("0", "two"):
        with pytest.raises(ConfigError, match="--nproc"):
            launch.resolve_nproc(bad, "cpu")
    monkeypatch.setattr(launch, "gpu_count", lambda: 4)
    assert launch.resolve_nproc("gpus", "auto") == 4
    with pytest.raises(ConfigError, match="has 4"):
        launch.resolve_nproc("8", "cuda")
    with pytest.raises(ConfigError, match="--device is cpu"):
        launch.resolve_nproc("gpus", "cpu")


def test_events_cross_the_process_boundary_as_json_lines():
    events = [
        Started("train", 3, {"run_dir": "/r", "world_size": 2}),
        Progress("train", 1, 4, "training", epoch=1, loss=0.5, eta_seconds=2.0),
        EpochEnded(1, 3, "scratch", {"error_rate": 0.25, "valid_loss": float("nan")}),
        WarningEvent("world-size", "resuming"),
        Finished("train", {"model": "/m.loupe", "metrics": {"world_size": 2}}),
        Failed("train", "boom", "advice"),
        Cancelled("train", "stopped"),
    ]
    back = [launch_worker.event_from_line(launch_worker.event_to_line(e)) for e in events]
    assert [type(b) for b in back] == [type(e) for e in events]
    assert back[0] == events[0] and back[1] == events[1] and back[6] == events[6]
    assert back[2].metrics["error_rate"] == 0.25 and back[2].metrics["valid_loss"] != 0
    assert launch_worker.event_from_line("W1127 some torch log line") is None
    assert launch_worker.event_from_line('{"rank": 1}') is None


def test_a_killed_rank_is_named_as_the_cause_not_the_rank_that_lost_it():
    outcome = launch._Outcome(
        2, final=Failed("train", "process 0 lost its peer"),
        rank_errors={0: {"rank": 0, "message": "lost", "peer_lost": True}},
        failures=[{"rank": 0, "pid": 10, "exitcode": 1, "signal": None},
                  {"rank": 1, "pid": 11, "exitcode": -9, "signal": "SIGKILL"}],
    )
    final = launch._final_event(outcome, None, [])
    assert isinstance(final, Failed)
    assert "process 1 of 2 (pid 11) was killed by SIGKILL" in final.message
    # rank 0's own failure stays rank 0's message
    outcome.rank_errors, outcome.failures = {}, [{"rank": 0, "pid": 10, "exitcode": 1}]
    assert launch._final_event(outcome, None, []).message == "process 0 lost its peer"


# -- two processes -----------------------------------------------------------------------------

RANK_SCRIPT = ("import sys; from tests.engine.test_distributed import _rank_main; "
               "_rank_main(*sys.argv[1:])")


class _Recording:
    """Wraps one epoch's batches and records the indices the loop actually took."""

    def __init__(self, batches, record: dict) -> None:
        self.batches, self.record = batches, record

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.batches.close()

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        for batch in self.batches:
            self.record["indices"].extend(batch[2].tolist())
            yield batch


def _rank_main(root: str, weights: str, out: str) -> None:
    """One rank of the engine-API test (torchrun's variables come from the test)."""
    import hashlib

    from loupe.engine.training import TrainConfig, train
    from loupe.engine.training.session import Session

    seen: list[dict] = []
    real_epoch = BatchLoader.epoch

    def recording_epoch(self, epoch, size):
        record = {"train": self.train, "n_items": len(self.items), "epoch": epoch,
                  "indices": []}
        seen.append(record)
        return _Recording(real_epoch(self, epoch, size), record)

    weights_digest: list[str] = []
    real_report = Session.final_report

    def final_report(self):
        state = self.model.state_dict()
        digest = hashlib.sha256()
        for key in sorted(state):
            digest.update(state[key].detach().cpu().contiguous().numpy().tobytes())
        weights_digest.append(digest.hexdigest())
        return real_report(self)

    BatchLoader.epoch = recording_epoch  # type: ignore[method-assign]
    Session.final_report = final_report  # type: ignore[method-assign]
    config = TrainConfig(arch="resnet18", freeze_epochs=1, epochs=2, size=32, batch_size=8,
                         lr=1e-2, pretrained=weights, seed=3, threads=1, device="cpu")
    result = train(_prepared(Path(root)), config)
    Path(out).write_text(json.dumps({
        "rank": int(os.environ["RANK"]), "seen": seen, "history": list(result.history),
        "bundle": str(result.bundle_path), "weights": weights_digest,
    }))


def test_two_ranks_share_each_epoch_and_report_the_whole_validation_set(colours, tmp_path):
    """The engine API under torch.distributed (torchrun's variables, no launcher): the
    ranks train on disjoint halves of each global batch, in the single-process order,
    score disjoint blocks of the validation set, end with identical weights, and rank 0
    alone writes one run folder and one bundle that records world_size 2."""
    from safetensors.torch import save_file

    from loupe.engine.models.bundle import read_bundle_meta
    from loupe.engine.models.factory import create_model
    from loupe.engine.training import evaluate

    torch.manual_seed(0)
    weights = tmp_path / "resnet18-fake.safetensors"
    save_file({k: v.contiguous() for k, v in create_model("resnet18", 1000).state_dict().items()},
              str(weights))
    port = str(_free_port())
    outs = [tmp_path / f"rank{r}.json" for r in range(2)]
    ranks = [
        subprocess.Popen(
            [sys.executable, "-c", RANK_SCRIPT, str(colours), str(weights), str(outs[r])],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
            env=_env(RANK=str(r), WORLD_SIZE="2", LOCAL_RANK=str(r), LOCAL_WORLD_SIZE="2",
                     MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
        )
        for r in range(2)
    ]
    logs = [p.communicate(timeout=300)[0] for p in ranks]
    assert [p.returncode for p in ranks] == [0, 0], logs
    rank0, rank1 = (json.loads(out.read_text()) for out in outs)

    prepared = _prepared(colours)
    n_train, n_valid = len(prepared.plan.train), len(prepared.plan.valid)
    whole = _loader(n_train, train=True, batch_size=16, seed=3)  # one process, global batch
    for epoch in (1, 2):  # the unfrozen epochs: SGD on training batches
        mine, theirs = ([r for r in rank["seen"] if r["train"] and r["epoch"] == epoch]
                        for rank in (rank0, rank1))
        assert len(mine) == len(theirs) == 1
        a, b = mine[0]["indices"], theirs[0]["indices"]
        assert len(a) == len(b) == n_train // 16 * 8  # equal shares, remainder dropped
        assert not set(a) & set(b)
        steps = whole.batch_indices(epoch)
        for step in range(len(a) // 8):
            assert sorted(a[step * 8:(step + 1) * 8] + b[step * 8:(step + 1) * 8]) == \
                sorted(steps[step])
    for n in (n_valid, n_train):  # validation each epoch; the frozen epoch's features
        blocks = [[r["indices"] for r in rank["seen"] if not r["train"] and r["n_items"] == n]
                  for rank in (rank0, rank1)]
        assert blocks[0] and len(blocks[0]) == len(blocks[1])
        assert all(x + y == list(range(n)) for x, y in zip(*blocks, strict=True))

    def timeless(history):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in history]

    assert timeless(rank0["history"]) == timeless(rank1["history"])  # reduced over ranks
    assert [row["phase"] for row in rank0["history"]] == ["frozen", "unfrozen", "unfrozen"]
    assert rank0["weights"] == rank1["weights"]  # gradients were averaged every step
    runs = _runs()
    assert len(runs) == 1 and rank1["bundle"] == rank0["bundle"]
    assert sorted(p.name for p in runs[0].glob("*.loupe")) == ["model.loupe"]
    assert json.loads((runs[0] / "run.json").read_text())["status"] == "finished"
    assert read_bundle_meta(rank0["bundle"]).training["world_size"] == 2
    scored = evaluate(rank0["bundle"], prepared, device="cpu")  # all of it, one process
    assert scored.metrics["error_rate"] == pytest.approx(rank0["history"][-1]["error_rate"])


LEARN = ("--arch", "test_resnet", "--pretrained", "none", "--size", "32", "--epochs", "4",
         "--freeze-epochs", "0", "--lr", "3e-3", "--threads", "1", "--device", "cpu",
         "--json")


def test_torchrun_spelling_matches_one_process_with_the_same_global_batch(
    tmp_path_factory, capsys
):
    """``torchrun ... -m loupe.engine train``: rank 0 alone prints the JSON lines, the last
    one says world_size 2, and the error is within 0.1 of one process with batch 16."""
    root = _folder(tmp_path_factory.mktemp("noisy"), 100, 100)  # ~15 % error
    code = main(["train", str(root), *LEARN, "--bs", "16"])
    one = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and one[-1]["world_size"] == 1
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nnodes", "1", "--nproc-per-node",
        "2", "--rdzv-backend", "c10d", "--rdzv-endpoint", f"127.0.0.1:{_free_port()}",
        "--max-restarts", "0", "-m", "loupe.engine", "train", str(root), *LEARN, "--bs", "8",
    ]
    done = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr
    two = [json.loads(line) for line in done.stdout.splitlines()]
    assert [row.get("epoch") for row in two[:4]] == [1, 2, 3, 4] and len(two) == 5
    assert two[-1]["world_size"] == 2 and Path(two[-1]["model"]).is_file()
    assert 0 < one[-1]["error_rate"] < 0.35  # learnt, not perfect: a real comparison
    assert abs(two[-1]["error_rate"] - one[-1]["error_rate"]) <= 0.1
    assert len(_runs()) == 2  # one run per training: rank 1 made no folder


def test_a_killed_rank_stops_the_run_with_a_checkpoint_to_resume(colours):
    """The launcher's event stream (what the desktop reads): rank 1 is killed mid-epoch;
    the run fails naming it, rank 0 wrote the checkpoint of the finished epoch on its
    way out, and the run resumes on two processes again, saying so."""
    from loupe.engine.training import TrainConfig

    config = TrainConfig(arch="resnet18", epochs=3, freeze_epochs=0, size=32, batch_size=2,
                         pretrained="none", seed=3, threads=1, device="cpu")
    pids: list[int] = []
    killed_at: list[Progress] = []
    events = []
    for event in launch.launch_events(launch.job_for(_prepared(colours), config), 2):
        events.append(event)
        if isinstance(event, Started) and event.task == "train":
            pids = event.info["processes"]
        if (isinstance(event, Progress) and event.task == "train" and event.epoch == 2
                and not killed_at and event.done < event.total - 2):
            os.kill(pids[1], signal.SIGKILL)
            killed_at.append(event)
    assert killed_at, "the second epoch never reported progress"
    final = events[-1]
    assert isinstance(final, Failed), final
    assert f"process 1 of 2 (pid {pids[1]}) was killed by SIGKILL" in final.message
    assert "checkpoint of epoch 1 is kept" in final.message and "--resume" in final.message
    run_dir = Path(next(e for e in events if isinstance(e, Started) and e.task == "train")
                   .info["run_dir"])
    assert json.loads((run_dir / "run.json").read_text())["status"] == "failed"
    assert json.loads((run_dir / "checkpoint.json").read_text())["epochs_done"] == 1

    said: list = []  # resumed through the launcher again: the desktop's path
    result = launch.resume_distributed(run_dir.name, 2, on_event=said.append)
    assert [row["epoch"] for row in result.history] == [1, 2, 3]
    assert result.metrics["world_size"] == 2 and result.info["world_size"] == 2
    assert result.bundle_path.is_file() and result.report["per_class"]
    warnings = [e.message for e in said if isinstance(e, WarningEvent) and e.code == "world-size"]
    assert warnings == ["resuming on 2 processes, as the run trained before"]
    assert [e.epoch for e in said if isinstance(e, EpochEnded)] == [2, 3]


def test_ctrl_c_on_the_launcher_stops_every_rank_and_keeps_the_checkpoint(colours):
    """Ctrl+C reaches `loupe train --nproc 2` as from a terminal: every rank stops, rank 0
    keeps the checkpoint and lets go of the run, which then resumes on one process."""
    command = [sys.executable, "-m", "loupe.engine", "train", str(colours), "--arch",
               "resnet18", "--pretrained", "none", "--size", "32", "--bs", "2", "--epochs",
               "4", "--freeze-epochs", "0", "--device", "cpu", "--threads", "1", "--nproc",
               "2", "--json"]
    launcher = subprocess.Popen(command, cwd=REPO, env=_env(), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    first = json.loads(launcher.stdout.readline())  # type: ignore[union-attr]
    assert first["epoch"] == 1
    launcher.send_signal(signal.SIGINT)
    out, err = launcher.communicate(timeout=120)
    assert launcher.returncode == 130, err
    assert "interrupted; the checkpoint of epoch" in err and "--resume" in err
    assert err.rstrip().endswith("--nproc 2")  # the advice starts the same processes again
    (run_dir,) = _runs()
    assert json.loads((run_dir / "run.json").read_text())["status"] == "cancelled"
    assert json.loads((run_dir / "checkpoint.json").read_text())["epochs_done"] >= 1
    from loupe.engine.training.runs import RunLock

    with RunLock(run_dir):  # rank 0 let go of the run: nothing still trains it
        pass
    from loupe.engine.training import resume

    said: list = []  # on one process now: it says the run had two
    result = resume(run_dir.name, on_event=said.append)
    assert [row["epoch"] for row in result.history] == [1, 2, 3, 4]
    warnings = [e.message for e in said if isinstance(e, WarningEvent) and e.code == "world-size"]
    assert len(warnings) == 1 and "resuming on 1 process(es); the run trained on 2" in warnings[0]
    assert result.metrics["world_size"] == 1
