"""Fault injection and request counting for the local Hub: what the next requests matching a method and a
path get instead of their answer (an error status, a dropped connection, a slow or lying answer), the log
of answered requests, and the control token the HTTP control endpoints take, never a Hub user's."""

import hmac
import re
import secrets
import threading
from dataclasses import dataclass
from typing import Any

CONTROL = ("/_quantforge/faults", "/_quantforge/requests")  # never faulted nor counted; control token only


@dataclass
class Fault:
    """What the next `times` requests matching (method, path pattern) get instead of an answer."""

    method: str | None
    path_pattern: str
    status: int | None = 500  # None: the normal answer (with the changes below)
    times: int = 1
    retry_after: int | None = None
    drop_connection: bool = False
    throttle_bps: int | None = None  # instead of failing: answer, but move the body at this rate
    headers: dict[str, str] | None = None  # set on the answer (a compromised Hub's ETag, X-Repo-Commit)
    json_fields: dict[str, Any] | None = None  # replaced in a normal JSON answer (e.g. a repo info's sha)

    def __post_init__(self) -> None:
        if self.status == 429 and self.retry_after is None:
            self.retry_after = 1  # the Hub says when to come back on a 429


class Control:
    """Injected faults, the log of answered requests (method, path, status; 0 = dropped), and the token
    that alone may change or read them over HTTP."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self._log: list[tuple[str, str, int]] = []
        # Faults and the request log are for whoever started the server, not for its Hub users.
        self.token = secrets.token_urlsafe(32)

    def authorises(self, authorization: str) -> bool:
        """Whether an `Authorization` header value carries this control token."""
        scheme, _, token = authorization.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(token.strip(), self.token)

    def add(self, fault: Fault) -> None:
        re.compile(fault.path_pattern)  # a bad pattern fails here, not in the middle of a request
        with self._lock:
            self._faults.append(fault)

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def take(self, method: str, path: str) -> Fault | None:
        """The first fault matching this request, counting it down."""
        with self._lock:
            for fault in self._faults:
                if fault.method in (None, "*", method) and re.search(fault.path_pattern, path):
                    fault.times -= 1
                    if fault.times <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    def record(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._log.append((method, path, status))

    def matching(self, method: str | None, pattern: str, status: int | None) -> list[tuple[str, str, int]]:
        """Requests with this method (None: any), path matching `pattern`, and status (None: any)."""
        with self._lock:
            return [
                entry
                for entry in self._log
                if method in (None, "*", entry[0])
                and re.search(pattern, entry[1])
                and status in (None, entry[2])
            ]
