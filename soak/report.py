"""Judging a soak: requests, probes, events and host logs against the rules; the report.

Everything here works on what run.py collected (SoakFacts), so that the rules can be
read in one place:

- every request goes through HAProxy and gets an HTTP answer: no refused, reset or
  unanswered connection at any time, the rolling restart included;
- an answer is 2xx; or 404 where the ledger decides; or 503 while the database is down
  (from the stop command until every host's /readyz answers 200 again and HAProxy has
  one back in rotation);
- requests during the outage end within MAX_OUTAGE_LATENCY; /readyz is 503 on both
  hosts while the database is down and 200 again within READY_AGAIN_WITHIN;
- login probes get 200 outside the database outage, Redis restart included;
- in the rolling restart, each host's /readyz turns 503 and HAProxy takes it out of
  rotation before it exits; it exits cleanly within its grace period, without
  cancelling a request, and is back in rotation before the next host is restarted;
- the ledgers agree with the database (soak/clients.py: check_ledger).
"""

import itertools
import math
import re
import signal
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from soak.clients import LedgerVerdict

MAX_OUTAGE_LATENCY = 15.0
READY_AGAIN_WITHIN = 15.0
GRACEFUL_SECONDS = 20.0
EXIT_MARGIN_SECONDS = 5.0
SAMPLES = 5
TODO_OPS = frozenset({"patch", "complete", "put", "delete", "read"})
ACCESS_LINE = re.compile(r"todoapp\.access: (\S+) (\S+) (\d{3}) ([\d.]+)ms (\S+)")
UNAVAILABLE_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) WARNING todoapp: database unavailable "
    r"\((\w+)\) on (\S+)",
    re.MULTILINE,
)
# uvicorn re-raises the signal it stopped for once it has shut down gracefully, so a
# clean stop by SIGTERM exits with -15; its log then ends with this line.
CLEAN_EXIT_CODES = (0, -signal.SIGTERM)
FINISHED = "Finished server process"
BURST_GAP_SECONDS = 1.0
TIMED_ACCESS_LINE = re.compile(
    r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3}) INFO todoapp\.access: \S+ \S+ (\d{3}) ",
    re.MULTILINE,
)
UNHANDLED_LINE = re.compile(r"todoapp\.access: unhandled (\w+) on (\S+) (\S+) (\S+)")

# record fields (soak/clients.py: Record)
STARTED, ENDED, CLIENT, OP, METHOD, PORT, STATUS, ERROR, REQUEST_ID, RETRY = range(10)
# poll fields: started, ended, server name, status, error
ENDED_POLL, NAME_POLL, STATUS_POLL, ERROR_POLL = 1, 2, 3, 4


@dataclass(slots=True)
class ServerFacts:
    name: str
    port: int
    pid: int
    log: Path
    sigterm_at: float | None = None  # the SIGTERM of the rolling restart
    exited_at: float | None = None
    returncode: int | None = None
    ready_again_at: float | None = None  # restarted, its /readyz 200
    up_again_at: float | None = None  # and back in HAProxy's rotation
    final_stop_at: float | None = None  # the SIGTERM after the load
    final_exited_at: float | None = None
    final_returncode: int | None = None
    cpu_seconds: float = 0.0
    pids: list[int] = field(default_factory=list)
    cpu_by_pid: dict[int, float] = field(default_factory=dict)

    def log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def unavailable(self) -> list[tuple[float, str, str]]:
        """(epoch, exception, path) of every 'database unavailable' warning."""
        return [
            (datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp(), m[2], m[3])
            for m in UNAVAILABLE_LINE.finditer(self.log_text())
        ]

    def clean_exit(self) -> bool:
        return self.returncode in CLEAN_EXIT_CODES and FINISHED in self.log_text()

    def access_log(self) -> dict[str, int]:
        """Request id -> status, for every request the app finished (its access log)."""
        return {m[5]: int(m[3]) for m in ACCESS_LINE.finditer(self.log_text())}

    def answered_2xx_after(self, when: float) -> int:
        """Requests this host answered with 2xx after `when` (its access log's times)."""
        return sum(
            1
            for m in TIMED_ACCESS_LINE.finditer(self.log_text())
            if m[2].startswith("2")
            and datetime.strptime(m[1], "%Y-%m-%d %H:%M:%S,%f").timestamp() > when
        )


@dataclass(slots=True)
class SoakFacts:
    t0: float
    duration: float
    events: dict[str, float]
    servers: list[ServerFacts]
    polls: list[list[Any]]  # started, ended, server name, status, error
    load: dict[str, Any]
    ledger: LedgerVerdict
    database: dict[str, Any]
    settings: dict[str, str]
    setup_log: list[str] = field(default_factory=list)
    balancer_polls: list[list[Any]] = field(default_factory=list)  # [time, {"A": "UP"...}]


def percentile(values: list[float], fraction: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def _outcome(record: list[Any]) -> str:
    return str(record[STATUS]) if record[STATUS] is not None else f"no answer: {record[ERROR]}"


def _tally(records: list[list[Any]]) -> str:
    counts = Counter(_outcome(r) for r in records)
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items())) or "none"


def _ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


class Judge:
    def __init__(self, facts: SoakFacts) -> None:
        self.f = facts
        self.lines: list[str] = []
        self.violations: list[str] = []
        self.by_port = {s.port: s for s in facts.servers}
        self.by_name = {s.name: s for s in facts.servers}
        self.client_saw = {r[REQUEST_ID]: _outcome(r) for r in facts.load["records"]}
        events = facts.events
        self.outage_start = events.get("db_stop_begin", math.inf)
        self.db_back = events.get("db_start_done", math.inf)
        self.recovered = self._recovered()
        self.outage_end = (
            self.recovered if self.recovered is not None else self.db_back + READY_AGAIN_WITHIN
        )

    # --- helpers ------------------------------------------------------------------------
    def t(self, when: float | None) -> str:
        return "never" if when is None or math.isinf(when) else f"t={when - self.f.t0:+.2f}s"

    def out(self, line: str = "") -> None:
        self.lines.append(line)

    def fail(self, message: str) -> None:
        self.violations.append(message)

    def fail_group(self, what: str, samples: list[str]) -> None:
        if samples:
            shown = "; ".join(samples[:SAMPLES])
            more = f" (and {len(samples) - SAMPLES} more)" if len(samples) > SAMPLES else ""
            self.fail(f"{len(samples)} x {what}: {shown}{more}")

    def server_of(self, record: list[Any]) -> ServerFacts | None:
        return self.by_port.get(record[PORT])

    def in_outage(self, record: list[Any]) -> bool:
        return record[STARTED] <= self.outage_end and record[ENDED] >= self.outage_start

    def _alive_at(self, server: ServerFacts, when: float) -> bool:
        return server.sigterm_at is None or server.sigterm_at > when

    def _recovered(self) -> float | None:
        """When every server up at the time answered /readyz 200 after the database was back."""
        if math.isinf(self.db_back):
            return None
        times = []
        for server in self.f.servers:
            if not self._alive_at(server, self.db_back):
                continue
            ok = [
                p[ENDED_POLL]
                for p in self.f.polls
                if p[NAME_POLL] == server.name
                and p[STARTED] >= self.db_back
                and p[STATUS_POLL] == 200
            ]
            if not ok:
                return None
            times.append(min(ok))
        # And HAProxy has a host back in rotation: until then it answers 503 itself.
        in_rotation = [
            when
            for when, states in self.f.balancer_polls
            if when >= self.db_back and "UP" in states.values()
        ]
        if self.f.balancer_polls:
            if not in_rotation:
                return None
            times.append(min(in_rotation))
        return max(times) if times else None

    # --- sections -----------------------------------------------------------------------
    def header(self) -> None:
        s = self.f.settings
        self.out("# Soak report")
        self.out()
        for key, value in s.items():
            self.out(f"- {key}: {value}")
        self.out()
        self.out("## Timeline (t=0 when the 50 clients start, after their logins)")
        self.out()
        for name, when in sorted(self.f.events.items(), key=lambda item: item[1]):
            self.out(f"- {self.t(when)} {name}")
        self.out()

    def requests(self) -> None:
        records = self.f.load["records"]
        answered = [r for r in records if r[STATUS] is not None]
        latencies = [r[ENDED] - r[STARTED] for r in answered]
        ops = Counter(r[OP] for r in records)
        self.out("## Requests")
        self.out()
        self.out(
            f"- total {len(records)} HTTP requests ({sum(1 for r in records if r[RETRY])} of "
            f"them retries of a refused connection on the other port), "
            f"{len(records) / max(self.f.duration, 1):.0f}/s"
        )
        self.out(f"- by operation: {', '.join(f'{k} {v}' for k, v in sorted(ops.items()))}")
        self.out(f"- by outcome: {_tally(records)}")
        self.out(
            f"- latency of answered requests: p50 {_ms(percentile(latencies, 0.50))}, "
            f"p99 {_ms(percentile(latencies, 0.99))}, max {_ms(max(latencies, default=math.nan))}"
        )
        calm = [
            r[ENDED] - r[STARTED]
            for r in answered
            if not self.in_outage(r) and r[STARTED] < self.f.t0 + self.f.duration
        ]
        self.out(
            f"- outside the database outage: p50 {_ms(percentile(calm, 0.50))}, "
            f"p99 {_ms(percentile(calm, 0.99))}"
        )
        unknown = sum(
            1
            for r in records
            if r[OP] in TODO_OPS | {"create"}
            and r[ERROR] not in {"refused", "connect-error", "connect-timeout"}
            and not (r[STATUS] is not None and (200 <= r[STATUS] < 300 or r[STATUS] == 404))
        )
        self.out(
            f"- writes and reads with an unknown outcome (error status or no answer): {unknown}"
        )
        self.out()
        self._judge_each(records)

    def _judge_each(self, records: list[list[Any]]) -> None:
        groups: dict[str, list[str]] = defaultdict(list)
        logs = {s.name: s.access_log() for s in self.f.servers}
        self.closed_unread: list[str] = []
        self.accepted_reset: list[str] = []
        for r in records:
            server = self.server_of(r)
            name = server.name if server else f"port {r[PORT]}"
            where = f"{r[METHOD]} {r[OP]} on {name} {self.t(r[STARTED])} ({r[REQUEST_ID]})"
            status, error = r[STATUS], r[ERROR]
            if r[ENDED] - r[STARTED] > MAX_OUTAGE_LATENCY and not self.in_outage(r):
                groups[f"request slower than {MAX_OUTAGE_LATENCY:.0f} s"].append(where)
            if status is not None:
                if 200 <= status < 300:
                    continue
                if status == 404 and r[OP] in TODO_OPS:
                    continue  # the ledger decides whether that todo could be gone
                if status == 503 and self.in_outage(r):
                    continue
                if status >= 500:
                    groups[f"{status} outside the database outage"].append(where)
                elif status == 429:
                    groups["429 (throttled) with the right password"].append(where)
                else:
                    groups[f"unexpected {status}"].append(where)
                continue
            stopping = server is not None and server.sigterm_at is not None
            after_sigterm = stopping and server is not None and r[ENDED] >= (server.sigterm_at or 0)
            if error == "refused":
                if not (
                    after_sigterm and server is not None and r[STARTED] >= (server.sigterm_at or 0)
                ):
                    groups["connection refused by a server that was not stopping"].append(where)
                continue
            if error in {"disconnected", "reset"} and after_sigterm and server is not None:
                status_in_log = logs[server.name].get(r[REQUEST_ID])
                if status_in_log is None:
                    self.closed_unread.append(where)
                else:
                    self.accepted_reset.append(
                        f"{where}, which its log shows answered {status_in_log}"
                    )
                continue
            groups[f"no answer ({error})"].append(where)
        for what, samples in groups.items():
            self.fail_group(what, samples)
        self.fail_group("request accepted by the stopping server, then reset", self.accepted_reset)

    def outage(self) -> None:
        ev = self.f.events
        records = self.f.load["records"]
        during = [r for r in records if self.in_outage(r)]
        worst = max((r[ENDED] - r[STARTED] for r in during), default=math.nan)
        self.out("## Database restart")
        self.out()
        self.out(
            f"- stopped {self.t(ev.get('db_stop_begin'))} to {self.t(ev.get('db_stop_done'))}, "
            f"started {self.t(ev.get('db_start_begin'))} to {self.t(ev.get('db_start_done'))}; "
            f"503 allowed from {self.t(self.outage_start)} to {self.t(self.outage_end)}"
        )
        self.out(f"- {len(during)} requests overlapped that window: {_tally(during)}")
        self.out(f"- slowest of them: {_ms(worst)} (limit {MAX_OUTAGE_LATENCY:.0f} s)")
        if not during:
            self.fail("no request was made while the database was down")
        if not math.isnan(worst) and worst > MAX_OUTAGE_LATENCY:
            slow = [
                f"{r[METHOD]} {r[OP]} {r[REQUEST_ID]} took {r[ENDED] - r[STARTED]:.1f}s"
                for r in during
                if r[ENDED] - r[STARTED] > MAX_OUTAGE_LATENCY
            ]
            self.fail_group(f"request slower than {MAX_OUTAGE_LATENCY:.0f} s in the outage", slow)
        down_from, down_to = ev.get("db_stop_done", math.inf), ev.get("db_start_begin", -math.inf)
        for server in self.f.servers:
            if not self._alive_at(server, down_to):
                continue
            polls = [
                p
                for p in self.f.polls
                if p[NAME_POLL] == server.name and p[STARTED] >= down_from and p[ENDED] <= down_to
            ]
            answers = Counter(
                str(p[STATUS_POLL]) if p[STATUS_POLL] else str(p[ERROR_POLL]) for p in polls
            )
            slowest = max((p[ENDED_POLL] - p[STARTED] for p in polls), default=math.nan)
            self.out(
                f"- /readyz on {server.name} while the database was down: "
                + (", ".join(f"{k}: {v}" for k, v in sorted(answers.items())) or "no poll")
                + f"; slowest {_ms(slowest)}"
            )
            if not polls:
                self.fail(f"/readyz on {server.name} was not polled while the database was down")
            bad = [p for p in polls if p[STATUS_POLL] != 503]
            if bad:
                self.fail(
                    f"/readyz on {server.name} answered {sorted(answers)} while the database "
                    "was down (503 expected every time)"
                )
            if not math.isnan(slowest) and slowest > MAX_OUTAGE_LATENCY:
                self.fail(f"/readyz on {server.name} took {slowest:.1f}s during the outage")
            back = [
                p[ENDED_POLL]
                for p in self.f.polls
                if p[NAME_POLL] == server.name
                and p[STARTED] >= self.db_back
                and p[STATUS_POLL] == 200
            ]
            first = min(back) if back else None
            took = (first - self.db_back) if first is not None else math.inf
            self.out(
                f"- /readyz on {server.name} 200 again {self.t(first)}, "
                f"{took:.2f}s after the database was back (limit {READY_AGAIN_WITHIN:.0f} s)"
            )
            if took > READY_AGAIN_WITHIN:
                self.fail(
                    f"/readyz on {server.name} was not 200 within {READY_AGAIN_WITHIN:.0f} s "
                    "after the database came back"
                )
            served = server.answered_2xx_after(self.outage_end)
            self.out(f"- {server.name} answered {served} requests with 2xx after the outage")
            if served == 0 and (server.sigterm_at or math.inf) > self.outage_end + 1:
                self.fail(f"{server.name} served no 2xx after the database came back")
        self.out()

    def redis(self) -> None:
        ev = self.f.events
        start, end = ev.get("redis_stop_begin", math.inf), ev.get("redis_up", -math.inf)
        probes = [r for r in self.f.load["records"] if r[OP] == "login-probe"]
        during = [r for r in probes if r[STARTED] <= end and r[ENDED] >= start]
        bad = [
            f"{_outcome(r)} on port {r[PORT]} {self.t(r[STARTED])} ({r[REQUEST_ID]})"
            for r in probes
            if r[STATUS] != 200
            and not (r[STATUS] == 503 and self.in_outage(r))
            and r[ERROR] != "refused"
        ]
        self.out("## Redis restart and logins")
        self.out()
        self.out(
            f"- private Redis stopped {self.t(ev.get('redis_stop_begin'))}, answering again "
            f"{self.t(ev.get('redis_up'))}"
        )
        self.out(f"- {len(probes)} login probes (right password): {_tally(probes)}")
        self.out(f"- {len(during)} of them while Redis was restarting: {_tally(during)}")
        if not during:
            self.fail("no login probe overlapped the Redis restart")
        self.fail_group("login probe not answered 200 (outside the database outage)", bad)
        self.out()

    def rolling(self) -> None:
        self.out("## Rolling restart (each host: SIGTERM, drain, exit, start, back in rotation)")
        self.out()
        records = self.f.load["records"]
        restarted = [s for s in self.f.servers if s.sigterm_at is not None]
        if not restarted:
            self.fail("no host was restarted")
        for server in restarted:
            sig = server.sigterm_at or math.inf
            exited = server.exited_at if server.exited_at is not None else math.inf
            took = exited - sig
            drained = [
                p[STARTED]
                for p in self.f.polls
                if p[NAME_POLL] == server.name and sig <= p[STARTED] and p[STATUS_POLL] == 503
            ]
            first_503 = min(drained) if drained else None
            taken_out = [
                when
                for when, states in self.f.balancer_polls
                if when >= sig and states.get(server.name) not in (None, "UP")
            ]
            out_at = min(taken_out) if taken_out else None
            self.out(
                f"- {server.name}: SIGTERM {self.t(sig)}; /readyz 503 from {self.t(first_503)}; "
                f"out of HAProxy's rotation {self.t(out_at)}; exited {self.t(server.exited_at)} "
                f"with code {server.returncode}, {took:.2f}s after the signal; ready again "
                f"{self.t(server.ready_again_at)}, back in rotation {self.t(server.up_again_at)}"
            )
            window_end = server.up_again_at if server.up_again_at is not None else math.inf
            during = [r for r in records if r[ENDED] >= sig and r[STARTED] <= window_end]
            self.out(f"- {len(during)} requests overlapped its restart: {_tally(during)}")
            if first_503 is None:
                self.fail(f"{server.name}: /readyz never answered 503 after SIGTERM (no drain)")
            if out_at is None or out_at >= exited:
                self.fail(f"{server.name} exited before HAProxy took it out of rotation")
            if server.returncode not in CLEAN_EXIT_CODES:
                self.fail(f"{server.name} exited with code {server.returncode} after SIGTERM")
            if took > GRACEFUL_SECONDS + EXIT_MARGIN_SECONDS:
                self.fail(f"{server.name} took {took:.1f}s to exit after SIGTERM")
            if server.up_again_at is None:
                self.fail(f"{server.name} did not come back into rotation")
        ordered = sorted(restarted, key=lambda s: s.sigterm_at or 0)
        for before, after in itertools.pairwise(ordered):
            if (before.up_again_at or math.inf) > (after.sigterm_at or 0):
                self.fail(f"{after.name} was restarted before {before.name} was back in rotation")
        for server in self.f.servers:
            cancelled = re.findall(r".*Cancel \d+ running task.*", server.log_text())
            if cancelled:
                self.fail(f"{server.name} cancelled requests at shutdown: {cancelled[0].strip()}")
            if server.final_stop_at is None:
                continue
            took = (
                server.final_exited_at - server.final_stop_at
                if server.final_exited_at is not None
                else math.inf
            )
            self.out(
                f"- after the load, {server.name} was stopped the same way: exit code "
                f"{server.final_returncode}, {took:.2f}s"
            )
            if (
                server.final_returncode not in CLEAN_EXIT_CODES
                or took > GRACEFUL_SECONDS + EXIT_MARGIN_SECONDS
            ):
                self.fail(
                    f"{server.name} stopped with code {server.final_returncode} in {took:.1f}s "
                    "after the final SIGTERM"
                )
        self.out()

    def ledger(self) -> None:
        v = self.f.ledger
        db = self.f.database
        self.out("## Ledger verdict")
        self.out()
        self.out(
            f"- {v.entries} todos created through the API: {v.acked_creates} acknowledged, "
            f"{v.unknown_creates} with an unknown outcome ({v.unknown_creates_applied} of "
            "those turned out applied)"
        )
        self.out(
            f"- {v.acked_deletes} acknowledged deletes; {v.present} acknowledged todos still "
            f"present; {v.unknown_writes} writes with an unknown outcome"
        )
        self.out(
            f"- final states checked: {v.exact} exactly (one allowed state), {v.ambiguous} "
            "with two or more allowed states (after an unknown-outcome write)"
        )
        self.out(
            f"- seeded data: {db.get('users')} users (200 expected), "
            f"{db.get('seeded_intact')} of {db.get('seeded_expected')} seeded todos intact, "
            f"{db.get('foreign')} todos that neither the seed nor a client made"
        )
        clean = not v.violations and not self.f.load["violations"]
        self.out(
            f"- verdict: {'OK' if clean else 'VIOLATED'} ({len(v.violations)} in the database, "
            f"{len(self.f.load['violations'])} seen by the clients during the run)"
        )
        for message in v.violations:
            self.fail(f"ledger: {message}")
        for message in self.f.load["violations"]:
            self.fail(f"client: {message}")
        if db.get("users") != db.get("users_expected"):
            self.fail(
                f"{db.get('users')} users in the database, {db.get('users_expected')} expected"
            )
        if db.get("seeded_intact") != db.get("seeded_expected"):
            intact, expected = db.get("seeded_intact"), db.get("seeded_expected")
            self.fail(f"only {intact} of {expected} seeded todos are intact")
        if db.get("foreign"):
            self.fail(f"{db.get('foreign')} todos in the database that nobody made")
        if not self.f.load.get("finished"):
            self.fail("the load did not finish by itself")
        self.out()

    def logs(self) -> None:
        self.out("## Server logs")
        self.out()
        for server in self.f.servers:
            text = server.log_text()
            counts = {
                "database unavailable warnings": len(re.findall(r"database unavailable", text)),
                "unhandled (500)": len(re.findall(r" unhandled ", text)),
                "tracebacks": text.count("Traceback"),
                "ERROR lines": len(re.findall(r" ERROR ", text)),
            }
            self.out(
                f"- {server.name} ({server.log.name}): "
                + ", ".join(f"{k}: {v}" for k, v in counts.items())
            )
            for line in [ln for ln in text.splitlines() if " unhandled " in ln][:SAMPLES]:
                self.out(f"  - `{line.strip()}`")
            unhandled = UNHANDLED_LINE.findall(text)
            if unhandled:
                seen = Counter(self.client_saw.get(rid, "no record") for _, _, _, rid in unhandled)
                kinds = Counter(kind for kind, _, _, _ in unhandled)
                self.fail(
                    f"{server.name} logged {len(unhandled)} unhandled exceptions "
                    f"({', '.join(f'{k} x{v}' for k, v in kinds.items())}) with an access-log "
                    f"status of 500; the clients got: "
                    + ", ".join(f"{k} x{v}" for k, v in sorted(seen.items()))
                    + "; e.g. "
                    + "; ".join(f"{m} {p} {rid}" for _, m, p, rid in unhandled[:SAMPLES])
                )
            warnings = server.unavailable()
            kinds = Counter(kind for _, kind, _ in warnings)
            for kind, count in sorted(kinds.items()):
                times = sorted(when for when, k, _ in warnings if k == kind)
                bursts = self._bursts(times)
                self.out(
                    f"  - 'database unavailable ({kind})': {count}, in bursts at "
                    + ", ".join(bursts)
                )
                calm = [b for b in bursts if b.endswith("database up)")]
                if kind == "TimeoutError" and calm:
                    self.fail(
                        f"{server.name} answered 503 for want of a pooled connection (pool "
                        f"timeout, 'database unavailable (TimeoutError)') while the database "
                        f"was up, in {len(calm)} bursts: {', '.join(calm)}"
                    )
            if counts["tracebacks"]:
                self.fail(f"{server.name} logged {counts['tracebacks']} tracebacks")
        self.out()

    def _bursts(self, times: list[float]) -> list[str]:
        bursts: list[list[float]] = []
        for when in times:
            if bursts and when - bursts[-1][-1] <= BURST_GAP_SECONDS:
                bursts[-1].append(when)
            else:
                bursts.append([when])
        outage = (self.outage_start, self.outage_end)
        return [
            f"{self.t(b[0])}..{b[-1] - self.f.t0:+.2f}s ({len(b)}"
            + (", database down)" if b[-1] >= outage[0] and b[0] <= outage[1] else ", database up)")
            for b in bursts
        ]

    def verdict(self) -> str:
        self.header()
        self.requests()
        self.outage()
        self.redis()
        self.rolling()
        self.ledger()
        self.logs()
        self.out("## Violations")
        self.out()
        if self.violations:
            self.out(f"**FAIL: {len(self.violations)} violation(s)**")
            self.out()
            self.lines += [f"- {v}" for v in self.violations]
        else:
            self.out("**PASS: no violation**")
        self.out()
        return "\n".join(self.lines)
