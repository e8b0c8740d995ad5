"""common.process.free_port: ports for servers started later, out of the way of outgoing connections."""

from __future__ import annotations

import socket

from common import process
from common.process import free_port, port_is_free


def test_ports_are_chosen_below_the_kernels_ephemeral_range_and_never_twice() -> None:
    low = process._ephemeral_low()
    ports = [free_port() for _ in range(300)]
    assert all(process._LOWEST_CHOSEN_PORT <= port < low for port in ports)
    assert len(set(ports)) == len(ports)


def test_a_port_in_use_is_not_chosen() -> None:
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", free_port()))
        listener.listen()
        taken = listener.getsockname()[1]
        assert not port_is_free("127.0.0.1", taken)
        process._handed_out.discard(taken)
        # Narrow the choice to the taken port and one other: only the other may come back.
        saved = process._LOWEST_CHOSEN_PORT, process._ephemeral_low
        process._LOWEST_CHOSEN_PORT, process._ephemeral_low = taken, lambda: taken + 2
        try:
            other = free_port()
        finally:
            process._LOWEST_CHOSEN_PORT, process._ephemeral_low = saved
        assert other == taken + 1 or other >= process._ephemeral_low()
