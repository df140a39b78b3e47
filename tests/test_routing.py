"""A routed request through real Redis, per-agent worker processes and the simulator."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import redis

from chorus.seed import ROUTER_TARGETS
from dispatcher import Dispatcher
from messages import AgentMessage, MessageType
from workers import keys
from workers.registry import AGENTS

SUMMARY_REQUEST = "Summarize the tradeoffs of Redis as a message broker"


def test_routed_request_resolves_to_the_specialists_answer(dispatcher: Dispatcher) -> None:
    handle = dispatcher.submit(SUMMARY_REQUEST)
    outcome = handle.wait(60)

    assert outcome.status == "done"
    assert outcome.message.message_type is MessageType.RESULT
    assert outcome.message.sender == "summarizer"
    AGENTS["summarizer"].output_model.model_validate(outcome.result)
    assert outcome.input_tokens > 0
    assert outcome.output_tokens > 0
    assert outcome.cost_micro_usd > 0


def test_each_step_is_handled_by_its_own_agent_queue_and_worker(dispatcher: Dispatcher) -> None:
    handle = dispatcher.submit(SUMMARY_REQUEST)
    handle.wait(60)

    router, specialist = handle.trace()
    assert (router.agent, router.queue) == ("router", "agent.router")
    assert (specialist.agent, specialist.queue) == ("summarizer", "agent.summarizer")
    assert router.worker is not None
    assert router.worker.startswith("router.")
    assert specialist.worker is not None
    assert specialist.worker.startswith("summarizer.")
    assert router.model == "claude-haiku-5-5"  # fast tier routes
    assert specialist.model == "claude-sonnet-5-5"  # strong tier answers
    route = router.message["payload"]["context"]["route"]
    assert route["agent"] == "summarizer"
    assert route["priority"] in {"high", "normal", "low"}
    assert route["reasoning"]


def test_messages_come_back_in_lineage_order(dispatcher: Dispatcher) -> None:
    handle = dispatcher.submit("Please review this code for bugs: def f(x): return x / 0")
    outcome = handle.wait(60)

    messages = handle.messages()
    assert [(m.sender, m.recipient, m.message_type) for m in messages] == [
        ("producer", "router", MessageType.TASK),
        ("router", "code_review", MessageType.TASK),
        ("code_review", "producer", MessageType.RESULT),
    ]
    assert [m.depth for m in messages] == [0, 1, 2]
    for parent, child in itertools.pairwise(messages):
        assert child.parent_message_id == parent.message_id
        assert child.task_id == outcome.task_id
    assert messages[-1] == outcome.message


def test_status_moves_from_submitted_to_done(dispatcher: Dispatcher) -> None:
    handle = dispatcher.submit(SUMMARY_REQUEST)
    assert handle.status()["status"] in {"submitted", "running", "done"}
    handle.wait(60)
    status = handle.status()
    assert status["status"] == "done"
    assert status["pattern"] == "route"
    assert status["submitted_at"] <= status["started_at"] <= status["finished_at"]


def test_malformed_message_becomes_an_error_result_and_the_worker_keeps_serving(
    dispatcher: Dispatcher, redis_url: str
) -> None:
    client = redis.Redis.from_url(redis_url)
    dead_before = client.xlen(keys.DEAD_LETTERS)
    garbage = {"task_id": "forged-task-1", "depth": "deep", "payload": [1, 2]}
    result = dispatcher.app.send_task(
        AGENTS["research"].task_name, args=[garbage], queue=AGENTS["research"].queue
    )
    reply = AgentMessage.from_dict(result.get(timeout=30))

    assert reply.message_type is MessageType.ERROR
    assert reply.payload["code"] == "invalid_message"
    assert reply.task_id == "forged-task-1"
    assert "field" in reply.payload["message"]
    assert client.xlen(keys.DEAD_LETTERS) == dead_before + 1
    _, entry = client.xrevrange(keys.DEAD_LETTERS, count=1)[0]
    assert entry[b"code"] == b"invalid_message"
    assert b"forged-task-1" in entry[b"body"]

    follow_up = dispatcher.submit("Research the history of message queues")
    assert follow_up.wait(60).status == "done"


def test_message_delivered_to_the_wrong_agent_is_refused(dispatcher: Dispatcher) -> None:
    message = AgentMessage.root(recipient="critic", payload={"text": "Judge this plan"})
    result = dispatcher.app.send_task(
        AGENTS["research"].task_name, args=[message.to_dict()], queue=AGENTS["research"].queue
    )
    reply = AgentMessage.from_dict(result.get(timeout=30))

    assert reply.message_type is MessageType.ERROR
    assert reply.payload["code"] == "wrong_recipient"
    assert reply.parent_message_id == message.message_id
    assert dispatcher.handle(message.task_id).trace()[0].attempts == 0  # no model call made


def test_delegation_past_the_depth_limit_ends_as_depth_exceeded(
    dispatcher: Dispatcher,
) -> None:
    message = AgentMessage.root(recipient="router", payload={"text": "Summarize this"})
    for _ in range(dispatcher.app.settings.max_depth):
        message = message.child(sender="router", recipient="router", payload=message.payload)
    result = dispatcher.app.send_task(
        AGENTS["router"].task_name, args=[message.to_dict()], queue=AGENTS["router"].queue
    )
    reply = AgentMessage.from_dict(result.get(timeout=30))

    assert reply.payload["code"] == "depth_exceeded"
    assert reply.payload["detail"] == {"depth": 5, "max_depth": 5}


def test_redelivered_message_is_answered_once(dispatcher: Dispatcher, redis_url: str) -> None:
    message = AgentMessage.root(recipient="critic", payload={"text": "Critique: ship on Friday"})
    send = dispatcher.app.send_task
    first = send(AGENTS["critic"].task_name, args=[message.to_dict()], queue="agent.critic")
    first_reply = first.get(timeout=30)
    second = send(AGENTS["critic"].task_name, args=[message.to_dict()], queue="agent.critic")
    second_reply = second.get(timeout=30)

    assert second_reply == first_reply
    client = redis.Redis.from_url(redis_url)
    assert client.hlen(keys.board(message.task_id)) == 1
    info = dispatcher.handle(message.task_id).status()
    assert int(info["steps"]) == 1
    assert (
        int(info["input_tokens"])
        == dispatcher.handle(message.task_id).trace()[0].usage["input_tokens"]
    )


def test_router_can_only_choose_registered_specialists() -> None:
    schema = AGENTS["router"].output_model.model_json_schema()
    assert schema["properties"]["agent"]["enum"] == list(ROUTER_TARGETS)
    assert set(ROUTER_TARGETS) <= set(AGENTS)


def test_worker_log_never_contains_the_api_key(
    dispatcher: Dispatcher, worker_logs: Callable[[], str]
) -> None:
    from tests.conftest import TEST_API_KEY

    dispatcher.submit(SUMMARY_REQUEST).wait(60)
    assert TEST_API_KEY not in worker_logs()
