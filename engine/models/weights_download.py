"""Downloading pretrained weights: the only way Loupe goes online, and only when asked.

``loupe weights download NAME`` (or the Train page's Download… button) is the user's
explicit consent. The file lands in the Hugging Face hub cache, where
``engine.models.weights.find_weights`` finds it offline afterwards. An offline machine fails in
seconds with the import hint instead of retrying for half a minute.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from loupe.engine.core.errors import CancelledError, LoupeError, WeightsError
from loupe.engine.core.events import (
    CancelToken,
    EventCallback,
    Finished,
    Progress,
    Started,
    ignore_event,
)
from loupe.engine.models.architectures import resolve_arch
from loupe.engine.models.weights import (
    IMPORT_HINT,
    STORE_FILE,
    hf_hub_cache_dir,
    hub_ids,
    read_safetensors,
    validate_state,
)


def download_weights(
    arch: str,
    *,
    on_event: EventCallback = ignore_event,
    cancel: CancelToken | None = None,
) -> Path:
    """Download ``arch``'s default timm weights into the HF cache. Explicit requests only.

    Fails with WeightsError (and the import hint) when offline. Progress events report
    bytes; the cancel token is checked on each chunk.
    """
    arch = resolve_arch(arch)
    ids = hub_ids(arch)
    if not ids:
        raise WeightsError(f"timm publishes no downloadable weights for {arch!r}; {IMPORT_HINT}")
    hub_id, _tag = ids[0]
    offline = os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes", "on"}
    if offline:
        raise WeightsError(
            f"could not download {hub_id}: offline mode is on (HF_HUB_OFFLINE); {IMPORT_HINT}"
        )
    on_event(Started("download", info={"arch": arch, "hub_id": hub_id}))
    path = _hub_download(hub_id, on_event, cancel)
    try:
        validate_state(arch, read_safetensors(path))
    except WeightsError as err:
        raise WeightsError(f"downloaded {hub_id} but it does not fit {arch!r}: {err}") from err
    on_event(Finished("download", result={"path": str(path)}))
    return path


def _hub_download(hub_id: str, on_event: EventCallback, cancel: CancelToken | None) -> Path:
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    _check_reachable(hub_id)
    try:
        return Path(
            hf_hub_download(
                hub_id,
                STORE_FILE,
                cache_dir=hf_hub_cache_dir(),
                tqdm_class=_progress_class(on_event, cancel),
            )
        )
    except (CancelledError, LoupeError):
        raise
    except LocalEntryNotFoundError as err:  # the hub could not be reached mid-way
        raise WeightsError(
            f"could not download {hub_id}: no network ({err}); {IMPORT_HINT}"
        ) from err
    except HfHubHTTPError as err:
        raise WeightsError(
            f"could not download {hub_id}: the hub refused ({err}); {IMPORT_HINT}"
        ) from err
    except Exception as err:  # noqa: BLE001 - any other transport failure means "no network"
        raise WeightsError(
            f"could not download {hub_id}: no network ({type(err).__name__}: {err}); "
            f"{IMPORT_HINT}"
        ) from err


def _check_reachable(hub_id: str, timeout: float = 5.0) -> None:
    """One quick connection to the hub first, so an offline machine fails in seconds.

    Without it huggingface_hub retries with back-off for half a minute before giving up.
    """
    import socket
    from urllib.parse import urlsplit

    from huggingface_hub import constants

    url = urlsplit(os.environ.get("HF_ENDPOINT") or constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname or "", port), timeout=timeout).close()
    except OSError as err:
        raise WeightsError(
            f"could not download {hub_id}: no network ({url.hostname} unreachable: {err}); "
            f"{IMPORT_HINT}"
        ) from err


def _progress_class(on_event: EventCallback, cancel: CancelToken | None) -> type:
    """A silent tqdm that turns byte counts into Progress events and honours cancel."""
    from tqdm.auto import tqdm

    class _EventProgress(tqdm):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True  # Loupe reports through events, never to stderr
            super().__init__(*args, **kwargs)
            self._loupe_total = int(kwargs.get("total") or 0)
            self._loupe_done = 0

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None:
                cancel.raise_if_cancelled()
            self._loupe_done += int(n or 0)
            total = max(self._loupe_total, self._loupe_done)
            on_event(Progress("download", self._loupe_done, total, message="bytes"))
            return super().update(n)

    return _EventProgress

