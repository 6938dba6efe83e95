"""PPO training script: `python scripts/ppo.py ...`, `accelerate launch scripts/ppo.py ...` or `prefkit ppo ...`.

See `prefkit ppo --help` and docs/ppo.md.
"""

from prefkit.commands.ppo import main

if __name__ == "__main__":
    raise SystemExit(main())
