"""The log records (perconn._log): a record nothing would see is not made, and
one that anything would see is, whichever front end."""

from __future__ import annotations

import logging

import pytest
from conftest import Records
from fronts import Front
from servers import refusing_port, wait_until

import perconn
from perconn._log import heard

QUIET = {"retry_min": 0.02, "retry_max": 0.02, "jitter": False}


@pytest.fixture
def logger(request: pytest.FixtureRequest) -> logging.Logger:
    """A logger of its own, outside logging's registry: pytest gives every
    registered logger that does not propagate its capture handlers."""
    return logging.Logger(f"perconn.test.log.{request.node.name}")


def test_only_null_handlers_are_not_heard(logger: logging.Logger) -> None:
    logger.addHandler(logging.NullHandler())
    assert not heard(logger, logging.WARNING)
    logger.addHandler(logging.StreamHandler())
    assert heard(logger, logging.WARNING)


def test_no_handler_at_all_is_heard_by_the_last_resort(logger: logging.Logger) -> None:
    assert heard(logger, logging.WARNING)


def test_a_handler_up_the_chain_is_heard(logger: logging.Logger) -> None:
    child = logging.Logger(f"{logger.name}.child")
    child.parent = logger
    child.addHandler(logging.NullHandler())
    logger.addHandler(logging.NullHandler())
    assert not heard(child, logging.WARNING)
    logger.addHandler(Records())
    assert heard(child, logging.WARNING)
    child.propagate = False
    assert not heard(child, logging.WARNING)


def test_a_level_below_the_loggers_is_not_heard(logger: logging.Logger) -> None:
    logger.addHandler(Records())
    logger.setLevel(logging.ERROR)
    assert not heard(logger, logging.WARNING)
    assert heard(logger, logging.ERROR)


def test_a_filter_or_an_adapter_is_always_heard(logger: logging.Logger) -> None:
    logger.addHandler(logging.NullHandler())
    assert heard(logging.LoggerAdapter(logger, {}), logging.WARNING)
    logger.addFilter(lambda record: True)  # it may count what it sees
    assert heard(logger, logging.WARNING)


def test_a_conn_makes_no_record_nobody_hears_and_every_one_somebody_does(front: Front, logger: logging.Logger) -> None:
    made: list[logging.LogRecord] = []
    factory = logging.getLogRecordFactory()

    def counting(*args: object, **kwargs: object) -> logging.LogRecord:
        record = factory(*args, **kwargs)
        if record.name == logger.name:
            made.append(record)
        return record

    logger.addHandler(logging.NullHandler())
    logging.setLogRecordFactory(counting)
    try:
        with refusing_port() as address, front.open(address, logger=logger, **QUIET) as conn:
            assert wait_until(lambda: conn.stats.dial_failures >= 3, timeout=10)
            assert made == []
            records = Records()
            logger.addHandler(records)
            assert records.wait_for(logging.WARNING, perconn.DialError)
    finally:
        logging.setLogRecordFactory(factory)
    assert made and all(record.levelno == logging.WARNING for record in made)
    assert any(isinstance(getattr(record, "error", None), perconn.DialError) for record in made)
