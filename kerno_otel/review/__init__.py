"""Reviewers' tools: ``audit query``, ``audit report`` (terminal, JSON, HTML), ``audit bundle``."""
