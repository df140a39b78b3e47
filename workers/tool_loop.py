"""The tool loop of one step: model turn, tool calls, results back, until the final answer.

Every turn is a model call like any other: it reserves its worst case against the task's
budget and waits for the fleet's rate limiter (the step's StepGuard), and what it cost is
settled when the turn is journaled (workers/journal.py), in the same atomic call. Tool calls
run through `run_tool_calls` (bounded, each with its timeout, every failure an `is_error`
result for the model). The final answer is validated against the output model as a plain call
is, with one stricter retry. A journaled turn or tool outcome is replayed, never redone, so a
redelivered step pays for nothing twice; a tool that needs approval parks the step
(`StepParked`) until a reviewer decides.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from messages.errors import ChorusError
from workers.approvals import StepParked, decided_outcome
from workers.budget import BudgetExceededError, TaskBudget
from workers.claude import ClaudeClient, InvalidOutput, Reply, schema_text, stricter, validate
from workers.guards import StepGuard
from workers.journal import Journal, JournalState
from workers.models import Price, cost_micro_usd
from workers.retry import ModelCallError
from workers.tool_exec import ToolCall, ToolOutcome, run_tool_calls
from workers.tools import Tool, ToolContext, ToolDefinitionError

MAX_PARALLEL_TOOLS = 4
"""Tool calls of one turn running at once."""
DEFAULT_TOOL_TIMEOUT = 30.0
"""Seconds a tool call may take when its Tool sets no timeout."""


class ToolLimitError(ChorusError):
    """The loop used its model turns (AgentSpec.max_turns) and the model still wants tools."""

    def __init__(self, message: str, replies: tuple[Reply, ...]) -> None:
        super().__init__(message)
        self.replies = replies
        """Every turn's reply: all were paid for."""


@dataclass
class ToolLog:
    """What the loop did, for the step record: every tool call and every turn's cost."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    """{turn, tool_use_id, name, input, output, error, duration_ms, replayed}, in call order."""
    turns: list[dict[str, Any]] = field(default_factory=list)
    """{turn, model, stop_reason, usage, cost_micro_usd, latency_ms, replayed}."""

    def add_turn(self, turn: int, reply: Reply, price: Price, replayed: bool) -> None:
        self.turns.append(
            {
                "turn": turn,
                "model": reply.model,
                "stop_reason": reply.stop_reason,
                "usage": {
                    "input_tokens": reply.usage.input_tokens,
                    "output_tokens": reply.usage.output_tokens,
                    "cache_creation_input_tokens": reply.usage.cache_creation_input_tokens,
                    "cache_read_input_tokens": reply.usage.cache_read_input_tokens,
                },
                "cost_micro_usd": cost_micro_usd(reply.usage, price),
                "latency_ms": round(reply.latency_ms, 3),
                "replayed": replayed,
            }
        )

    def add_call(self, turn: int, outcome: ToolOutcome, replayed: bool) -> None:
        self.calls.append(
            {
                "turn": turn,
                "tool_use_id": outcome.tool_use_id,
                "name": outcome.name,
                "input": outcome.input,
                "output": outcome.output,
                "error": outcome.error,
                "duration_ms": round(outcome.duration_ms, 3),
                "replayed": replayed,
            }
        )


@dataclass(frozen=True)
class LoopPlan:
    """One step's loop: who asks, what, with which tools, within how many turns."""

    agent: str
    task_id: str
    message_id: str
    model: str
    system: str
    blocks: list[str]
    output_model: type[BaseModel]
    max_tokens: int
    price: Price
    tools: Mapping[str, Tool]
    max_turns: int


@dataclass(frozen=True)
class LoopResult:
    output: BaseModel | None
    """The validated final answer; None when it failed validation twice."""
    replies: tuple[Reply, ...]
    """Every turn's reply, replayed ones included: the step's record counts each once."""
    error: str | None = None
    error_fields: tuple[str, ...] = ()


def tool_definitions(tools: Mapping[str, Tool]) -> list[dict[str, Any]]:
    return [tool.to_api() for tool in tools.values()]


def first_message(blocks: Sequence[str]) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": block} for block in blocks]}


def sized_blocks(messages: list[dict[str, Any]], definitions: list[dict[str, Any]]) -> list[str]:
    """The prompt as the budget and the rate limiter size it: the conversation and the tools."""
    return [json.dumps(messages), json.dumps(definitions)]


def run_tool_loop(
    claude: ClaudeClient,
    guard: StepGuard,
    budget: TaskBudget,
    journal: Journal,
    plan: LoopPlan,
    log: ToolLog,
) -> LoopResult:
    """Run the loop to its final answer. Raises ToolLimitError, BudgetExceededError and
    ModelCallError (each with `replies`: the turns paid so far), or StepParked."""
    state = journal.resume()
    definitions = tool_definitions(plan.tools)
    messages = [first_message(plan.blocks)]
    replies: list[Reply] = []
    stricter_sent = False
    for turn in range(1, plan.max_turns + 1):
        replayed = state.turns.get(turn)
        reply = replayed or _call(
            claude, guard, budget, journal, plan, messages, definitions, turn, tuple(replies)
        )
        replies.append(reply)
        log.add_turn(turn, reply, plan.price, replayed=replayed is not None)
        messages.append({"role": "assistant", "content": list(reply.content)})
        calls = [ToolCall.from_block(block) for block in reply.tool_uses]
        if reply.stop_reason == "tool_use" and calls:
            if turn == plan.max_turns:
                break
            outcomes = _run_turn(plan, journal, state, turn, calls, log)
            messages.append({"role": "user", "content": [o.to_result_block() for o in outcomes]})
            continue
        try:
            output = validate(reply, plan.output_model)
        except InvalidOutput as exc:
            if stricter_sent or turn == plan.max_turns:
                return LoopResult(None, tuple(replies), str(exc), exc.fields)
            stricter_sent = True
            retry = [{"type": "text", "text": stricter(str(exc))}]
            messages.append({"role": "user", "content": retry})
            continue
        return LoopResult(output, tuple(replies))
    raise ToolLimitError(
        f"agent {plan.agent!r} used its {plan.max_turns} model turns and still called tools; "
        "raise max_turns on the agent, or narrow its tools or instructions",
        tuple(replies),
    )


def _call(
    claude: ClaudeClient,
    guard: StepGuard,
    budget: TaskBudget,
    journal: Journal,
    plan: LoopPlan,
    messages: list[dict[str, Any]],
    definitions: list[dict[str, Any]],
    turn: int,
    replies: tuple[Reply, ...],
) -> Reply:
    """One live turn: hold its worst case, call, journal it with its settlement."""
    sized = sized_blocks(messages, definitions)
    text = schema_text(plan.output_model)
    try:
        reservation = guard.reserve(
            model=plan.model,
            price=plan.price,
            system=plan.system,
            blocks=sized,
            schema=text,
            max_tokens=plan.max_tokens,
        )
    except BudgetExceededError as exc:
        exc.replies = replies
        raise
    try:
        reply = claude.turn(
            model=plan.model,
            system=plan.system,
            messages=messages,
            tools=definitions,
            output_model=plan.output_model,
            max_tokens=plan.max_tokens,
            sized_as=sized,
            user_id=plan.task_id,
            guard=guard,
        )
    except ModelCallError as exc:
        guard.settle(reservation, None)
        exc.replies = replies
        raise
    return journal.save_turn(turn, reply, budget.settlement(reservation, reply.usage))


def _run_turn(
    plan: LoopPlan,
    journal: Journal,
    state: JournalState,
    turn: int,
    calls: list[ToolCall],
    log: ToolLog,
) -> list[ToolOutcome]:
    """Every call of one turn, outcomes in call order: journaled ones reused, decided ones
    answered, the rest run; the step parks when a call still needs a reviewer's decision."""
    done: dict[str, tuple[ToolOutcome, bool]] = {}
    waiting: list[ToolCall] = []
    runnable: list[ToolCall] = []
    for call in calls:
        if call.id in state.outcomes:
            done[call.id] = (state.outcomes[call.id][1], True)
            continue
        tool = plan.tools.get(call.name)
        if tool is not None and tool.requires_approval:
            decision = state.decisions.get(call.id)
            if decision is None:
                waiting.append(call)
                continue
            if not decision.approved:
                outcome = decided_outcome(call, decision)
                journal.save_outcome(turn, outcome, agent=plan.agent)
                done[call.id] = (outcome, False)
                continue
        runnable.append(call)

    def context_for(call: ToolCall) -> ToolContext:
        return ToolContext(
            task_id=plan.task_id, message_id=plan.message_id, tool_use_id=call.id, agent=plan.agent
        )

    outcomes = run_tool_calls(
        plan.tools,
        runnable,
        context_for,
        max_parallel=MAX_PARALLEL_TOOLS,
        default_timeout=DEFAULT_TOOL_TIMEOUT,
        on_outcome=lambda outcome: journal.save_outcome(turn, outcome, agent=plan.agent),
    )
    done.update((outcome.tool_use_id, (outcome, False)) for outcome in outcomes)
    if waiting:
        raise StepParked(
            agent=plan.agent,
            task_id=plan.task_id,
            message_id=plan.message_id,
            turn=turn,
            calls=tuple(waiting),
        )
    for call in calls:
        outcome, replayed = done[call.id]
        log.add_call(turn, outcome, replayed)
    return [done[call.id][0] for call in calls]


def resolve_tools(declared: Sequence[Any]) -> dict[str, Tool]:
    """An agent's tools by name: its Tools, and the tools of its MCP servers (listed on first
    use in this process, then cached by the server object)."""
    from workers.mcp_tools import MCPServer  # the mcp client loads only for agents using it

    tools: dict[str, Tool] = {}
    for item in declared:
        listed = item.connect().tools if isinstance(item, MCPServer) else (item,)
        for tool in listed:
            if not isinstance(tool, Tool):
                raise ToolDefinitionError(
                    f"{tool!r} is not a tool: pass functions through app.tool (or "
                    "workers.tools.tool_from_function) and MCP servers as MCPServer(...)"
                )
            if tool.name in tools:
                raise ToolDefinitionError(
                    f"two tools are named {tool.name!r}: rename one (name=...) or give its MCP "
                    "server a prefix="
                )
            tools[tool.name] = tool
    return tools
