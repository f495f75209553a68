"""The Hugging Face Hub: pushing a finished run (push.py) with its model card (card.py).

A side service: the recipe (train/) calls it; the card reads the method's and the kinds' declarations. Nothing
below imports it.
"""
