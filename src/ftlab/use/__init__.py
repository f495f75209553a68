"""Using a finished run: finding it (runs.py), prompts, generation, scores and the evaluation report.

Below train/ (the recipe loads runs and prepares examples with its own stages, then calls these), above config/.
"""
