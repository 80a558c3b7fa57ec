"""Harness for interop tests against real SIP peers (sipp, kamailio, baresip) on loopback, shared by
``tests/`` and ``scripts/`` (so it belongs to neither).

See ``peers/README.md`` for the helpers and the Debian packages they need.
"""
