"""The prefkit app: Best-of-N reranking and live pairwise preference collection that feeds training.

    from prefkit.app import build_app, AppSettings
    demo = build_app(policy, tokenizer, reward, store, AppSettings(data_dir="votes"))
    demo.launch(theme=prefkit.app.theme(), css=prefkit.app.CSS)

or, with everything resolved from flags / environment variables and the models loading in the background::

    python app.py --policy HuggingFaceTB/SmolLM2-135M-Instruct --reward_model demo
"""

from .blocks import CSS, build_app, theme
from .models import AppModels, ModelsNotReady
from .settings import AppSettings, default_data_dir


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
    """Start the server at once and load the models in the background (the page shows their progress)."""
    store = create_store(settings)
    models = AppModels.load_in_background(settings)
    demo = build_app(store=store, settings=settings, models=models)
    demo.queue(default_concurrency_limit=1)
    demo.launch(
        server_name=settings.server_name,
        server_port=settings.server_port,
        theme=theme(),
        css=CSS,
        prevent_thread_lock=prevent_thread_lock,
        **launch_kwargs,
    )
    return demo


__all__ = ["AppModels", "AppSettings", "CSS", "ModelsNotReady", "build_app", "create_store", "default_data_dir", "launch", "theme"]
