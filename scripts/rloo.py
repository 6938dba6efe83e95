"""RLOO training script: `python scripts/rloo.py ...`, `accelerate launch scripts/rloo.py ...` or `prefkit rloo ...`.

See `prefkit rloo --help` and docs/ppo.md.
"""

from prefkit.commands.rloo import main

if __name__ == "__main__":
    raise SystemExit(main())
