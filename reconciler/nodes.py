"""Who this process is, as the shared state names it: in the leader lease, the compose
jobs it takes and the history's actions (``<node>:<pid>``)."""

from __future__ import annotations

import os
import socket

from .hostconfig import HostConfig


def node_name(host: HostConfig) -> str:
    """This host's name: the host config's ``state.node``, else the host name."""
    return host.state.node or socket.gethostname()


def this_process(host: HostConfig) -> str:
    """``<node>:<pid>``: unique among the live processes that share one state."""
    return f"{node_name(host)}:{os.getpid()}"
