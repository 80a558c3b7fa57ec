"""Reusable parts of the benchmark scripts in ``scripts/`` (the commands stay there).

* :mod:`benchkit.common`: constants, the speech, simulated callers, sessions and offer/answer,
  percentiles, sockets, and what the machine is and how busy it is; shared by every benchmark.
* :mod:`benchkit.media_cpu`: ``bench_media.py`` part 1, CPU cost per call on a simulated clock.
* :mod:`benchkit.media_realtime`: ``bench_media.py`` part 2, real time on real sockets, with the
  peer process, the feeder and the naive pacer baseline.
* :mod:`benchkit.baselines`: ``bench_media.py`` part 3, per-sample Python G.711 against the tables.
* :mod:`benchkit.api_load`: ``bench_media.py --api-rps``, the control API served on the media loop
  under a steady request load (and the stub server it serves).

The commands run as ``python scripts/NAME.py``, which puts ``scripts/`` first on ``sys.path``; that
is how ``import benchkit`` resolves (tests that load a command by path add ``scripts/`` themselves).
"""
