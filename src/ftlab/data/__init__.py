"""Data: rows from files or the Hub ▶ a row format's parse (formats/) ▶ chat-template tokens with labels, as an
example of a kind (kinds/) ▶ batches.

Below the rooms that use it (methods/, exports/) and config/, beside model/ (neither imports the other).
"""
