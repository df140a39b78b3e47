"""Producer side: submit work, build workflows, wait for answers; plus the `chorus` CLI."""

from dispatcher.dispatcher import Dispatcher, NoWorkerError, TaskHandle, TaskOutcome

__all__ = ["Dispatcher", "NoWorkerError", "TaskHandle", "TaskOutcome"]
