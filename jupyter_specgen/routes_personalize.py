"""REST handlers of personalization and feedback (bodies: ``protocol.py``'s REST section).

| verb and path | what | answer |
|---|---|---|
| ``GET specgen/personalize`` | the user's job (running or last) and adapters | ``Personalize`` |
| ``POST specgen/personalize`` | collect the data and start a job | 202 ``Personalize`` |
| ``DELETE specgen/personalize`` | cancel the running job | ``Personalize`` |
| ``GET specgen/personalize/data`` | what a job would train on (scans the notebooks) | ``DataSummary`` |
| ``POST specgen/personalize/rollback`` | put an earlier version back (``RollbackRequest``) | ``Personalize`` |
| ``POST specgen/feedback`` | a suggestion accepted, the next run of its cell, or a dismissal (``FeedbackReport``) | 204 |

Every failure is answered as ``{"error": {"type", "message"}}`` with a status that fits it: 400
for a bad body or nothing to do (``POST specgen/personalize`` with fewer than two notebooks to train
and measure on says so, and what to do), 409 when the user's job already runs, 413 for an oversized body,
503 when the model backend cannot be reached. The user is the one Jupyter authenticated; no body
names a user.
"""

from __future__ import annotations

import dataclasses
import json

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from tornado import web

from .backend_client import BackendError
from .protocol import FeedbackReport, ProtocolError, RollbackRequest, parse_body
from .users import specgen_user

__all__ = ["PersonalizeHandler", "PersonalizeDataHandler", "RollbackHandler", "FeedbackHandler",
           "personalize_handlers"]

AUTH_RESOURCE = "specgen"

_STATUS = {
    "malformed": 400, "bad_request": 400, "unknown_adapter": 400, "version": 400, "unknown_type": 400,
    "too_large": 413, "job_running": 409, "unauthorized": 403, "overloaded": 503, "backend_unavailable": 503,
    "model_unavailable": 503,
}  # fmt: skip


class _Base(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def personalize(self):
        return self.settings["specgen"].personalize

    @property
    def user(self) -> str:
        return specgen_user(self)

    def reply(self, message, *, status: int = 200) -> None:
        self.set_status(status)
        body = dataclasses.asdict(message)
        if hasattr(type(message), "type"):
            body = {"type": type(message).type, **body}
        self.finish(json.dumps(body))

    def fail(self, error_type: str, message: str) -> None:
        self.set_status(_STATUS.get(error_type, 500))
        self.finish(json.dumps({"error": {"type": error_type, "message": message}}))

    def body_of(self, cls):
        return parse_body(cls, self.request.body)

    async def answer(self, call, *, status: int = 200) -> None:
        """Run ``call()`` and reply with its message, or with the error it raised."""
        try:
            message = await call()
        except ProtocolError as exc:
            self.fail(exc.error_type, exc.message)
        except BackendError as exc:
            self.fail(exc.error_type, exc.message)
        else:
            self.reply(message, status=status)


class PersonalizeHandler(_Base):
    @web.authenticated
    @authorized("read")
    async def get(self):
        await self.answer(lambda: self.personalize.state(self.user))

    @web.authenticated
    @authorized("execute")
    async def post(self):
        await self.answer(lambda: self.personalize.start(self.user), status=202)

    @web.authenticated
    @authorized("execute")
    async def delete(self):
        await self.answer(lambda: self.personalize.cancel(self.user))


class PersonalizeDataHandler(_Base):
    @web.authenticated
    @authorized("read")
    async def get(self):
        async def summary():
            return (await self.personalize.collect(self.user)).summary

        await self.answer(summary)


class RollbackHandler(_Base):
    @web.authenticated
    @authorized("execute")
    async def post(self):
        async def rollback():
            return await self.personalize.rollback(self.user, self.body_of(RollbackRequest))

        await self.answer(rollback)


class FeedbackHandler(_Base):
    @web.authenticated
    @authorized("write")
    async def post(self):
        try:
            report = self.body_of(FeedbackReport)
        except ProtocolError as exc:
            self.fail(exc.error_type, exc.message)
            return
        try:
            await self.personalize.record_feedback(self.user, report)
        except BackendError as exc:
            self.fail(exc.error_type, exc.message)
            return
        self.set_status(204)
        self.finish()


def personalize_handlers() -> list[tuple[str, type]]:
    return [
        (r"/specgen/personalize", PersonalizeHandler),
        (r"/specgen/personalize/data", PersonalizeDataHandler),
        (r"/specgen/personalize/rollback", RollbackHandler),
        (r"/specgen/feedback", FeedbackHandler),
    ]
