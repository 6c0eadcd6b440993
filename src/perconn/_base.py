"""What both ``Conn`` front ends share: construction from the options, and the
read-only accessors over the core (options, lifecycle, the connection that is up)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Generic, TypeVar

from ._errors import ClosedConnectionError, GaveUpError
from ._log import log_callback_failed
from ._options import Options, bind_options
from ._state import Lifecycle, Stats

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from ._options import ConnectOptions

__all__ = ["ConnBase"]

LinkT = TypeVar("LinkT")
HookT = TypeVar("HookT")


class ConnBase(Generic[LinkT, HookT]):
    """The accessors every front end's ``Conn`` offers, over the shared core.

    ``Conn(address, **options)`` validates its arguments (named after ``Conn``)
    and calls the front end's :meth:`_start`; ``connect`` does the same through
    :meth:`_from_options`, naming itself in errors.
    """

    _public_name: str  # as the program names the class: "perconn.Conn"
    _opts: Options
    _life: Lifecycle
    _link: LinkT | None  # the connection writes go to; None while dialing or closed

    if TYPE_CHECKING:

        def __init__(self, address: str, **options: Unpack[ConnectOptions[HookT]]) -> None: ...

    else:

        def __init__(self, *args: Any, **options: Any) -> None:
            self._start(bind_options(type(self).__name__, args, options))

    @classmethod
    def _from_options(cls, options: Options) -> Self:
        conn = cls.__new__(cls)
        conn._start(options)
        return conn

    def _start(self, options: Options) -> None:
        raise NotImplementedError

    @property
    def _closed(self) -> bool:
        """Whether the ``Conn`` is closed: the lifecycle is the one record of it."""
        return self._life.closed

    def _closed_error(self) -> ClosedConnectionError:
        """A fresh error for a call on a closed ``Conn``: :class:`GaveUpError`
        (with its cause) if it gave up, else :class:`ClosedConnectionError`."""
        gave_up = self._life.gave_up
        if gave_up is None:
            return ClosedConnectionError()
        error = GaveUpError(str(gave_up))
        error.__cause__ = gave_up.__cause__
        return error

    def _callback(self, name: str, *args: object) -> None:
        """Call the user's callback *name* (an option); what it raises is logged,
        never raised to an unrelated caller."""
        fn = getattr(self._opts, name)
        if fn is None:
            return
        try:
            fn(*args)
        except Exception as exc:
            log_callback_failed(self._opts.logger, name, exc)

    @property
    def address(self) -> str:
        """The remote address, as given to ``connect``."""
        return self._opts.address.text

    @property
    def closed(self) -> bool:
        """Whether the ``Conn`` is closed (by ``close()``, or because it gave up)."""
        return self._life.closed

    @property
    def generation(self) -> int:
        """How many connections have been established so far (0 before the first)."""
        return self._life.generation

    @property
    def stats(self) -> Stats:
        """A snapshot of this ``Conn``'s counters and state (see :class:`perconn.Stats`)."""
        return self._life.stats()

    def __repr__(self) -> str:
        return f"<{self._public_name} {self.address} {self._life.phase.value} generation={self.generation}>"
