"""The Hugging Face Hub: pushing a finished run (push.py) with its model card (card.py).

A side service: it depends on utils/ only, and the recipe (train/) calls it; nothing below imports it.
"""
