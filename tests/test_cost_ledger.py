"""Costs are exact: what Chorus records equals what the provider billed, to the micro-dollar,
even when the provider fails a third of the calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from dispatcher import Dispatcher
from tests.helpers import billed_micro_usd

Ledger = Callable[[str], dict[str, Any]]

ERROR_CODES = {"model_error", "invalid_output"}


def test_a_hundred_requests_under_provider_faults_all_end_and_cost_exactly_what_was_billed(
    dispatcher: Dispatcher, inject_faults: Callable[..., None], ledger: Ledger
) -> None:
    inject_faults(
        rates={"rate_limit": 0.2, "overloaded": 0.1, "prose": 0.1}, retry_after=0.05, seed=7
    )
    texts = [f"Summarize the tradeoffs of broker design number {i}" for i in range(100)]
    handles = [dispatcher.submit(text) for text in texts]
    outcomes = [handle.wait(180) for handle in handles]

    statuses = [o.status for o in outcomes]
    assert set(statuses) <= {"done", "failed"}
    failures = {o.result["code"] for o in outcomes if o.status == "failed"}
    assert failures <= ERROR_CODES
    assert statuses.count("done") >= 90

    limit = dispatcher.app.settings.call_retries
    total_retries = 0
    for handle, outcome in zip(handles, outcomes, strict=True):
        report = ledger(handle.task_id)
        assert outcome.cost_micro_usd == billed_micro_usd(report)
        for model, totals in report["totals"].items():
            steps = [s for s in handle.trace() if s.model == model]
            assert totals["input_tokens"] == sum(s.usage["input_tokens"] for s in steps)
            assert totals["output_tokens"] == sum(s.usage["output_tokens"] for s in steps)
            assert totals["calls"] == sum(s.attempts for s in steps)
        for step in handle.trace():
            assert all(event["attempt"] <= limit for event in step.retry_log)
            total_retries += step.retries
        assert outcome.retries == sum(s.retries for s in handle.trace())
    assert total_retries > 0  # the faults really happened
