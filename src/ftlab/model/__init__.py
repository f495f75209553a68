"""Models: where a base model comes from (source.py), loading it as training needs it with LoRA on top
(load.py), and a saved adapter on a base (adapter.py).

Below train/ and use/, beside data/ (neither imports the other).
"""

import logging
import re

# transformers and peft import bitsandbytes, which on CPUs with AVX512-BF16 logs a warning while it is imported
# (an optional kernel package is missing; its own CPU kernels are used). Turned down before anything here
# imports it; its errors still show.
logging.getLogger("bitsandbytes").setLevel(logging.ERROR)

HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")  # a Hub id, owner/name: here, so what only names models need not load torch
