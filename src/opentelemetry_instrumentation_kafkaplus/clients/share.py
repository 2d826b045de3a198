"""ShareConsumer (share groups): not traced yet, and said so once when one is created."""

from __future__ import annotations

from typing import Any

from ..core.errors import warn_once
from .state import TracedClass


def notice_class(original: type) -> type:
    """A subclass of ``ShareConsumer`` that logs, once, that it is not traced."""

    class ShareConsumer(original, metaclass=TracedClass):  # type: ignore[misc]
        _kafkaplus_original = original

        def __init__(self, *args: Any, **kwargs: Any) -> None:
            # The client tells "no keywords" from "empty keywords" in its error.
            if kwargs:
                super().__init__(*args, **kwargs)
            else:
                super().__init__(*args)
            warn_once(
                "share consumer",
                "kafkaplus: confluent_kafka.ShareConsumer (share groups) is not traced; "
                "its messages get no process spans.",
            )

    ShareConsumer.__doc__ = original.__doc__
    return ShareConsumer
