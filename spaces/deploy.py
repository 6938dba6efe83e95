"""Deploy prefkit's app as a Hugging Face Space (or stage its files locally with --dry_run).

    python spaces/deploy.py --space_id me/prefkit-demo --new_annotator_salt --admins me   # the first time
    python spaces/deploy.py --space_id me/prefkit-demo                                      # updates
    python spaces/deploy.py --space_id me/prefkit-demo --hub_dataset me/prefkit-votes --set_token_secret --storage small
    python spaces/deploy.py --dry_run --out space-build/     # just write the Space's files to a folder

The token comes from --token or the HF_TOKEN environment variable (or the machine's login) and is never printed.
"""

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefkit.app.space import deploy_space, space_files, stage_space  # noqa: E402


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--space_id", help="user/name of the Space")
    parser.add_argument("--token", default=os.environ.get("HF_TOKEN"), help="Hugging Face token (default: $HF_TOKEN)")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--hub_dataset", help="dataset repo the votes sync to (Space variable PREFKIT_HUB_DATASET)")
    parser.add_argument("--set_token_secret", action="store_true", help="store the token as the Space secret HF_TOKEN")
    parser.add_argument("--storage", choices=["small", "medium", "large"], help="request persistent storage (/data)")
    parser.add_argument("--admins", help="Hub usernames, comma-separated, who may export and push the votes "
                        "(Space variable PREFKIT_ADMINS)")
    parser.add_argument("--new_annotator_salt", action="store_true",
                        help="store a fresh random secret PREFKIT_ANNOTATOR_SALT (first deployment only: a new salt "
                        "gives every annotator a new pseudonym)")
    parser.add_argument("--dry_run", action="store_true", help="only stage the files (see --out)")
    parser.add_argument("--out", default="space-build", help="where --dry_run writes the Space's files")
    args = parser.parse_args(argv)
    if args.dry_run:
        folder = stage_space(args.out)
        print(f"Staged {len(space_files())} files in {folder}; push them with:\n"
              f"  hf upload <user/space> {folder} . --repo-type space")
        return 0
    if not args.space_id:
        parser.error("--space_id is required (or use --dry_run)")
    url = deploy_space(
        args.space_id, token=args.token, private=args.private, hub_dataset=args.hub_dataset,
        set_token_secret=args.set_token_secret, storage=args.storage, admins=args.admins,
        new_annotator_salt=args.new_annotator_salt,
    )
    print(f"Deployed: {url}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
