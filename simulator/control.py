"""The `/_sim/...` control endpoints tests use to steer the simulator and audit it."""

from __future__ import annotations

from simulator.base import BaseHandler, api_errors
from simulator.errors import ApiError
from simulator.faults import FaultConfigError
from simulator.scripts import ScriptError


class ScriptHandler(BaseHandler):
    """POST a script, GET the pending ones, DELETE to clear them all."""

    @api_errors
    def post(self) -> None:
        try:
            self.sim.scripts.add(self.json_body())
        except ScriptError as exc:
            raise ApiError(400, "invalid_request_error", str(exc)) from None
        self.finish({"scripts": self.sim.scripts.pending()})

    def get(self) -> None:
        self.finish({"scripts": self.sim.scripts.pending()})

    def delete(self) -> None:
        self.sim.scripts.clear()
        self.finish({"scripts": []})


class FaultsHandler(BaseHandler):
    """GET the fault plans and what they injected; POST new rates/schedule (with `match`: a
    scoped plan); DELETE `?match=` drops that scoped plan, DELETE alone drops all of them."""

    def get(self) -> None:
        self.finish(self.sim.faults.report())

    @api_errors
    def post(self) -> None:
        try:
            self.sim.faults.update(self.json_body())
        except (FaultConfigError, ValueError, TypeError) as exc:
            raise ApiError(400, "invalid_request_error", str(exc)) from None
        self.finish(self.sim.faults.report())

    def delete(self) -> None:
        self.sim.faults.clear(self.get_query_argument("match", None))
        self.finish(self.sim.faults.report())


class LedgerHandler(BaseHandler):
    """GET what was billed (optionally `?user_id=`); DELETE to start a new ledger."""

    def get(self) -> None:
        user_id = self.get_query_argument("user_id", None)
        self.finish(self.sim.ledger.report(user_id))

    def delete(self) -> None:
        self.sim.ledger.clear()
        self.finish(self.sim.ledger.report())


class ToolsHandler(BaseHandler):
    """GET the tool-use policy; POST changes turns / parallel / preamble; DELETE restores the
    configured one."""

    def get(self) -> None:
        self.finish(self.sim.tools.report())

    @api_errors
    def post(self) -> None:
        try:
            self.sim.tools = self.sim.tools.updated(self.json_body())
        except (ValueError, TypeError) as exc:
            raise ApiError(400, "invalid_request_error", str(exc)) from None
        self.finish(self.sim.tools.report())

    def delete(self) -> None:
        self.sim.tools = self.sim.default_tools()
        self.finish(self.sim.tools.report())
