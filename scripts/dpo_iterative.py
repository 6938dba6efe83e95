"""Iterative DPO script: `python scripts/dpo_iterative.py ...` or `prefkit dpo-iterative ...`.

    python scripts/dpo_iterative.py --config examples/dpo_iterative.yaml
"""

from prefkit.commands.dpo_iterative import main

if __name__ == "__main__":
    raise SystemExit(main())
