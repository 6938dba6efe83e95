"""`python scripts/generate_pairs.py ...` is `prefkit generate-pairs ...`; see prefkit/commands/generate_pairs.py for the options."""

from prefkit.commands.generate_pairs import main

if __name__ == "__main__":
    raise SystemExit(main())
