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


def is_dead_here(host: HostConfig, process: str) -> bool:
    """True when ``process`` (``<node>:<pid>``) is of this host and its pid is gone (it was
    killed): what it held need not wait for a timeout. False when it lives, or is another
    host's, or cannot be told (a reused pid looks alive: the timeout still applies)."""
    node, _, pid = process.rpartition(":")
    if node != node_name(host) or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except OSError:  # EPERM: a process of another user has that pid now
        return False
    return False
