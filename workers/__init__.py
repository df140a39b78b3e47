"""Celery app, agent registry, the agent runner and everything a worker process needs."""
