"""Harness for interop tests against real SIP peers (sipp, kamailio, baresip) on loopback.

See ``tests/peers/README.md`` for the helpers and the Debian packages they need.
"""
