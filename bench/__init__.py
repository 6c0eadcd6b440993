"""perconn's benchmarks: ``python -m bench`` runs them all and prints a summary;
each also runs on its own (``python bench/echo.py``, ``bench/scale.py``,
``bench/herd.py``, ``bench/shipper.py``)."""
