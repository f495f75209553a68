"""Reward functions of a user's own package, for the GRPO tests (imported by name from the config, in this process
or in the processes of a DDP job, as a user's would be)."""


def vowels(completions, **kwargs):
    """The share of a completion's characters that are vowels: varies between random completions, so every group
    has something to compare."""
    return [sum(c in "aeiou" for c in text) / max(len(text), 1) for text in completions]


def seen(prompts, completions, topic, **kwargs):
    """Records what it was given (the topic column, one value per completion) and scores nothing."""
    CALLS.append({"prompts": list(prompts), "completions": list(completions), "topic": list(topic)})
    return [None] * len(completions)


CALLS: list = []


FAIL_ON: set = set()  # prompts on which `flaky` raises, as a reward with a bug would on some rows


def flaky(prompts, completions, **kwargs):
    """vowels, except that it raises on the prompts of FAIL_ON."""
    for prompt in prompts:
        if prompt in FAIL_ON:
            raise KeyError(f"no rule for {prompt!r}")
    return vowels(completions)
