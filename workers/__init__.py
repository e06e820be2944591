"""Celery workers that apply impression and click events to the statistics in Redis."""
