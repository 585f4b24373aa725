"""How much the offline byte count over-reserves English: the built-in Thrall research prompt
with its schema, counted as bytes and with bpe-openai's true o200k and cl100k counts.

    python benchmarks/estimate_ratio.py
"""

from __future__ import annotations

import json
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

with warnings.catch_warnings():  # bpe-openai reads its data with a deprecated importlib call
    warnings.simplefilter("ignore")
    from test_tokenizer import true_count

from mythline_cli import negotiate, pricing, research
from mythline_cli.config import parse_config
from mythline_cli.fleet.schemas import RECORD_MODELS

INPUT_USD, OUTPUT_USD = 0.15, 0.60  # openai/gpt-4o-mini, per million tokens


def main() -> None:
    settings = parse_config({})
    agent = settings.agent("world-npcs")
    schema = RECORD_MODELS[agent.kind]
    messages = research.messages(agent, "Thrall", [], settings.prompts_dir(), schema, "json_schema")
    fmt = negotiate.response_format(schema, "json_schema")
    sent = [*messages, {"role": "system", "content": json.dumps(fmt, separators=(",", ":"))}]
    bound, _ = pricing.count_messages(sent, "chars")
    overhead = pricing.PER_REPLY_TOKENS + len(sent) * pricing.PER_MESSAGE_TOKENS
    o200k = overhead + sum(true_count("o200k_base", m["content"]) for m in sent)
    cl100k = overhead + sum(true_count("cl100k_base", m["content"]) for m in sent)
    margin, out = settings.provider.estimate_margin, settings.provider.max_output_tokens

    def usd(prompt: float) -> float:
        return prompt * margin * INPUT_USD + out * OUTPUT_USD

    print(f"prompt: {bound:,} bytes, {o200k:,} o200k tokens ({bound / o200k:.2f}x), "
          f"{cl100k:,} cl100k tokens ({bound / cl100k:.2f}x)")
    print(f"reservation (x{margin:g} margin, + max_output_tokens {out}): "
          f"{(bound * margin + out) / (o200k * margin + out):.2f}x o200k in tokens, "
          f"{usd(bound) / usd(o200k):.2f}x in USD at gpt-4o-mini's prices")


if __name__ == "__main__":
    main()
