"""What both ``Conn`` front ends share: construction from the options, and the
read-only accessors over the core (options, lifecycle, the connection that is up)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._address import Address
from ._errors import ClosedConnectionError, DialError, GaveUpError
from ._log import log_callback_failed, log_queued_discarded
from ._messages import no_room, not_connected
from ._options import Options, bind_options, document_options
from ._state import Lifecycle, Stats

if TYPE_CHECKING:
    from typing_extensions import Self, Unpack

    from ._options import ConnectOptions

__all__ = ["ConnBase", "LinkBase", "begin_dial", "dial_failed", "install"]

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

        def __init__(self, address: str | Sequence[str], **options: Unpack[ConnectOptions[HookT]]) -> None: ...

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

    @staticmethod
    def _lifecycle(options: Options) -> Lifecycle:
        """The lifecycle of a ``Conn`` with *options*, starting now."""
        return Lifecycle(
            options.backoff,
            time.monotonic(),
            options.addresses,
            dial_timeout=options.dial_timeout,
            max_attempts=options.max_attempts,
            give_up_after=options.give_up_after,
            buffer=options.buffer,
        )

    def _queued_discarded(self, writes: int, nbytes: int, why: str = "closed") -> None:
        """Log what closing (``close()``, or giving up) dropped of the queue
        (``outbox.discard()``, taken under the front end's lock); called outside it."""
        if writes:
            log_queued_discarded(self._opts.logger, self._opts.label, writes, nbytes, why)

    def _no_room(self, seconds: float) -> TimeoutError:
        """The error of a write that found neither room in the buffer nor a
        connection within *seconds*."""
        outbox = self._life.outbox
        if not outbox.limit:
            return self._not_connected(seconds)
        error = TimeoutError(no_room(seconds, outbox.size, outbox.limit))
        error.__cause__ = self._life.last_error
        return error

    def _not_connected(self, seconds: float) -> TimeoutError:
        """The error of a call that waited *seconds* for a connection in vain: it
        names the address(es) and the last failure, which it chains as ``__cause__``."""
        last = self._life.last_error
        error = TimeoutError(not_connected(self._opts.label, seconds, last))
        error.__cause__ = last
        return error

    def _guard(self) -> contextlib.AbstractContextManager[object]:
        """What makes a change of state atomic (the synchronous ``Conn``'s lock)."""
        raise NotImplementedError

    def _stopped(self) -> None:
        """The lifecycle gave up (inside :meth:`_guard`): stop dialing, wake every waiter."""
        raise NotImplementedError

    # What the dial thread or task reports, through the module functions below.

    def _begin_dial(self) -> tuple[Address, float | None, int] | None:
        """The address of the next dial, its budget and the generation it would
        have, or None to stop (closed, or ``give_up_after`` ran out: then it gives up)."""
        life = self._life
        with self._guard():
            if life.closed:
                return None
            now = time.monotonic()
            step = life.expired(now)
            if step is None:
                return (*life.begin_dial(now), life.generation + 1)
            self._stopped()
            discarded = life.outbox.discard()
        self._queued_discarded(*discarded, why="gave up")  # before the records of giving up: they come last
        step.log(self._opts.logger)
        return None

    def _dial_failed(self, exc: BaseException) -> float | None:
        """Record and log a failed dial; return the delay before the next one, or
        None to stop (closed, or gave up)."""
        life = self._life
        with self._guard():
            if life.closed:
                return None
            step = life.dial_failed(DialError(life.dialing.text, exc), time.monotonic())
            if step.delay is None:
                self._stopped()
                discarded = life.outbox.discard()
        if step.delay is None:
            self._queued_discarded(*discarded, why="gave up")
        step.log(self._opts.logger)
        return step.delay

    def _install(self, link: LinkT) -> bool | None:
        """Make a freshly dialed connection the current one, unless writes are
        queued (None: send them on it first) or the ``Conn`` is closed (False)."""
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
        """The remote address, as given to ``connect``; of several, the one of the
        current or last connection (the first before any)."""
        address = self._life.address or self._opts.addresses[0]
        return address.text

    @property
    def closed(self) -> bool:
        """Whether the ``Conn`` is closed (by ``close()``, or because it gave up)."""
        return self._life.closed

    @property
    def generation(self) -> int:
        """How many connections have been established so far (0 before the first)."""
        return self._life.generation

    @property
    def buffered(self) -> int:
        """Bytes of writes queued now (``buffer=``), waiting for a connection."""
        return self._life.outbox.size

    @property
    def stats(self) -> Stats:
        """A snapshot of this ``Conn``'s counters and state (see :class:`perconn.Stats`)."""
        return self._life.stats()

    def __repr__(self) -> str:
        return f"<{self._public_name} {self.address} {self._life.phase.value} generation={self.generation}>"


# The dial thread (task) holds its ``Conn`` weakly (a ``weakref.ref``), so that a ``Conn`` dropped
# without ``close()`` is collected; these take a strong reference only for the
# moment of the call.


def begin_dial(ref: Callable[[], ConnBase[Any, Any] | None]) -> tuple[Address, float | None, int] | None:
    """``conn._begin_dial()``, or None if the ``Conn`` is gone."""
    conn = ref()
    return None if conn is None else conn._begin_dial()


def dial_failed(ref: Callable[[], ConnBase[Any, Any] | None], exc: BaseException, *, ours: bool) -> float | None:
    """``conn._dial_failed(exc)``, or None if the ``Conn`` is gone.

    *ours*: *exc* came from perconn's own steps (lookup, connect, TLS, the
    queued writes), not from the user's ``on_connect``: its traceback (and its
    cause's) is dropped. It only names perconn's frames, and ``stats.last_error``
    keeps it alive with every frame it holds: in a storm of ten thousand
    Conns that is memory, and objects every full garbage collection
    walks. A hook's failure keeps its traceback: it points into the user's code.
    """
    if ours:
        exc.__traceback__ = None
        if exc.__cause__ is not None:
            exc.__cause__.__traceback__ = None
    conn = ref()
    return None if conn is None else conn._dial_failed(exc)


def install(ref: Callable[[], ConnBase[LinkT, Any] | None], link: LinkT) -> bool | None:
    """``conn._install(link)``: True if *link* is now current; None if writes
    are queued (send them on *link* first, then call again); False if the
    ``Conn`` is closed or gone (then close *link*)."""
    conn = ref()
    return False if conn is None else conn._install(link)


class _Stream(Protocol):
    address: str
    generation: int

    def extra_info(self, name: str, default: Any = None) -> Any: ...


StreamT = TypeVar("StreamT", bound=_Stream)


class LinkBase(Generic[StreamT]):
    """What the ``Link`` of both front ends (the fresh connection an ``on_connect``
    hook is given) offers besides its I/O methods."""

    def __init__(self, connection: StreamT) -> None:
        self._c = connection

    @property
    def address(self) -> str:
        """The address this connection was made to."""
        return self._c.address

    @property
    def generation(self) -> int:
        """The generation this connection will have once the hook succeeds."""
        return self._c.generation

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        """Information about the connection, by asyncio's transport names:
        ``"peername"``, ``"sockname"``, ``"socket"`` (and ``"ssl_object"``,
        ``"peercert"`` over TLS)."""
        return self._c.extra_info(name, default)


ConnT = TypeVar("ConnT", bound=ConnBase[Any, Any])


def publish(cls: type[ConnT], module: str, summary: str) -> Callable[..., ConnT]:
    """Name a front end's ``Conn`` as the program does (``perconn.Conn``), give it
    the options' signature and documentation, and make its ``connect``: the same
    call, with errors naming ``connect``."""

    def connect(*args: object, **options: object) -> ConnT:
        return cls._from_options(bind_options("connect", args, options))

    cls.__module__ = connect.__module__ = module
    connect.__name__ = connect.__qualname__ = "connect"
    document_options(cls, cls.__doc__ or "")
    document_options(connect, summary)
    return connect
