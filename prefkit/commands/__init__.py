"""The programs behind ``prefkit <command>`` and ``scripts/*.py``: parse, load, run, save. Nothing else."""
