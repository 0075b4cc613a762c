"""A worker stopped with SIGTERM while its consumer handles a message, as in a container: it stops fetching at
once, gives back work that can be redone (the next consumer gets the message straight away, not after the ack
wait), finishes work that cannot, gives up a handler that never returns at its deadline, and exits 0 within its
grace, with no traceback and no asyncio complaint."""
from __future__ import annotations

import asyncio
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import nats
import pytest
from delinkcious.contracts.events import Event, StreamSpec
from delinkcious.kit.messaging.consumer import ConsumerGroup, Subscription
from delinkcious.kit.messaging.nats import NatsConnection
from delinkcious.kit.messaging.stopping import StopRequested, StopSignal
from delinkcious.local.servers import free_port

from tests.kit.test_consumer import event, fresh_stream
from tests.support.jetstream import publish_event, wait_until

# The ack wait of the worker's subscription: a message the stopping worker failed to give back would reach the
# next consumer only after this long, which every test below would notice.
ACK_WAIT_S = 30.0
NOISE = ("Traceback", "Task was destroyed", "Event loop is closed", "Exception in thread", "was never awaited")

_WORKER = """
import socket
import sys
import time
from typing import ClassVar

from delinkcious.contracts.events import StreamSpec
from delinkcious.kit.messaging.consumer import Subscription
from delinkcious.kit.observability.logs import configure_logging
from delinkcious.kit.serving.config import BaseServiceSettings, NatsSettings, load_settings
from delinkcious.kit.serving.gunicorn import serve
from delinkcious.kit.serving.runtime import ServiceDefinition, ServiceParts
from delinkcious.kit.serving.worker import run_worker

mode, stream_name, subject, durable, silent_port, served_as = sys.argv[1:7]


class Settings(BaseServiceSettings, NatsSettings):
    serves_internal_callers: ClassVar[bool] = False


def build(runtime):
    def handle(event):
        print(f"handling {event.data['number']}", flush=True)
        if mode == "politeness-wait":  # waiting for a host's turn: through the stop signal
            runtime.stopping.sleep(120)
        elif mode == "silent-host":  # an HTTP request to a host that never answers: cut by the stop
            with socket.create_connection(("127.0.0.1", int(silent_port))) as connection:
                with runtime.stopping.aborting(lambda: connection.shutdown(socket.SHUT_RDWR)):
                    if not connection.recv(1):
                        raise ConnectionError("connection closed")
        elif mode == "stubborn":  # blocks and never looks at the stop
            time.sleep(120)
        else:  # short work that cannot be redone
            time.sleep(1.5)
        print(f"handled {event.data['number']}", flush=True)

    stream = StreamSpec(stream_name, (subject,), max_age_days=0.01)
    return ServiceParts(subscriptions=[Subscription(stream, (subject,), durable, handle, ack_wait_s=%(ack_wait)r)])


definition = ServiceDefinition(name="shutdown-probe", settings_class=Settings, build=build, mode=served_as)
if served_as == "http":  # gunicorn, its workers consuming beside the HTTP API
    sys.exit(serve(definition))
settings = load_settings(Settings)
configure_logging(definition.name, settings.log_format, settings.log_level)
sys.exit(run_worker(definition, settings))
""" % {"ack_wait": ACK_WAIT_S}


class Worker:
    """The worker in a process of its own; stdout and stderr collected, in order, by a thread."""

    def __init__(self, nats_url: str, mode: str, stream: StreamSpec, subject: str, durable: str, silent_port: int,
                 served_as: str = "worker", **settings: str) -> None:
        environment = {name: value for name, value in os.environ.items() if not name.startswith("PROMETHEUS_")}
        environment.update(SERVICE_NAME="shutdown-probe", NATS_URL=nats_url, HOST="127.0.0.1", PORT=str(free_port()),
                           LOG_FORMAT="json", WEB_WORKERS="1", **settings)
        self.process = subprocess.Popen(
            [sys.executable, "-c", _WORKER, mode, stream.name, subject, durable, str(silent_port), served_as],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._collect, daemon=True).start()

    def _collect(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"no {text!r} from the worker; it said:\n" + "\n".join(self.output)) from None
            self.output.append(line)
            if text in line:
                return

    def terminate(self, timeout: float = 40) -> tuple[int, float, str]:
        """SIGTERM; the exit code, the seconds it took and everything the process wrote."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout)
        finally:
            self.kill()
        took = time.monotonic() - started
        time.sleep(0.1)  # the reader thread takes the last lines
        while not self.lines.empty():
            self.output.append(self.lines.get_nowait())
        return code, took, "\n".join(self.output)

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def silent_host() -> Iterator[int]:
    """A TCP port that accepts connections and never says a word: a slow host."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1]
    finally:
        stop.set()
        thread.join(5)
        for connection in accepted:
            connection.close()
        listener.close()


class NextConsumer:
    """Another replica of the same durable consumer, in this process: what it receives, and when."""

    def __init__(self, nats_url: str, stream: StreamSpec, subject: str, durable: str) -> None:
        self.received: list[tuple[int, float]] = []
        self.connection = NatsConnection(nats_url, client_name="kit-test-next", streams=[stream])
        self.connection.start()
        assert wait_until(lambda: self.connection.ready)  # the stream exists from here on
        self.group = ConsumerGroup("kit-test", self.connection, [Subscription(
            stream, (subject,), durable, lambda handled: self.received.append((int(handled.data["number"]),
                                                                               time.monotonic())),
            ack_wait_s=ACK_WAIT_S)], max_in_flight=4)

    def start(self) -> None:
        self.group.start()

    def close(self) -> None:
        self.group.stop(timeout=5)
        self.connection.close(timeout=5)


def consumer_counts(nats_url: str, stream: StreamSpec, durable: str) -> tuple[int, int]:
    """(messages not yet delivered, delivered and not acked) of the durable consumer."""
    async def read() -> tuple[int, int]:
        client = await nats.connect(nats_url, connect_timeout=2, max_reconnect_attempts=0)
        try:
            info = await client.jetstream().consumer_info(stream.name, durable)
            return info.num_pending or 0, info.num_ack_pending or 0
        finally:
            await client.close()

    return asyncio.run(read())


def assert_quiet(transcript: str) -> None:
    for noise in NOISE:
        assert noise not in transcript, transcript


@pytest.mark.parametrize(("mode", "served_as"), [("politeness-wait", "worker"), ("silent-host", "worker"),
                                                  ("silent-host", "http")])
def test_work_that_can_be_redone_gives_way_at_once_and_the_next_consumer_gets_it(nats_url, silent_host, mode,
                                                                                 served_as):
    stream, subject = fresh_stream()
    durable = f"kit-stop-{uuid.uuid4().hex[:6]}"
    following = NextConsumer(nats_url, stream, subject, durable)
    worker = Worker(nats_url, mode, stream, subject, durable, silent_host, served_as)
    try:
        worker.wait_for("consumer_started")
        publish_event(nats_url, subject, event(1))
        worker.wait_for("handling 1")
        following.start()
        code, took, transcript = worker.terminate()
        assert code == 0, transcript
        assert took < 5, transcript  # the worker's grace is 10 s: nothing waited for it
        assert_quiet(transcript)
        assert "handled 1" not in transcript
        assert '"event":"event_abandoned"' in transcript.replace(" ", "")
        # Given back for redelivery: the next consumer has it now, long before the ack wait would have passed.
        assert wait_until(lambda: following.received, timeout=5), transcript
        assert [number for number, _ in following.received] == [1]
    finally:
        worker.kill()
        following.close()
    assert consumer_counts(nats_url, stream, durable) == (0, 0)


def test_work_that_cannot_be_redone_finishes_and_is_acked(nats_url, silent_host):
    stream, subject = fresh_stream()
    durable = f"kit-stop-{uuid.uuid4().hex[:6]}"
    following = NextConsumer(nats_url, stream, subject, durable)
    worker = Worker(nats_url, "short", stream, subject, durable, silent_host)
    try:
        worker.wait_for("consumer_started")
        publish_event(nats_url, subject, event(1))
        worker.wait_for("handling 1")
        following.start()
        code, took, transcript = worker.terminate()
        assert code == 0, transcript
        assert took < 5, transcript
        assert_quiet(transcript)
        assert "handled 1" in transcript
        time.sleep(1.0)
        assert following.received == []  # acked by the worker: nothing to redeliver
    finally:
        worker.kill()
        following.close()
    assert consumer_counts(nats_url, stream, durable) == (0, 0)


@pytest.mark.parametrize(("mode", "drain_s"), [("stubborn", 2.0), ("short", 0.5)])
def test_a_handler_still_running_at_the_deadline_is_given_up(nats_url, silent_host, mode, drain_s):
    """A handler that never returns, or one longer than the drain: given up at the deadline, its message
    redelivered, and the process exits with its handler's thread still running, quietly."""
    stream, subject = fresh_stream()
    durable = f"kit-stop-{uuid.uuid4().hex[:6]}"
    following = NextConsumer(nats_url, stream, subject, durable)
    worker = Worker(nats_url, mode, stream, subject, durable, silent_host, SHUTDOWN_DRAIN_TIMEOUT=str(drain_s))
    try:
        worker.wait_for("consumer_started")
        publish_event(nats_url, subject, event(1))
        worker.wait_for("handling 1")
        following.start()
        code, took, transcript = worker.terminate()
        assert code == 0, transcript
        assert drain_s <= took < drain_s + 4, transcript  # the drain, then the connection's close
        assert_quiet(transcript)
        assert "handled 1" not in transcript
        assert wait_until(lambda: following.received, timeout=5), transcript
        assert [number for number, _ in following.received] == [1]
    finally:
        worker.kill()
        following.close()


def test_fetching_stops_at_once_and_an_idle_worker_exits_quickly(nats_url, silent_host):
    stream, subject = fresh_stream()
    durable = f"kit-stop-{uuid.uuid4().hex[:6]}"
    following = NextConsumer(nats_url, stream, subject, durable)  # makes the stream
    worker = Worker(nats_url, "short", stream, subject, durable, silent_host)
    try:
        worker.wait_for("consumer_started")
        time.sleep(0.3)  # inside a fetch's wait
        code, took, transcript = worker.terminate()
        assert code == 0, transcript
        assert took < 3, transcript
        assert_quiet(transcript)
        # No pull request of the stopped worker is left to take a message published now.
        publish_event(nats_url, subject, event(2))
        following.start()
        assert wait_until(lambda: following.received, timeout=5)
    finally:
        worker.kill()
        following.close()


# --- the stop signal itself ---------------------------------------------------------------------
def test_the_stop_signal_ends_sleeps_and_cuts_blocking_calls():
    stopping = StopSignal()
    stopping.sleep(0.01)  # no stop yet: an ordinary sleep
    released: list[str] = []
    blocked = threading.Event()
    results: list[BaseException | str] = []

    def wait_for_a_silent_host() -> None:
        cut = threading.Event()
        try:
            with stopping.aborting(lambda: (released.append("cut"), cut.set())):
                blocked.set()
                if cut.wait(30):
                    raise ConnectionError("socket shut down")
            results.append("returned")
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            results.append(exc)

    def sleep_politely() -> None:
        try:
            stopping.sleep(30)
            results.append("slept")
        except StopRequested as exc:
            results.append(exc)

    threads = [threading.Thread(target=wait_for_a_silent_host), threading.Thread(target=sleep_politely)]
    for thread in threads:
        thread.start()
    assert blocked.wait(5)
    started = time.monotonic()
    stopping.request()
    for thread in threads:
        thread.join(5)
    assert time.monotonic() - started < 1
    assert released == ["cut"]
    assert len(results) == 2 and all(isinstance(result, StopRequested) for result in results), results
    with pytest.raises(StopRequested):
        stopping.sleep(0)
    with pytest.raises(StopRequested):
        with stopping.aborting(lambda: None):
            pass  # pragma: no cover - never entered: the stop came before
    stopping.request()  # idempotent
    assert released == ["cut"]


def test_a_blocking_call_that_completes_keeps_its_result_and_its_own_errors():
    stopping = StopSignal()
    with stopping.aborting(lambda: None):
        value = 42
    assert value == 42
    with pytest.raises(ValueError):
        with stopping.aborting(lambda: None):
            raise ValueError("not the stop's doing")


def test_a_stopping_group_hands_back_a_redoable_message_in_process(nats_url):
    """The same through the API a service uses, without a process: the handler's StopRequested becomes a nak."""
    stream, subject = fresh_stream()
    durable = f"kit-stop-{uuid.uuid4().hex[:6]}"
    connection = NatsConnection(nats_url, client_name="kit-test", streams=[stream])
    connection.start()
    assert wait_until(lambda: connection.ready)
    stopping = StopSignal()
    handling = threading.Event()

    def handler(_event: Event) -> None:
        handling.set()
        stopping.sleep(60)

    group = ConsumerGroup("kit-test", connection, [Subscription(stream, (subject,), durable, handler)],
                          max_in_flight=2, stopping=stopping)
    group.start()
    following = None
    try:
        publish_event(nats_url, subject, event(1))
        assert handling.wait(10)
        started = time.monotonic()
        group.stop(timeout=10)
        assert time.monotonic() - started < 2.5  # the fetch's open request expires within 1 s; nothing else waits
        following = NextConsumer(nats_url, stream, subject, durable)
        following.start()
        assert wait_until(lambda: following.received, timeout=5)
    finally:
        group.stop(timeout=1)
        connection.close(timeout=5)
        if following is not None:
            following.close()
