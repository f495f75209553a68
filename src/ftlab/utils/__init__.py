"""The bottom layer: errors and the exit policy, atomic files and run-dir names, secrets, the console.

Everything above may import these; they import nothing of ftlab's outside utils/, and not torch.
"""
