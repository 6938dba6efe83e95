"""GRPO training script: `python scripts/grpo.py ...`, `accelerate launch scripts/grpo.py ...` or `prefkit grpo ...`.

See `prefkit grpo --help` and docs/ppo.md.
"""

from prefkit.commands.grpo import main

if __name__ == "__main__":
    raise SystemExit(main())
