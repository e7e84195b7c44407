"""The soak's load: clients that write todos through two servers, each keeping a ledger.

Run by soak/run.py as `python -m soak.clients CONFIG.json RESULT.json`, in a process of
its own so that the orchestrator's clock and probes do not queue behind the load. It
logs every client's users in, prints `START <epoch>`, runs the clients until the
deadline, and writes every request it made and every ledger entry to RESULT.json.

A ledger entry is one todo a client created. Its `possible` set holds the states the
database may hold at the end: after a 2xx exactly the acknowledged state; after a
request with an unknown outcome (an error status, or no answer) the state before or
after that request. `None` in the set means "absent" (deleted, or never created).
"""

# random only shapes the load; nothing here is a secret.
# ruff: noqa: S311

import asyncio
import json
import os
import random
import signal
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

HOST = "127.0.0.1"  # the only address the load ever goes to
PASSWORD = "password123"
# connect/read/write/pool: generous, so that a timeout here means the server hung.
TIMEOUT = httpx.Timeout(connect=5.0, read=30.0, write=10.0, pool=30.0)
LOGIN_ATTEMPTS = 3
LOGIN_PHASE_SECONDS = 120.0
FINISH_GRACE_SECONDS = 60.0
PROBE_EVERY_SECONDS = 1.0
BACKOFF_SECONDS = 0.2  # after an error, as a polite client would
# Below uvicorn's keep-alive timeout (5 s), as a balancer's idle timeout must be: at
# httpx's default of 5 s too, a request now and then meets a connection the server is
# just closing, and is reset before the app sees it.
KEEPALIVE_EXPIRY_SECONDS = 2.0
MAX_POSSIBLE = 8  # a todo with more possible states is left alone from then on
MAX_OPEN_TODOS = 12  # per user: past this, deletes are preferred
NOT_SENT = frozenset({"refused", "connect-error", "connect-timeout"})

State = tuple[str, str, int, bool]  # title, description, priority, complete
FIELDS = ("title", "description", "priority", "complete")
# A request record: started, ended (epoch seconds), client, op, method, port, status
# (None: no HTTP answer), error kind (None: an HTTP answer came), request id, is a retry.
Record = list[Any]


@dataclass(frozen=True, slots=True)
class LoadConfig:
    ports: list[int]
    clients: int
    users_per_client: int
    duration: float
    probers: int
    seed: int
    # SIGTERM to the server process `sigterm_pid` (listening on `sigterm_port`) at
    # t0 + sigterm_at, as soon as it has `sigterm_min_in_flight` requests in flight that
    # were sent `sigterm_settled` seconds before or more, so that it is working on them
    # (at most `sigterm_wait` seconds later): the load is what knows what is in flight.
    sigterm_pid: int | None = None
    sigterm_port: int | None = None
    sigterm_at: float = 0.0
    sigterm_min_in_flight: int = 5
    sigterm_settled: float = 0.05
    sigterm_wait: float = 5.0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "LoadConfig":
        return cls(**data)


@dataclass(slots=True)
class Answer:
    status: int | None
    error: str | None
    body: Any
    request_id: str

    @property
    def ok(self) -> bool:
        return self.error is None and self.status is not None and 200 <= self.status < 300

    @property
    def sent(self) -> bool:
        """False when nothing reached a server: every attempt failed to connect."""
        return self.error not in NOT_SENT

    def describe(self) -> str:
        return f"{self.status if self.status is not None else self.error} ({self.request_id})"


@dataclass(slots=True)
class TodoEntry:
    key: str  # the title it was created with: unique in the whole soak
    client: int
    username: str
    created: State
    todo_id: int | None = None  # None: the create's outcome is unknown
    possible: set[State | None] = field(default_factory=set)
    history: list[str] = field(default_factory=list)
    unknown_outcomes: int = 0
    acked_delete: bool = False
    retired: bool = False

    def to_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "client": self.client,
            "username": self.username,
            "created": list(self.created),
            "todo_id": self.todo_id,
            "possible": [None if s is None else list(s) for s in self.possible],
            "history": self.history,
            "unknown_outcomes": self.unknown_outcomes,
            "acked_delete": self.acked_delete,
        }


def state_of(body: dict[str, Any]) -> State:
    return (body["title"], body["description"], int(body["priority"]), bool(body["complete"]))


def apply_change(state: State | None, change: dict[str, Any]) -> State | None:
    if state is None:
        return None
    values = dict(zip(FIELDS, state, strict=True))
    values.update(change)
    return (values["title"], values["description"], values["priority"], values["complete"])


def _refused(exc: BaseException) -> bool:
    """Whether a ConnectionRefusedError is anywhere in the exception's chain."""
    stack: list[BaseException | None] = [exc]
    seen: set[int] = set()
    while stack:
        current = stack.pop()
        if current is None or id(current) in seen:
            continue
        seen.add(id(current))
        if isinstance(current, ConnectionRefusedError):
            return True
        stack += [current.__cause__, current.__context__]
        stack += list(getattr(current, "exceptions", ()))
    return False


class Balancer:
    """The load balancer's part: round-robin over the ports it believes are up.

    A port that refuses a connection is taken out (never the last one), as a balancer
    does with a backend that stopped listening.
    """

    def __init__(self, ports: Sequence[int]) -> None:
        self.ports = list(ports)
        self.taken_out: dict[int, float] = {}
        # port -> request id -> when it was sent
        self.in_flight: dict[int, dict[str, float]] = {port: {} for port in self.ports}

    def settled_in_flight(self, port: int, age: float) -> int:
        """Requests in flight on `port` sent at least `age` seconds ago."""
        cutoff = time.time() - age
        return sum(1 for sent in self.in_flight[port].values() if sent <= cutoff)

    def live(self) -> list[int]:
        return [p for p in self.ports if p not in self.taken_out] or list(self.ports)

    def pick(self, turn: int) -> int:
        live = self.live()
        return live[turn % len(live)]

    def take_out(self, port: int) -> None:
        if port not in self.taken_out and len(self.live()) > 1:
            self.taken_out[port] = time.time()

    def alternative(self, port: int) -> int | None:
        others = [p for p in self.live() if p != port]
        return others[0] if others else None


class Client:
    """One client: its own connections, four users, their tokens and its ledger."""

    def __init__(
        self,
        index: int,
        usernames: list[str],
        balancer: Balancer,
        records: list[Record],
        violations: list[str],
        *,
        prober: bool,
        seed: int,
    ) -> None:
        self.index = index
        self.usernames = usernames
        self.balancer = balancer
        self.records = records
        self.violations = violations
        self.prober = prober
        self.rng = random.Random(seed * 1000 + index)
        self.http = httpx.AsyncClient(
            timeout=TIMEOUT,
            trust_env=False,  # never a proxy: straight to 127.0.0.1
            limits=httpx.Limits(
                max_connections=4,
                max_keepalive_connections=4,
                keepalive_expiry=KEEPALIVE_EXPIRY_SECONDS,
            ),
        )
        self.tokens: dict[str, str] = {}
        self.open_todos: dict[str, list[TodoEntry]] = {name: [] for name in usernames}
        self.entries: list[TodoEntry] = []
        self.seq = 0
        self.turn = index
        self.counter = 0

    # --- transport -------------------------------------------------------------------
    async def _attempt(
        self,
        op: str,
        method: str,
        path: str,
        port: int,
        *,
        retry: bool,
        token: str | None,
        json_body: dict[str, Any] | None,
        form: dict[str, str] | None,
    ) -> Answer:
        self.seq += 1
        request_id = f"soak-{self.index}-{self.seq}"
        headers = {"X-Request-ID": request_id}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        status: int | None = None
        error: str | None = None
        body: Any = None
        started = time.time()
        self.balancer.in_flight[port][request_id] = started
        try:
            response = await self.http.request(
                method, f"http://{HOST}:{port}{path}", headers=headers, json=json_body, data=form
            )
            status = response.status_code
            if 200 <= status < 300:
                body = response.json() if response.content else None
            else:
                body = response.text[:300]
        except httpx.ConnectTimeout:
            error = "connect-timeout"
        except httpx.ConnectError as exc:
            error = "refused" if _refused(exc) else "connect-error"
        except httpx.TimeoutException:
            error = "timeout"
        except httpx.RemoteProtocolError:
            error = "disconnected"  # the server closed without answering
        except (httpx.ReadError, httpx.WriteError):
            error = "reset"
        except httpx.HTTPError as exc:
            error = type(exc).__name__
        except ValueError:
            error = "bad-json"  # a 2xx whose body is not JSON
        finally:
            del self.balancer.in_flight[port][request_id]
        ended = time.time()
        self.records.append(
            [started, ended, self.index, op, method, port, status, error, request_id, retry]
        )
        return Answer(status, error, body, request_id)

    async def send(
        self,
        op: str,
        method: str,
        path: str,
        *,
        token: str | None = None,
        json_body: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
    ) -> Answer:
        port = self.balancer.pick(self.turn)
        self.turn += 1
        args = {"token": token, "json_body": json_body, "form": form}
        answer = await self._attempt(op, method, path, port, retry=False, **args)
        if answer.error == "refused":
            # Refused at connect: nothing was sent, so even a POST may go elsewhere, once.
            self.balancer.take_out(port)
            other = self.balancer.alternative(port)
            if other is not None:
                answer = await self._attempt(op, method, path, other, retry=True, **args)
        if not answer.ok and answer.status != 404:
            await asyncio.sleep(BACKOFF_SECONDS)
        return answer

    # --- logins ----------------------------------------------------------------------
    async def log_in_all(self) -> None:
        for name in self.usernames:
            for attempt in range(LOGIN_ATTEMPTS):
                answer = await self.send(
                    "login", "POST", "/auth/token", form={"username": name, "password": PASSWORD}
                )
                if answer.status == 200:
                    self.tokens[name] = answer.body["access_token"]
                    break
                if attempt == LOGIN_ATTEMPTS - 1:
                    self.violations.append(
                        f"setup: login of {name} failed {LOGIN_ATTEMPTS} times, "
                        f"last answer {answer.describe()}: {answer.body!r}"
                    )

    async def probe_login(self) -> None:
        name = self.rng.choice(self.usernames)
        answer = await self.send(
            "login-probe", "POST", "/auth/token", form={"username": name, "password": PASSWORD}
        )
        if answer.status == 200:
            self.tokens[name] = answer.body["access_token"]

    # --- the ledger --------------------------------------------------------------------
    def _violation(self, entry: TodoEntry, message: str) -> None:
        self.violations.append(
            f"client {self.index}, todo {entry.todo_id} ({entry.key!r}, {entry.username}): "
            f"{message}; history: {'; '.join(entry.history[-6:])}"
        )

    def _settle(self, entry: TodoEntry) -> None:
        if entry.possible == {None} or len(entry.possible) > MAX_POSSIBLE:
            entry.retired = True
        if entry.retired and entry in self.open_todos[entry.username]:
            self.open_todos[entry.username].remove(entry)

    def _gone(self, entry: TodoEntry, answer: Answer, what: str) -> None:
        """A 404 for this todo: fine only if the ledger allows it to be absent."""
        if None in entry.possible:
            entry.possible = {None}
        else:
            self._violation(entry, f"{what} answered 404 {answer.request_id}, yet it must exist")
            entry.retired = True
        self._settle(entry)

    def _text(self) -> str:
        return f"note {self.rng.randrange(10**9):09d}"

    async def create(self, name: str) -> None:
        self.counter += 1
        key = f"soak c{self.index} n{self.counter}"
        state: State = (key, self._text(), self.rng.randint(1, 5), self.rng.random() < 0.2)
        entry = TodoEntry(key=key, client=self.index, username=name, created=state)
        body = dict(zip(FIELDS, state, strict=True))
        answer = await self.send(
            "create", "POST", "/todos", token=self.tokens[name], json_body=body
        )
        entry.history.append(f"POST {answer.describe()}")
        if answer.ok:
            entry.todo_id = int(answer.body["id"])
            got = state_of(answer.body)
            if got != state:
                self._violation(entry, f"create answered {got}, not what was sent {state}")
            entry.possible = {got}
            self.open_todos[name].append(entry)
        elif not answer.sent:
            return  # nothing reached a server: there is nothing to check
        else:
            entry.unknown_outcomes += 1
            entry.possible = {None, state}
            entry.retired = True  # its id is unknown: it is found by its unique title
        self.entries.append(entry)

    async def write(
        self, name: str, entry: TodoEntry, op: str, method: str, change: dict[str, Any]
    ) -> None:
        expected = {apply_change(s, change) for s in entry.possible if s is not None}
        answer = await self.send(
            op, method, f"/todos/{entry.todo_id}", token=self.tokens[name], json_body=change
        )
        entry.history.append(f"{method} {sorted(change)} {answer.describe()}")
        if answer.ok:
            got = state_of(answer.body)
            if got not in expected:
                self._violation(entry, f"{op} answered {got}, none of {sorted(expected, key=str)}")
            entry.possible = {got}
        elif answer.status == 404:
            self._gone(entry, answer, op)
        elif answer.sent:
            entry.unknown_outcomes += 1
            entry.possible |= expected
        self._settle(entry)

    async def delete(self, name: str, entry: TodoEntry) -> None:
        answer = await self.send(
            "delete", "DELETE", f"/todos/{entry.todo_id}", token=self.tokens[name]
        )
        entry.history.append(f"DELETE {answer.describe()}")
        if answer.ok:
            entry.possible = {None}
            entry.acked_delete = True
        elif answer.status == 404:
            self._gone(entry, answer, "delete")
        elif answer.sent:
            entry.unknown_outcomes += 1
            entry.possible.add(None)
        self._settle(entry)

    async def read(self, name: str, entry: TodoEntry) -> None:
        answer = await self.send("read", "GET", f"/todos/{entry.todo_id}", token=self.tokens[name])
        if answer.ok:
            got = state_of(answer.body)
            if got not in entry.possible:
                # A read never narrows the ledger (an unknown write may still be in flight).
                self._violation(entry, f"read {got} ({answer.request_id}), not a possible state")
        elif answer.status == 404 and None not in entry.possible:
            self._violation(entry, f"read answered 404 {answer.request_id}, yet it must exist")

    async def list_page(self, name: str) -> None:
        await self.send("list", "GET", "/todos?limit=10&sort=-id", token=self.tokens[name])

    # --- the loop --------------------------------------------------------------------
    async def step(self) -> None:
        name = self.rng.choice([n for n in self.usernames if n in self.tokens] or [""])
        if not name:
            await asyncio.sleep(1.0)  # no user could log in: reported at setup
            return
        todos = self.open_todos[name]
        roll = self.rng.random()
        if not todos or (roll < 0.25 and len(todos) < MAX_OPEN_TODOS):
            await self.create(name)
            return
        entry = self.rng.choice(todos)
        if roll < 0.30 or len(todos) >= MAX_OPEN_TODOS:
            await self.delete(name, entry)
        elif roll < 0.65:
            n = len(entry.history)
            variants: list[dict[str, Any]] = [
                {"title": f"{entry.key} v{n}", "priority": self.rng.randint(1, 5)},
                {"description": self._text(), "complete": self.rng.random() < 0.5},
                {
                    "title": f"{entry.key} v{n}",
                    "description": self._text(),
                    "priority": self.rng.randint(1, 5),
                },
            ]
            await self.write(name, entry, "patch", "PATCH", self.rng.choice(variants))
        elif roll < 0.75:
            await self.write(name, entry, "complete", "PATCH", {"complete": True})
        elif roll < 0.82:
            change = {
                "title": f"{entry.key} v{len(entry.history)}",
                "description": self._text(),
                "priority": self.rng.randint(1, 5),
                "complete": self.rng.random() < 0.5,
            }
            await self.write(name, entry, "put", "PUT", change)
        elif roll < 0.93:
            await self.read(name, entry)
        else:
            await self.list_page(name)

    async def run(self, deadline: float) -> None:
        if self.prober:
            await asyncio.gather(self._work(deadline), self._probe(deadline))
        else:
            await self._work(deadline)

    async def _work(self, deadline: float) -> None:
        try:
            while time.time() < deadline:
                await self.step()
        except (KeyError, TypeError, ValueError) as exc:  # an answer of an unexpected shape
            self.violations.append(f"client {self.index} stopped: {type(exc).__name__}: {exc}")

    async def _probe(self, deadline: float) -> None:
        """A login every PROBE_EVERY_SECONDS, beside the client's own work."""
        await asyncio.sleep(self.rng.random() * PROBE_EVERY_SECONDS)
        while time.time() < deadline:
            started = time.time()
            await self.probe_login()
            await asyncio.sleep(max(0.0, started + PROBE_EVERY_SECONDS - time.time()))


async def terminate_under_load(
    config: LoadConfig, balancer: Balancer, t0: float, sent: dict[str, float]
) -> None:
    if config.sigterm_pid is None or config.sigterm_port is None:
        return
    await asyncio.sleep(max(0.0, t0 + config.sigterm_at - time.time()))
    give_up = time.time() + config.sigterm_wait
    while (
        balancer.settled_in_flight(config.sigterm_port, config.sigterm_settled)
        < config.sigterm_min_in_flight
        and time.time() < give_up
    ):
        await asyncio.sleep(0.002)
    sent["in_flight"] = len(balancer.in_flight[config.sigterm_port])
    sent["settled"] = balancer.settled_in_flight(config.sigterm_port, config.sigterm_settled)
    sent["at"] = time.time()
    os.kill(config.sigterm_pid, signal.SIGTERM)
    print(f"SIGTERM {sent['at']:.6f}", flush=True)


async def run_load(config: LoadConfig) -> dict[str, Any]:
    balancer = Balancer(config.ports)
    records: list[Record] = []
    violations: list[str] = []
    clients = [
        Client(
            i,
            [
                f"demo{i * config.users_per_client + k}"
                for k in range(1, config.users_per_client + 1)
            ],
            balancer,
            records,
            violations,
            prober=i < config.probers,
            seed=config.seed,
        )
        for i in range(config.clients)
    ]
    t0 = time.time()
    finished = False
    sigterm: dict[str, float] = {}
    try:
        await asyncio.wait_for(
            asyncio.gather(*(c.log_in_all() for c in clients)), timeout=LOGIN_PHASE_SECONDS
        )
        t0 = time.time()
        print(f"START {t0:.6f}", flush=True)
        await asyncio.wait_for(
            asyncio.gather(
                terminate_under_load(config, balancer, t0, sigterm),
                *(c.run(t0 + config.duration) for c in clients),
            ),
            timeout=config.duration + FINISH_GRACE_SECONDS,
        )
        finished = True
    except TimeoutError:
        violations.append(
            f"load: the clients did not finish within {FINISH_GRACE_SECONDS:.0f} s of the "
            "deadline (a request hung)"
        )
    finally:
        await asyncio.gather(*(c.http.aclose() for c in clients), return_exceptions=True)
    return {
        "t0": t0,
        "ended": time.time(),
        "finished": finished,
        "records": records,
        "violations": violations,
        "taken_out": {str(port): when for port, when in balancer.taken_out.items()},
        "sigterm": sigterm,
        "cpu_seconds": time.process_time(),
        "entries": [e.to_json() for c in clients for e in c.entries],
    }


# --- the check of the ledgers against the database ---------------------------------------
@dataclass(slots=True)
class LedgerVerdict:
    entries: int = 0
    acked_creates: int = 0
    unknown_creates: int = 0
    unknown_creates_applied: int = 0
    acked_deletes: int = 0
    present: int = 0
    exact: int = 0  # todos whose ledger allowed exactly one final state
    ambiguous: int = 0  # todos with an unknown-outcome write: two or more allowed states
    unknown_writes: int = 0
    violations: list[str] = field(default_factory=list)


def _fmt(state: Sequence[Any] | None) -> str:
    return "absent" if state is None else repr(tuple(state))


def check_ledger(entries: Iterable[dict[str, Any]], rows: Iterable[Sequence[Any]]) -> LedgerVerdict:
    """Compare the ledgers with the database rows (id, username, title, description,
    priority, complete) of every todo whose title starts with 'soak '."""
    verdict = LedgerVerdict()
    by_id = {int(row[0]): row for row in rows}
    claimed: set[int] = set()
    unknown_by_key: dict[str, dict[str, Any]] = {}
    for entry in entries:
        verdict.entries += 1
        verdict.unknown_writes += int(entry["unknown_outcomes"])
        possible = [None if s is None else tuple(s) for s in entry["possible"]]
        if entry["todo_id"] is None:
            verdict.unknown_creates += 1
            unknown_by_key[entry["key"]] = entry
            continue
        verdict.acked_creates += 1
        verdict.acked_deletes += int(entry["acked_delete"])
        row = by_id.get(int(entry["todo_id"]))
        state = None if row is None else (row[2], row[3], int(row[4]), bool(row[5]))
        if row is not None:
            claimed.add(int(row[0]))
            verdict.present += 1
            if row[1] != entry["username"]:
                verdict.violations.append(
                    f"todo {entry['todo_id']} belongs to {row[1]}, not {entry['username']}"
                )
        if len(possible) == 1:
            verdict.exact += 1
        else:
            verdict.ambiguous += 1
        if state not in possible:
            what = "missing" if state is None else "in a state the ledger does not allow"
            verdict.violations.append(
                f"todo {entry['todo_id']} ({entry['username']}, client {entry['client']}) is "
                f"{what}: database {_fmt(state)}, allowed "
                f"{' or '.join(_fmt(s) for s in possible)}; history: {'; '.join(entry['history'])}"
            )
    seen_keys: set[str] = set()
    for row_id, row in sorted(by_id.items()):
        if row_id in claimed:
            continue
        unknown = unknown_by_key.get(row[2])
        state = (row[2], row[3], int(row[4]), bool(row[5]))
        if unknown is None:
            verdict.violations.append(
                f"todo {row_id} ({row[1]}) {_fmt(state)} is in the database but in no ledger"
            )
        elif row[2] in seen_keys:
            verdict.violations.append(f"create {row[2]!r} was applied twice (todo {row_id})")
        elif state != tuple(unknown["created"]) or row[1] != unknown["username"]:
            verdict.violations.append(
                f"todo {row_id}, an unknown-outcome create, is half-applied: {_fmt(state)} "
                f"for {row[1]}, sent {_fmt(unknown['created'])} for {unknown['username']}"
            )
        else:
            verdict.unknown_creates_applied += 1
        seen_keys.add(row[2])
    return verdict


def main(argv: Sequence[str]) -> int:
    if len(argv) != 2:
        print("usage: python -m soak.clients CONFIG.json RESULT.json", file=sys.stderr)
        return 2
    config = LoadConfig.from_json(json.loads(Path(argv[0]).read_text()))
    try:
        import uvloop  # the servers' loop: cheaper per request than asyncio's own

        result = uvloop.run(run_load(config))
    except ImportError:
        result = asyncio.run(run_load(config))
    Path(argv[1]).write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
