"""The web UI's tabs, one module each: chat, train, evaluate, export, compare; common.py holds what they share."""
