"""A client of the control API, for the CLI (``sipagent call``, ``calls``, ``tail``…) and scripts.

Synchronous (httpx, and websockets' sync client for the events): a command does one thing at a
time. Every failure becomes an :class:`ApiClientError` whose message is one line a person can act
on: no server running, the token refused, the field a request got wrong.
"""

from __future__ import annotations

import json
import os
from collections.abc import Generator
from types import TracebackType
from typing import Any

import httpx

from ..errors import SipAgentError

DEFAULT_URL = "http://127.0.0.1:8060"
DEFAULT_TOKEN_ENV = "SIPAGENT_API_TOKEN"
#: The events stream's close code for an unknown call (:data:`sipagent.api.events.CLOSE_UNKNOWN_CALL`).
CLOSE_UNKNOWN_CALL = 4404


class ApiClientError(SipAgentError):
    """A control API request failed; the message is one line (``status``/``field`` when answered)."""

    def __init__(self, message: str, *, status: int | None = None, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field


class ApiClient:
    """Requests to the control API at ``url`` with ``token`` (default: from ``token_env``)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        token: str | None = None,
        *,
        token_env: str = DEFAULT_TOKEN_ENV,
        timeout: float = 10.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        """``transport`` replaces the network (tests); ``timeout`` bounds each request (seconds)."""
        self.url = url.rstrip("/")
        self.token_env = token_env
        self.token = token if token is not None else (os.environ.get(token_env) or None)
        self.timeout = timeout
        headers = {"Accept": "application/json"}
        if self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        self._http = httpx.Client(
            base_url=self.url, headers=headers, timeout=timeout, transport=transport, trust_env=False
        )

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection pool."""
        self._http.close()

    # ---------------------------------------------------------------------------- requests

    def health(self) -> dict[str, Any]:
        """``{"status": "ok", "calls": n}`` (no token needed)."""
        return self._json("GET", "/healthz")

    def place_call(
        self,
        target: str,
        *,
        mode: str = "conversation",
        message: str | None = None,
        repeat: int = 1,
        task: str | None = None,
        from_number: str | None = None,
        max_duration: float | None = None,
        ring_timeout: float | None = None,
        amd: str | None = None,
    ) -> dict[str, Any]:
        """Start an outbound call; the call's JSON (state ``ringing``)."""
        body: dict[str, Any] = {"target": target, "mode": mode, "repeat": repeat}
        optional = {
            "message": message,
            "task": task,
            "from": from_number,
            "max_duration": max_duration,
            "ring_timeout": ring_timeout,
            "amd": amd,
        }
        body.update({key: value for key, value in optional.items() if value is not None})
        return self._json("POST", "/v1/calls", body)

    def list_calls(self) -> list[dict[str, Any]]:
        """Calls in progress and the most recent ended ones, newest first."""
        calls: list[dict[str, Any]] = self._json("GET", "/v1/calls")["calls"]
        return calls

    def get_call(self, call_id: str) -> dict[str, Any]:
        """One call's JSON."""
        return self._json("GET", f"/v1/calls/{_segment(call_id)}")

    def speak(self, call_id: str, text: str, *, interrupt: bool = False) -> None:
        """Have the agent say ``text`` in the call."""
        self._json("POST", f"/v1/calls/{_segment(call_id)}/speak", {"text": text, "interrupt": interrupt})

    def send_dtmf(self, call_id: str, digits: str) -> None:
        """Send DTMF ``digits`` in the call."""
        self._json("POST", f"/v1/calls/{_segment(call_id)}/dtmf", {"digits": digits})

    def hang_up(self, call_id: str) -> None:
        """End the call."""
        self._json("POST", f"/v1/calls/{_segment(call_id)}/hangup")

    def _json(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.TimeoutException:
            raise ApiClientError(
                f"the sipagent server at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except httpx.TransportError:
            raise ApiClientError(self._not_running()) from None
        if response.status_code == 401:
            raise ApiClientError(self._refused(), status=401)
        try:
            data = response.json()
        except ValueError:
            raise ApiClientError(
                f"{self.url} answered {response.status_code} without JSON: is it a sipagent server?",
                status=response.status_code,
            ) from None
        if response.is_success and isinstance(data, dict):
            return data
        error = data.get("error") if isinstance(data, dict) else None
        if not isinstance(error, dict):
            raise ApiClientError(
                f"{self.url} answered {response.status_code}: is it a sipagent server?",
                status=response.status_code,
            )
        field, message = error.get("field"), str(error.get("message", "failed"))
        if response.status_code >= 500:
            text = f"the sipagent server failed ({response.status_code}): {message}"
        else:
            text = f"{field}: {message}" if field else message
        raise ApiClientError(text, status=response.status_code, field=field)

    def _not_running(self) -> str:
        return (
            f"no sipagent server answers at {self.url} — start one with `sipagent serve` (or pass --api URL)"
        )

    def _refused(self) -> str:
        if self.token is None:
            return f"the API wants a token: set {self.token_env} to the token the server was started with"
        return f"the API refused the token: set {self.token_env} to the token the server was started with"

    # ------------------------------------------------------------------------------ events

    def events(
        self, call_id: str | None = None, *, open_timeout: float | None = None
    ) -> Generator[dict[str, Any], None, None]:
        """Every event from now on (of one call: until it ends), as JSON objects.

        Ends when the server closes the stream normally (a one-call stream after ``call_ended``);
        raises :class:`ApiClientError` for an unknown call, a refused token, no server, or a stream
        the server broke off (it stopped).
        """
        from websockets.exceptions import ConnectionClosed, InvalidStatus, InvalidURI
        from websockets.sync.client import connect

        path = "/v1/events" if call_id is None else f"/v1/calls/{_segment(call_id)}/events"
        url = "ws" + self.url.removeprefix("http") + path
        headers = {"Authorization": f"Bearer {self.token}"} if self.token is not None else None
        try:
            socket = connect(
                url,
                additional_headers=headers,
                open_timeout=open_timeout if open_timeout is not None else self.timeout,
                proxy=None,
            )
        except InvalidStatus as exc:
            status = exc.response.status_code
            if status == 401:
                raise ApiClientError(self._refused(), status=401) from None
            raise ApiClientError(f"{url} refused the event stream ({status})", status=status) from None
        except TimeoutError:
            raise ApiClientError(
                f"the sipagent server at {self.url} did not answer within {self.timeout:g} s"
            ) from None
        except (OSError, InvalidURI):
            raise ApiClientError(self._not_running()) from None
        with socket:
            try:
                for frame in socket:
                    yield json.loads(frame)
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd is not None else None
                if code == CLOSE_UNKNOWN_CALL:
                    reason = exc.rcvd.reason if exc.rcvd is not None else ""
                    raise ApiClientError(f"call_id: {reason or 'no such call'}", status=404) from None
                if code == 1012:
                    raise ApiClientError("the sipagent server stopped (the event stream closed)") from None
                raise ApiClientError(f"the event stream broke off (close code {code})") from None


def _segment(call_id: str) -> str:
    """``call_id`` as one path segment (a "/" in it must not reach another route)."""
    from urllib.parse import quote

    return quote(call_id, safe="")
