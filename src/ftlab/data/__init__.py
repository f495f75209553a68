"""Data: rows from files or the Hub ▶ conversations ▶ chat-template tokens with labels ▶ batches.

Below train/ and use/, beside model/ (neither imports the other).
"""
