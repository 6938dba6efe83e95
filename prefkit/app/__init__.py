"""The prefkit app: Best-of-N reranking and live pairwise preference collection that feeds training.

    from prefkit.app import build_app, AppSettings
    demo = build_app(policy, tokenizer, reward, store, AppSettings(data_dir="votes"))
    demo.launch(theme=prefkit.app.theme(), css=prefkit.app.CSS)

or, with everything resolved from flags / environment variables and the models loading in the background::

    python app.py --policy HuggingFaceTB/SmolLM2-135M-Instruct --reward_model demo
"""

from .blocks import CSS, build_app, theme
from .models import AppModels, ModelsNotReady
from .settings import (
    AppSettings,
    PortInUseError,
    choose_port,
    default_data_dir,
    port_in_use_error,
)


def create_store(settings: AppSettings):
    """The vote store the settings describe (with Hub sync when a dataset repo and a token are set)."""
    from ..data.votes import VoteStore

    return VoteStore(
        settings.data_dir,
        hub_repo=settings.hub_dataset if settings.hub_token else None,
        token=settings.hub_token,
        every_minutes=settings.sync_minutes,
    )


def launch(settings: AppSettings, *, prevent_thread_lock: bool = False, **launch_kwargs):
    """Start the server at once and load the models in the background (the page shows their progress).

    Without ``settings.port`` the server takes the first free port from 7860 on; an asked-for port that is taken
    raises :class:`PortInUseError` before anything loads."""
    port = choose_port(settings.server_name, settings.port)
    store = create_store(settings)
    models = AppModels.load_in_background(settings)
    demo = build_app(store=store, settings=settings, models=models)
    demo.queue(default_concurrency_limit=1)
    try:
        demo.launch(
            server_name=settings.server_name,
            server_port=port,
            theme=theme(),
            css=CSS,
            prevent_thread_lock=prevent_thread_lock,
            **launch_kwargs,
        )
    except OSError as error:
        if "Cannot find empty port" not in str(error):
            raise
        # Taken in the instant between the check above and the bind: say the same as the check would have.
        raise port_in_use_error(settings.server_name, port) from None
    return demo


__all__ = [
    "CSS",
    "AppModels",
    "AppSettings",
    "ModelsNotReady",
    "PortInUseError",
    "build_app",
    "choose_port",
    "create_store",
    "default_data_dir",
    "launch",
    "theme",
]
