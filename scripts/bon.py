"""Best-of-N script: `python scripts/bon.py ...`, `accelerate launch scripts/bon.py ...` or `prefkit bon ...`.

    python scripts/bon.py --prompts_file prompts.txt --n 8 --output bon.jsonl
    python scripts/bon.py --prompt "Suggest a new activity I could do with my teddy bear." --reward_model my-rm
"""

from prefkit.commands.bon import main

if __name__ == "__main__":
    raise SystemExit(main())
