"""`python scripts/export.py ...` is `prefkit export ...`; see prefkit/commands/export.py for the options."""

from prefkit.commands.export import main

if __name__ == "__main__":
    raise SystemExit(main())
