"""Components that load when first used and can be released: what keeps a real-size Synthesizer within a line PC.

At 512 px the reference side (CLIP text, ViT-g, Q-Former and its torch copy for ASEA: ~5.5 GB in fp32) runs once
per prompt or reference, the target side (VAE and UNet: ~3.7 GB) once per image. Holding both is the sum; a run
from a bank needs only the target side, and `low_memory` holds one component at a time.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import weakref
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Generic, TypeVar

from runtime import Engine
from runtime.process import return_freed_memory

log = logging.getLogger(__name__)

T = TypeVar("T")

REFERENCE_SIDE = ("text_encoder", "csm_vision", "csm_qformer")  # plus the torch Q-Former ASEA differentiates
TARGET_SIDE = ("vae_encoder", "unet", "vae_decoder")  # plus their fp32 variants beside fp16 engines


class Lazy(Generic[T]):
    """One thing that is loaded on first `get()` (under `lock`: two loads at once would add their peaks) and
    dropped by `release()`. Made from a value, it is pinned: already in memory, never released."""

    def __init__(self, name: str, load: Callable[[], T] | None, lock: AbstractContextManager, value: T | None = None):
        self.name = name
        self._load = load
        self._lock = lock
        self._value = value

    @classmethod
    def pinned(cls, name: str, value: T) -> Lazy[T]:
        return cls(name, None, threading.RLock(), value)

    @property
    def loaded(self) -> bool:
        return self._value is not None

    def get(self) -> T:
        value = self._value
        if value is not None:
            return value
        with self._lock:
            if self._value is None:
                t0 = time.perf_counter()
                self._value = self._load()
                log.info("loaded %s in %.1f s", self.name, time.perf_counter() - t0)
            return self._value

    def set(self, value: T) -> None:
        """Replace what is held (e.g. a timing wrapper); a release drops it and the next `get` loads afresh."""
        self._value = value

    def release(self) -> bool:
        """Drop the loaded value (a caller still running it keeps it until done); False when pinned or not loaded."""
        if self._load is None or self._value is None:
            return False
        with self._lock:
            value, self._value = self._value, None
        try:
            _released.append(weakref.ref(value))
        except TypeError:  # not weakly referenceable: free_released collects to be sure
            _released.append(lambda: value)
        return True


class Components(Mapping[str, Engine]):
    """A Synthesizer's engines by name. Indexing loads a component; `in`, `len` and iteration over names do not.
    One re-entrant lock serialises the loads of all components (a loader may open another: an fp32 variant opens
    its fp16 engine first)."""

    def __init__(self, loaders: Mapping[str, Callable[[], Engine]] | None = None):
        self.lock = threading.RLock()
        self._items = {name: Lazy(name, load, self.lock) for name, load in (loaders or {}).items()}

    @classmethod
    def pinned(cls, engines: Mapping[str, Engine]) -> Components:
        """Engines already in memory (a checkpoint's torch modules): never released."""
        out = cls()
        out._items = {name: Lazy.pinned(name, engine) for name, engine in engines.items()}
        return out

    def __getitem__(self, name: str) -> Engine:
        return self._items[name].get()

    def __setitem__(self, name: str, engine: Engine) -> None:
        self._items[name].set(engine)

    def __contains__(self, name: object) -> bool:
        return name in self._items

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def loaded(self, name: str) -> bool:
        return self._items[name].loaded

    def release(self, names: list[str] | tuple[str, ...]) -> list[str]:
        """Drop those of `names` that are loaded (and not pinned); returns the ones dropped. Their memory is freed
        once nothing else holds them (`free_released` hands it back to the OS)."""
        return [n for n in names if n in self._items and self._items[n].release()]


_released: list[Callable[[], object]] = []  # what Lazy.release dropped since the last free_released


def free_released() -> None:
    """Free what released components held and hand the freed heap back to the OS, so that the resident size drops
    and not only the heap's free lists. A full garbage collection (~0.2 s with torch loaded) runs only where one is
    still alive, kept by a reference cycle; reference counting freed the others already."""
    refs, _released[:] = list(_released), []
    if any(ref() is not None for ref in refs):
        gc.collect()
    return_freed_memory()
