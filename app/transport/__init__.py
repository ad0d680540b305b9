"""Every outbound byte: provider calls and streams, image downloads and job callbacks.

One deadline watchdog (watchdog.py: a Cutoff shuts an exchange's sockets at its deadline), one
capped, deadline-bounded body read (capped_read.py), and for URLs that come from outside, one SSRF
policy (address_policy.py) and one pinned-address connection (pinned.py). provider.py holds the
pooled sessions of provider calls and the mapping of network failures to our errors; stream.py
reads an event stream line by line. The layer knows no provider's wire format.
"""
from app.transport.address_policy import parse_allow_list
from app.transport.provider import Transport
from app.transport.stream import LineStream, StreamTransport

__all__ = ["LineStream", "StreamTransport", "Transport", "parse_allow_list"]
