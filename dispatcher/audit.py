"""`chorus auditor` (drain the audit stream into SQL) and `chorus audit` (ask the trail)."""

from __future__ import annotations

import argparse
import json
import logging
import re
import signal
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from messages import ChorusError

if TYPE_CHECKING:
    from workers.audit_store import AuditStore

_RELATIVE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def add_commands(sub: Any) -> None:
    auditor = sub.add_parser("auditor", help="write the audit stream to SQL (run one or more)")
    auditor.add_argument("--batch", type=int, default=500, help="entries per transaction")
    auditor.add_argument("--loglevel", default="INFO")
    auditor.set_defaults(handler=cmd_auditor)

    audit = sub.add_parser("audit", help="what agents did, from the SQL audit trail")
    audit.add_argument("--agent", help="only this agent's events")
    audit.add_argument("--task", dest="task_id", help="only this task's events")
    audit.add_argument("--kind", help="submitted, started, step, dead_letter, review_*")
    audit.add_argument("--since", type=parse_when, help="ISO time (local if no offset) or 2h/7d")
    audit.add_argument("--until", type=parse_when, help="ISO time (local if no offset) or 30m")
    audit.add_argument("--tool", help="calls of this tool (input, output or error, duration)")
    audit.add_argument("--errors", action="store_true", help="with --tool: failed calls only")
    audit.add_argument("--limit", type=int, default=1000)
    audit.add_argument("--json", action="store_true", help="one JSON document per line")
    audit.set_defaults(handler=cmd_audit)


def parse_when(text: str, *, now: datetime | None = None) -> datetime:
    """'2026-11-24T14:32' (local time unless it has an offset), or '2h' meaning two hours ago."""
    match = _RELATIVE.match(text.strip())
    if match:
        ago = timedelta(**{_UNITS[match[2]]: float(match[1])})
        return (now or datetime.now(UTC)) - ago
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is neither an ISO time (2026-11-24T14:32) nor an age like 2h or 7d"
        ) from None
    return moment.astimezone(UTC) if moment.tzinfo is None else moment


def cmd_auditor(args: argparse.Namespace) -> int:
    from workers import redis_urls
    from workers.audit_store import AuditStore
    from workers.auditor import Auditor, AuditorOptions
    from workers.settings import Settings

    logging.basicConfig(level=args.loglevel.upper(), format="%(asctime)s %(name)s %(message)s")
    settings = Settings.from_env()
    store = AuditStore(settings.database_url)
    auditor = Auditor(
        redis_urls.client(
            settings.redis_url,
            master=settings.sentinel_master,
            sentinel_password=settings.sentinel_password,
            health_check_interval=30,
        ),
        store,
        AuditorOptions(batch=args.batch),
    )
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    auditor.run(stop)
    store.close()
    return 0


def cmd_audit(args: argparse.Namespace) -> int:
    from workers.audit_store import AuditStore
    from workers.settings import Settings

    settings = Settings.from_env()
    store = AuditStore.existing(settings.database_url)
    if store is None:
        raise ChorusError(
            "no audit trail yet: start `chorus auditor` (CHORUS_DATABASE_URL says where it writes)"
        )
    if getattr(args, "tool", None):
        return _tool_calls(store, args)
    rows = store.query(
        agent=args.agent,
        task_id=args.task_id,
        kind=args.kind,
        since=args.since,
        until=args.until,
        limit=args.limit,
    )
    for row in rows:
        print(json.dumps(_document(row)) if args.json else describe(row))
    if not args.json:
        print(f"{len(rows)} event(s)")
    return 0


def _tool_calls(store: AuditStore, args: argparse.Namespace) -> int:
    from workers import audit_tools

    calls = store.tool_calls(
        args.tool,
        agent=args.agent,
        task_id=args.task_id,
        since=args.since,
        until=args.until,
        errors_only=args.errors,
        limit=args.limit,
    )
    for call in calls:
        if args.json:
            document = {**call, "at": call["at"].isoformat(), "input": json.loads(call["input"])}
            print(json.dumps(document))
        else:
            print(audit_tools.describe(call))
    if not args.json:
        failed = sum(1 for call in calls if call["error"] is not None)
        print(f"{len(calls)} call(s) of {args.tool}, {failed} failed")
    return 0


def _document(row: dict[str, Any]) -> dict[str, Any]:
    document = {k: v for k, v in row.items() if k != "detail"}
    document["at"] = row["at"].isoformat()
    document["detail"] = json.loads(row["detail"]) if row["detail"] else None
    return document


def describe(row: dict[str, Any]) -> str:
    at: datetime = row["at"]
    text = f"{at.isoformat(timespec='milliseconds')}  {row['task_id']}  {row['kind']:<14}"
    if row["agent"]:
        text += f" {row['agent']}"
    if row["status"]:
        text += f" [{row['status']}]"
    if row["kind"] == "step":
        text += (
            f" {row['model']} {row['input_tokens']}+{row['output_tokens']} tok"
            f" ${row['cost_micro_usd'] / 1_000_000:.6f} message {row['message_id']}"
        )
    return text
