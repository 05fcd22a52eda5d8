"""Item 9, a station's link to another station after that one restarts, without a lab: a
stand-in station (a CurveZMQ ROUTER with the station's key and info file) that moves to a new
port, or loses a request as it restarts on the same one."""

import asyncio

import pytest
import zmq
import zmq.asyncio

from controller.messaging.curve import server_socket
from controller.messaging.keys import node_keys
from controller.messaging.serving import write_info
from controller.messaging.station_link import StationLink, StationUnavailable
from controller.messaging.wire import pack, unpack


class Station:
    """A stand-in for station `name`: answers requests ok, except the ones it is told to
    lose; records every message it got."""

    def __init__(self, ctx, data_dir, name: str, endpoint: str = "tcp://127.0.0.1") -> None:
        _, secret = node_keys(data_dir, name)
        self.sock = server_socket(ctx, zmq.ROUTER, secret)
        if endpoint.count(":") == 1:
            port = self.sock.bind_to_random_port(endpoint)
            endpoint = f"{endpoint}:{port}"
        else:
            self.sock.bind(endpoint)
        self.endpoint = endpoint
        self.got: list[str] = []
        self.lose = 0
        write_info(data_dir, name, endpoint)
        self.task = asyncio.get_running_loop().create_task(self._serve())

    async def _serve(self) -> None:
        while True:
            identity, payload = await self.sock.recv_multipart()
            msg = unpack(payload)
            self.got.append(msg["type"])
            if self.lose:
                self.lose -= 1
                continue
            await self.sock.send_multipart([identity, pack("reply", msg["id"], ok=True)])

    def stop(self) -> None:
        self.task.cancel()
        self.sock.close(linger=0)


@pytest.fixture
def data_dir(tmp_path):
    node_keys(tmp_path, "A")
    return tmp_path


def link_to(ctx, data_dir) -> StationLink:
    return StationLink(ctx, data_dir, "A", "B", lambda msg: None, {})


async def until(condition, timeout_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


def test_a_refresh_points_the_fire_and_forget_path_at_the_restarted_station(data_dir):
    """What the responder of a link_request does before its first pair message: a station
    that restarted on a new port gets the messages sent after the refresh."""

    async def main():
        ctx = zmq.asyncio.Context()
        old = Station(ctx, data_dir, "B")
        link = link_to(ctx, data_dir)
        await link.request("hello", timeout_s=2.0)
        old.stop()
        await asyncio.sleep(0.01)  # the info file's time stamp moves on
        new = Station(ctx, data_dir, "B")
        assert new.endpoint != old.endpoint
        link.refresh()
        assert link.endpoint == new.endpoint
        link.send("round_done")
        await until(lambda: new.got == ["round_done"])
        link.close()
        new.stop()
        ctx.term()

    asyncio.run(main())


def test_an_idempotent_request_lost_in_a_restart_is_asked_once_more(data_dir):
    """A station restarted on the same endpoint (nothing for a refresh to notice) that lost a
    request: an idempotent one is asked again on a fresh connection and answered; any other
    is StationUnavailable, as before."""

    async def main():
        ctx = zmq.asyncio.Context()
        station = Station(ctx, data_dir, "B")
        link = link_to(ctx, data_dir)
        station.lose = 1
        reply = await link.request("hello", timeout_s=0.5, idempotent=True)
        assert reply["ok"] and station.got == ["hello", "hello"]
        station.lose = 1
        with pytest.raises(StationUnavailable, match="did not answer link_round"):
            await link.request("link_round", timeout_s=0.5)
        assert station.got == ["hello", "hello", "link_round"]
        link.close()
        station.stop()
        ctx.term()

    asyncio.run(main())
