#!/usr/bin/env python3
"""Renders the real chat templates kept as test data with Python jinja2, configured as transformers'
apply_chat_template configures it, into expected.json: the independent reference SpecEdge's ChatTemplate is checked
against. Offline tool (python3-jinja2 from Debian); nothing at run time or in CI needs it.

    python3 tools/chat-templates/render.py tests/Shared.Tests/TestData/chat-templates
"""
import json
import os
import sys
from datetime import datetime

from jinja2.exceptions import TemplateError
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

# bos_token / eos_token of each model's tokenizer_config.json.
TOKENS = {
    "llama3": ("<|begin_of_text|>", "<|eot_id|>"),
    "llama3-original-2024-04": ("<|begin_of_text|>", "<|end_of_text|>"),
    "llama3.1": ("<|begin_of_text|>", "<|eot_id|>"),
    "qwen2.5": ("", "<|im_end|>"),
    "mistral-v0.2": ("<s>", "</s>"),
    "mistral-v0.2-original": ("<s>", "</s>"),
    "mistral-v0.3": ("<s>", "</s>"),
    "phi3": ("<s>", "<|endoftext|>"),
    "phi3-original-2024-04": ("<s>", "<|endoftext|>"),
}

CONVERSATIONS = {
    "system-user": ([{"role": "system", "content": "You are a helpful assistant."}, {"role": "user", "content": "Hello!"}], True),
    "multi-turn": ([
        {"role": "user", "content": "Hello, how are you?"},
        {"role": "assistant", "content": "I'm doing great. How can I help you today?"},
        {"role": "user", "content": "I'd like to show off how chat templating works!"},
    ], True),
    "system-multi-turn-no-prompt": ([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "  Hi there  "},
        {"role": "assistant", "content": "Hello."},
        {"role": "user", "content": "Bye"},
    ], False),
}


def raise_exception(message):
    raise TemplateError(message)


def main(folder):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.filters["tojson"] = lambda x, indent=None: json.dumps(x, ensure_ascii=False, indent=indent)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime(2024, 7, 26).strftime(fmt)
    expected = {}
    for name, (bos, eos) in TOKENS.items():
        with open(os.path.join(folder, name + ".jinja"), encoding="utf-8") as f:
            template = env.from_string(f.read())
        cases = {}
        for case, (messages, prompt) in CONVERSATIONS.items():
            try:
                text = template.render(messages=messages, add_generation_prompt=prompt, bos_token=bos, eos_token=eos)
                cases[case] = {"text": text}
            except TemplateError as e:
                cases[case] = {"error": str(e)}
        expected[name] = {"bos_token": bos, "eos_token": eos, "cases": cases}
    out = {"conversations": {k: {"messages": m, "add_generation_prompt": p} for k, (m, p) in CONVERSATIONS.items()}, "templates": expected}
    with open(os.path.join(folder, "expected.json"), "w", encoding="utf-8") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main(sys.argv[1])
