"""Models shared between elements (`model-instance-id`): one loaded classifier and one label set per id (gi-free).

    inst = acquire("cams", key, load)     # the first element loads; the others get the same classifier
    inst.publish(labels, value)           # a label change through any element ...
    labels, value, gen = inst.current()   # ... is what every element uses from its next frame on
    release("cams", inst)                 # the last element to stop frees the model

Elements of one id must ask for the same model (bundle, backend, threads, text encoder): a different request is
refused with the two requests named, instead of silently running the first one's model.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from edgekd import EdgekdError


@dataclass
class SharedInstance:
    """A loaded classifier, its label set (and the `labels` value it was built from), and how many elements use it."""

    key: tuple
    clf: Any
    users: int = 0
    _labels: Any = None
    _value: str = ""
    _generation: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def publish(self, labels: Any, value: str) -> int:
        """Make `labels` (built from the property value `value`) the set of every element of this instance."""
        with self._lock:
            self._labels, self._value = labels, value
            self._generation += 1
            return self._generation

    def current(self) -> tuple[Any, str, int]:
        """(label set, its `labels` value, generation): a new generation means another element changed them."""
        with self._lock:
            return self._labels, self._value, self._generation


_instances: dict[str, SharedInstance] = {}
_registry_lock = threading.Lock()


def acquire(instance_id: str, key: tuple, load: Callable[[], Any]) -> SharedInstance:
    """The instance `instance_id`, loading its classifier with `load()` if no element holds it yet."""
    with _registry_lock:
        inst = _instances.get(instance_id)
        if inst is not None and inst.key != key:
            raise EdgekdError(f"model-instance-id={instance_id!r} is already loaded with {_describe(inst.key)}, not "
                              f"{_describe(key)}; give this element another model-instance-id or the same settings")
        if inst is None:
            inst = SharedInstance(key, load())
            _instances[instance_id] = inst
        inst.users += 1
        return inst


def release(instance_id: str, inst: SharedInstance) -> None:
    """One element stops using the instance; the last one frees it."""
    with _registry_lock:
        inst.users -= 1
        if inst.users <= 0 and _instances.get(instance_id) is inst:
            del _instances[instance_id]


def _describe(key: tuple) -> str:
    names = ("bundle", "backend", "threads", "text-encoder", "allow-ungated")
    return ", ".join(f"{n}={v!r}" for n, v in zip(names, key))
