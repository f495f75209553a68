"""Configuration: the schema (every option, declared once), its checks, composition, and --help.

Above utils/ and below everything else; nothing here imports torch, so composing, validating and --help
stay fast.
"""
