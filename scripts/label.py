"""`python scripts/label.py ...` is `prefkit label ...`; see prefkit/commands/label.py for the options."""

from prefkit.commands.label import main

if __name__ == "__main__":
    raise SystemExit(main())
