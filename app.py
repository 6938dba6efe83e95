"""prefkit's Gradio app: `python app.py` (what `make app` runs), `prefkit app`, or a Hugging Face Space.

Only reads flags and environment variables and launches; the app itself is built in prefkit/app/.
"""

import sys

from prefkit.commands.app import main

if __name__ == "__main__":
    sys.exit(main())
