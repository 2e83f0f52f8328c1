"""Channels that reach people when no tab is open: Web Push and e-mail digests.

Each channel is two halves. A durable consumer (consumers.py) turns every committed notification
into owed deliveries (store/outbox.py), in the very transaction that moves its cursor. A
Dispatcher leases the deliveries that are due, asks the channel to send them, and records the
outcome: sent, given up, or tried again later.
"""
