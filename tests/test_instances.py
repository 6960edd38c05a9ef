"""Many instances, one Threatscore: real functions-framework processes sharing one real
redis-server on 127.0.0.1 (and a misbehaving Redis of the tests' own).

Timing bounds are generous lower or upper limits, never a race: what must overlap is made to
overlap by the fake upstream's scripted latency, and what must come first is done first.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from relay.ratelimit import HOLD_BACK_NAME
from simulator import Scripted
from tests import answers
from tests.conftest import RedisServer, RelayRedis
from tests.relay_process import RelayProcess

pytestmark = pytest.mark.timeout(120)

OBSERVE = "/observe/observables"
REDIS_SIGNING_KEY = "the-instances-redis-signing-key-0123456789"


def ip(value: str) -> dict:
    return {"type": "ip", "value": value}


def observe(url: str, observables: list[dict], timeout: float = 60) -> dict:
    response = requests.post(url + OBSERVE, json=observables, timeout=timeout)
    assert response.status_code == 200, response.text[:500]
    return response.json()


def timed(call: Callable[[], object]) -> tuple[object, float]:
    started = time.monotonic()
    result = call()
    return result, time.monotonic() - started


def answered(body: dict) -> list[str]:
    return [doc["observable"]["value"] for doc in body.get("data", {}).get("verdicts", {}).get("docs", [])]


def errors_by_code(body: dict) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for error in body.get("errors", []):
        found.setdefault(error["code"], []).append(error["message"])
    return found


def all_at_once(calls: list[Callable[[], object]]) -> list[object]:
    """Runs the calls in threads released together by a barrier; their results in order."""
    barrier = threading.Barrier(len(calls))

    def run(call: Callable[[], object]) -> object:
        barrier.wait(timeout=30)
        return call()

    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return [future.result() for future in [pool.submit(run, call) for call in calls]]


@pytest.fixture
def instances(launch_relay, redis_server: RedisServer) -> Callable[..., list[RelayProcess]]:
    """`count` relay processes sharing the test's redis-server."""

    def start(count: int, **env: str) -> list[RelayProcess]:
        env = {"REDIS_SIGNING_KEY": REDIS_SIGNING_KEY, **env}
        return [launch_relay(REDIS_URL=redis_server.url, **env) for _ in range(count)]

    return start


# --- single flight across instances ------------------------------------------------------------


def test_concurrent_misses_on_three_instances_cost_one_upstream_call_and_map_identically(
    threatscore, instances
):
    threatscore.answer("198.51.100.7", answers.FOUR_ENGINES, delay=1.5)  # all requests overlap it
    relays = instances(3)
    calls = [lambda url=relay.url: observe(url, [ip("198.51.100.7")]) for relay in relays for _ in range(8)]

    bodies = all_at_once(calls)

    assert threatscore.calls_for("198.51.100.7") == 1
    assert all(answered(body) == ["198.51.100.7"] for body in bodies)
    # Every instance maps the one answer to the same entities (valid_time from the fetch time).
    assert all(body == bodies[0] for body in bodies)


def test_an_answer_cached_through_one_instance_maps_identically_through_another_later(threatscore, instances):
    threatscore.answer("198.51.100.8", answers.FOUR_ENGINES)
    first, second = instances(2)
    through_first = observe(first.url, [ip("198.51.100.8")])
    time.sleep(1.1)  # a later request: valid_time must not follow the request's own time
    through_second = observe(second.url, [ip("198.51.100.8")])
    assert threatscore.calls_for("198.51.100.8") == 1
    assert through_second == through_first


def test_when_the_lock_holder_dies_its_lock_expires_and_another_instance_asks(
    threatscore, instances, redis_server: RedisServer, relay_env
):
    threatscore.answer("198.51.100.9", answers.FOUR_ENGINES)
    (relay,) = instances(1)
    with redis_server.client() as direct:
        # An instance took the lock for 1.5 s, then died before answering.
        direct.set(RelayRedis(relay_env).lock_key("ip:198.51.100.9"), b"dead-holder", px=1500)

        body, elapsed = timed(lambda: observe(relay.url, [ip("198.51.100.9")]))

        assert answered(body) == ["198.51.100.9"]
        assert threatscore.calls_for("198.51.100.9") == 1
        assert elapsed > 1.0  # it waited for the holder's answer until the lock expired
        assert direct.exists(RelayRedis(relay_env).answer_key("ip:198.51.100.9"))
        assert not direct.exists(
            RelayRedis(relay_env).lock_key("ip:198.51.100.9")
        )  # released after the answer


def test_a_waiter_waits_for_another_instance_only_until_its_own_deadline(
    threatscore, instances, redis_server: RedisServer, relay_env
):
    (relay,) = instances(1, RELAY_DEADLINE="1")
    with redis_server.client() as direct:
        direct.set(RelayRedis(relay_env).lock_key("ip:198.51.100.10"), b"slow-holder", px=30_000)

        body, elapsed = timed(lambda: observe(relay.url, [ip("198.51.100.10"), ip("198.51.100.11")]))

    assert elapsed < 1 + 1.0
    assert errors_by_code(body).keys() == {"timeout"}
    assert "198.51.100.10" in errors_by_code(body)["timeout"][0]
    assert threatscore.calls_for("198.51.100.10") == 0
    assert threatscore.calls_for("198.51.100.11") == 1  # "no data": the other observable kept its result


# --- a misbehaving Redis ----------------------------------------------------------------------


class TricklingRedis:
    """Accepts connections, then answers every command with a huge bulk string, one byte at a time."""

    def __init__(self, every: float = 0.05):
        self._every = every
        self._stop = threading.Event()
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self.connections = 0
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                continue
            self.connections += 1
            thread = threading.Thread(target=self._trickle, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _trickle(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(65536)
                conn.sendall(b"$1000000\r\n")
                while not self._stop.wait(self._every):
                    conn.sendall(b"x")
            except OSError:
                return

    def stop(self) -> None:
        self._stop.set()
        self._listener.close()
        for thread in self._threads:
            thread.join(timeout=5)


@pytest.fixture
def trickling_redis() -> Iterator[TricklingRedis]:
    server = TricklingRedis()
    yield server
    server.stop()


def test_a_trickling_redis_does_not_carry_a_request_past_its_deadline(
    threatscore, launch_relay, trickling_redis: TricklingRedis
):
    threatscore.answer("198.51.100.20", answers.FOUR_ENGINES)
    relay = launch_relay(
        REDIS_URL=trickling_redis.url,
        REDIS_SIGNING_KEY=REDIS_SIGNING_KEY,
        RELAY_DEADLINE="3",
        THREATSCORE_RATE_LIMIT="50",
    )
    sent = [ip("198.51.100.20"), ip("198.51.100.21")]

    body, elapsed = timed(lambda: observe(relay.url, sent))
    again, elapsed_again = timed(lambda: observe(relay.url, sent))

    assert elapsed < 3  # was over 8 s: each read got a byte within its timeout
    assert elapsed_again < 3
    assert trickling_redis.connections >= 1  # Redis was asked, and trickled
    assert answered(body) == answered(again) == ["198.51.100.20"]
    assert "errors" not in body and "errors" not in again
    assert threatscore.calls_for("198.51.100.20") == 1  # the memory tier held it meanwhile
    relay.stop()  # flushes its log
    warnings = [r for r in relay.log_records() if r["severity"] == "WARNING" and "Redis" in r["message"]]
    assert len(warnings) == 1  # one per outage, not one per lookup


# --- one rate limit for all instances ----------------------------------------------------------


class Arrivals:
    """When each lookup reached the fake Threatscore (its `fallback` runs as a request arrives)."""

    def __init__(self, threatscore) -> None:
        self.times: list[float] = []
        self._lock = threading.Lock()
        threatscore.fallback(self._arrived)

    def _arrived(self, value: str) -> Scripted:
        with self._lock:
            self.times.append(time.monotonic())
        return Scripted(status=200, body=answers.FOUR_ENGINES)

    def busiest(self, window: float) -> int:
        times = sorted(self.times)
        return max(
            (sum(1 for t in times[i:] if t < start + window) for i, start in enumerate(times)), default=0
        )


def test_the_rate_limit_holds_for_all_instances_together(threatscore, instances):
    arrivals = Arrivals(threatscore)
    relays = instances(3, THREATSCORE_RATE_LIMIT="5", RELAY_DEADLINE="30")
    batches = [[ip(f"198.51.{n}.{index}") for index in range(10)] for n in range(3)]

    bodies = all_at_once(
        [lambda url=r.url, b=b: observe(url, b) for r, b in zip(relays, batches, strict=True)]
    )

    assert [len(answered(body)) for body in bodies] == [10, 10, 10]
    assert len(arrivals.times) == 30
    # 30 lookups at 5 a second: at least 5 s from the first to the last.
    assert max(arrivals.times) - min(arrivals.times) > 4.5
    # A moving window: no second grants more than 5 (a little slack for the hop to the upstream).
    assert arrivals.busiest(0.8) <= 5


def test_a_lookup_that_cannot_get_a_turn_in_time_gets_the_relays_own_too_many_requests(
    threatscore, instances
):
    Arrivals(threatscore)
    (relay,) = instances(1, THREATSCORE_RATE_LIMIT="2", RELAY_DEADLINE="1.5")
    sent = [ip(f"198.51.100.{index}") for index in range(30, 40)]

    body = observe(relay.url, sent)

    got = answered(body)
    refused = errors_by_code(body).get("too many requests", [])
    assert 2 <= len(got) <= 4  # the turns of the first second, perhaps of the next
    assert len(got) + len(refused) == 10  # the others kept their results
    assert all("relay's own rate limit" in message for message in refused)
    assert all("THREATSCORE_RATE_LIMIT" in message for message in refused)


def test_a_429_with_retry_after_makes_every_instance_hold_back(
    threatscore, instances, redis_server: RedisServer, relay_env
):
    threatscore.answer("198.51.100.50", {"error": "slow down"}, status=429, headers={"Retry-After": "3"})
    threatscore.answer("198.51.100.51", answers.FOUR_ENGINES)
    first, second = instances(2, RELAY_DEADLINE="1")

    throttled = observe(first.url, [ip("198.51.100.50")])
    held = observe(second.url, [ip("198.51.100.51")])

    assert "Threatscore" in errors_by_code(throttled)["too many requests"][0]
    assert "Retry-After" in errors_by_code(held)["too many requests"][0]
    assert threatscore.calls_for("198.51.100.51") == 0  # the other instance held back
    with redis_server.client() as direct:
        direct.delete(RelayRedis(relay_env).namespaced(HOLD_BACK_NAME))  # the wait is over
    assert answered(observe(second.url, [ip("198.51.100.51")])) == ["198.51.100.51"]
