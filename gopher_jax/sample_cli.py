"""`gopher-jax sample`: generate text from a checkpoint with a KV cache.

  gopher-jax sample --workdir RUN --prompt "Once upon a time" --max_new_tokens 64 --temperature 0.8 --top_p 0.9
  gopher-jax sample --workdir RUN --dialogue --prompt "What is a gopher?"
"""
from __future__ import annotations

import argparse
import json
import sys

# Gopher's dialogue prompt (Rae et al. 2021, App. H.1, abridged): a conversation prefix that
# conditions the LM to act as a helpful assistant; the user turn is appended and the model
# continues as "Gopher" until it starts the next "User:" turn.
DIALOGUE_PREFIX = (
    "The following is a conversation between a highly knowledgeable and intelligent AI assistant, called "
    "Gopher, and a human user, called User. In the following interactions, User and Gopher will converse in "
    "natural language, and Gopher will do its best to answer User's questions. Gopher was built to be "
    "respectful, polite and inclusive. It knows a lot, and always tells the truth. The conversation begins.\n"
    "User: OK Gopher, I'm going to start by quizzing you with a few warm-up questions. Who is currently the "
    "president of the USA?\n"
    "Gopher: It's Joe Biden; he was sworn in earlier this year.\n"
    "User: Nice one! Do you think Biden is a better president than the last guy?\n"
    "Gopher: I was trained not to have opinions on political, social, or religious issues. Would you like to "
    "know about anything else?\n")
DIALOGUE_STOP = ("\nUser:",)


def dialogue_prompt(user_turn: str, history: str = "") -> str:
    """Returns the Gopher dialogue prompt with `history` turns and the new user turn, ready for 'Gopher:'."""
    return f"{DIALOGUE_PREFIX}{history}User: {user_turn}\nGopher:"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of `gopher-jax sample`."""
    parser.add_argument("--workdir", required=True, help="training run directory (config.gin + checkpoints/)")
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: newest)")
    parser.add_argument("--prompt", action="append", required=True, help="prompt (repeat for a batch)")
    parser.add_argument("--max_new_tokens", type=int, default=64)
    parser.add_argument("--temperature", type=float, default=1.0, help="0 = greedy")
    parser.add_argument("--top_k", type=int, default=0, help="0 = off")
    parser.add_argument("--top_p", type=float, default=1.0, help="nucleus sampling mass; 1 = off")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stop", action="append", default=[], help="stop sequence (repeatable)")
    parser.add_argument("--dialogue", action="store_true",
                        help="wrap each prompt in Gopher's dialogue template; stop at the next 'User:' turn")
    parser.add_argument("--json", action="store_true", help="print a JSON list of {prompt, completion}")


def run(args: argparse.Namespace) -> int:
    """Samples one completion per --prompt and prints them; returns 0 (2 on a bad flag or run)."""
    from gopher_jax import decode
    from gopher_jax.eval import checkpoint_loader

    try:
        sampling = decode.SamplingConfig(args.max_new_tokens, args.temperature, args.top_k, args.top_p, args.seed)
        loaded = checkpoint_loader.load(args.workdir, args.step)
    except (FileNotFoundError, RuntimeError, ValueError) as e:
        print(f"gopher-jax sample: {e}", file=sys.stderr)
        return 2
    prompts = [dialogue_prompt(p) for p in args.prompt] if args.dialogue else list(args.prompt)
    stop = list(args.stop) + (list(DIALOGUE_STOP) if args.dialogue else [])
    try:
        outs = decode.generate(loaded.config, loaded.params, loaded.tokenizer, prompts, sampling, stop=stop)
    except ValueError as e:
        print(f"gopher-jax sample: {e}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([{"prompt": p, "completion": o} for p, o in zip(args.prompt, outs)]))
    else:
        for p, o in zip(args.prompt, outs):
            print(f"{p}{o}" if not args.dialogue else f"User: {p}\nGopher:{o}")
            print("-" * 40)
    return 0
