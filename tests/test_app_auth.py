"""Who is voting: Hugging Face sign-in (a gr.OAuthProfile, real or Gradio's mocked one), pseudonyms that hide the
account, admins, daily quotas and the global rate limit, all answered in the page; nothing identifying is stored."""

from __future__ import annotations

import json
import logging

import httpx
import pytest

gr = pytest.importorskip("gradio")

from prefkit.app import AppModels, AppSettings, build_app  # noqa: E402
from prefkit.app.auth import Annotator, identify, is_admin, parse_admins  # noqa: E402
from prefkit.app.logic import MODE_TWO_SAMPLES, DailyQuota, LimitReached  # noqa: E402
from prefkit.data.votes import VoteStore, hash_annotator  # noqa: E402
from helpers import start_app  # noqa: E402

PROMPT = "Tell me about tea."
SALT = "a-long-secret-salt-for-tests-0123"
TOKEN = "hf_NeverWriteThisToken1234567890"


MOCKED_ACCOUNT = {
    "access_token": "mock-oauth-token-for-local-dev", "token_type": "bearer", "expires_in": 3600,
    "scope": "openid profile", "expires_at": 2**40,
    "userinfo": {"sub": "777", "name": "Mock Person", "preferred_username": "mock-person",
                 "profile": "https://huggingface.co/mock-person", "picture": ""},
}


@pytest.fixture(autouse=True)
def mocked_hub_account(monkeypatch):
    """Off a Space, Gradio mocks sign-in with this machine's Hub account, looked up online when the app is built;
    here that account is faked (no network)."""
    pytest.importorskip("itsdangerous", reason="Hugging Face sign-in needs gradio[oauth]")
    import gradio.oauth

    monkeypatch.setattr(gradio.oauth, "_get_mocked_oauth_info", lambda: dict(MOCKED_ACCOUNT))


def profile(username: str, sub: str | None = None) -> gr.OAuthProfile:
    return gr.OAuthProfile({
        "sub": sub or f"id-of-{username}", "name": f"{username.title()} Fullname", "preferred_username": username,
        "profile": f"https://huggingface.co/{username}", "picture": "",
    })


def vowel_reward(prompts, responses):
    return [sum(response.count(v) for v in "aeiou") for response in responses]


def make_app(tiny_policy, data_dir, **settings):
    model, tokenizer = tiny_policy
    defaults = dict(data_dir=str(data_dir), n=2, max_new_tokens=4, relabel_fraction=0.0, annotator_salt=SALT,
                    login="huggingface", admins="Ada", hub_token=TOKEN)
    models = AppModels.from_objects(model, tokenizer, vowel_reward, policy_name="tiny")
    return build_app(store=VoteStore(data_dir), settings=AppSettings(**{**defaults, **settings}), models=models,
                     prompts=[PROMPT], seed=0)


def handler(demo, api_name: str):
    return next(fn.fn for fn in demo.fns.values() if fn.api_name == api_name)


def last(generator):
    return list(generator)[-1]


def show_pair(demo, state=None, name=""):
    pair, *_, state = last(handler(demo, "new_pair")(PROMPT, MODE_TWO_SAMPLES, name, state, None))
    return pair, state


def vote(demo, pair, state, who=None, name="", side="vote_left"):
    return handler(demo, side)(pair, "not graded", "", name, state, None, who)


# --------------------------------------------------------------------------------------------------------- identity


def test_a_signed_in_annotator_is_a_salted_pseudonym_of_the_account_id_not_the_username():
    annotator = identify(profile("ada", sub="123"), "typed name", "session-1", SALT, "huggingface")

    assert annotator.id == hash_annotator("hf:123", SALT) and annotator.signed_in and annotator.username == "ada"
    assert identify(profile("ada-renamed", sub="123"), "", "session-2", SALT, "huggingface").id == annotator.id
    assert identify(profile("ada", sub="123"), "", "s", "another-salt-of-enough-length", "huggingface").id != annotator.id
    assert "ada" not in repr(annotator)  # the username stays out of logs


def test_signed_out_the_typed_name_proves_nothing_and_the_session_is_used():
    annotator = identify(None, "ada", "session-1", SALT, "huggingface")

    assert not annotator.signed_in and annotator.id == hash_annotator("session:session-1", SALT)
    assert identify(None, "Ada ", "s", SALT, "name").id == hash_annotator("ada", SALT)  # the name field, locally


def test_admins_are_signed_in_usernames_on_the_list_and_everyone_without_sign_in():
    admins = parse_admins("@Ada, bob ,")

    assert admins == ("ada", "bob")
    assert is_admin(identify(profile("ADA"), "", "s", SALT, "huggingface"), admins, "huggingface")
    assert not is_admin(identify(profile("eve"), "", "s", SALT, "huggingface"), admins, "huggingface")
    assert not is_admin(Annotator("ann-x"), admins, "huggingface")
    assert is_admin(Annotator("ann-x"), (), "name")  # a local run trusts whoever opens it


# --------------------------------------------------------------------------------------------------------- settings


SPACE_WITH_OAUTH = {"SPACE_ID": "me/labels", "OAUTH_CLIENT_ID": "client", "SYSTEM": "spaces"}


def test_a_space_with_sign_in_refuses_to_start_without_a_secret_salt(monkeypatch):
    for key, value in SPACE_WITH_OAUTH.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match="no secret PREFKIT_ANNOTATOR_SALT of at least 16 characters"):
        AppSettings.from_env({**SPACE_WITH_OAUTH})
    with pytest.raises(ValueError, match="PREFKIT_ANNOTATOR_SALT"):
        AppSettings.from_env({**SPACE_WITH_OAUTH, "PREFKIT_ANNOTATOR_SALT": "short"})
    settings = AppSettings.from_env({**SPACE_WITH_OAUTH, "PREFKIT_ANNOTATOR_SALT": SALT, "PREFKIT_ADMINS": "ada"})
    assert settings.login_mode == "huggingface" and settings.salt == SALT and SALT not in repr(settings)


def test_an_admin_list_without_sign_in_is_refused(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    with pytest.raises(ValueError, match="admins are set but annotators do not sign in"):
        AppSettings.from_env({"PREFKIT_ADMINS": "ada"})


def test_quota_and_login_settings_come_from_the_environment_and_are_checked(monkeypatch):
    monkeypatch.delenv("SPACE_ID", raising=False)
    settings = AppSettings.from_env({
        "PREFKIT_VOTES_PER_DAY": "50", "PREFKIT_GENERATIONS_PER_DAY": "20",
        "PREFKIT_GLOBAL_GENERATIONS_PER_MINUTE": "6", "PREFKIT_LOGIN": "name",
    })
    assert (settings.votes_per_day, settings.generations_per_day, settings.global_generations_per_minute) == (50, 20, 6)
    assert settings.login_mode == "name" and settings.salt == "prefkit"  # locally, the salt the vote files always had
    with pytest.raises(ValueError, match="login='github' must be one of auto, huggingface, name"):
        AppSettings.from_env({"PREFKIT_LOGIN": "github"})
    with pytest.raises(ValueError, match="votes_per_day=-1 must be >= 0"):
        AppSettings.from_env({"PREFKIT_VOTES_PER_DAY": "-1"})


def test_the_daily_quota_counts_stored_votes_and_renews_at_midnight_utc():
    now = [86400 * 20000 + 3600 * 23]  # 23:00 UTC
    quota = DailyQuota(2, "votes", already=[("ann-a", "2024-10-04T10:00:00.000+00:00")], clock=lambda: now[0])
    assert quota.used("ann-a") == 1  # 2024-10-04 is day 20000

    quota.check("ann-a")
    with pytest.raises(LimitReached, match="today's quota of 2 votes.*in 1 h 0 min"):
        quota.check("ann-a")
    quota.check("ann-b")  # one annotator's quota is not another's
    now[0] += 3600
    quota.check("ann-a")


# ---------------------------------------------------------------------------------- handlers with an OAuth profile


def test_a_signed_in_vote_is_stored_under_the_pseudonym_and_a_signed_out_one_is_refused_in_the_page(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path)
    store = demo.prefkit_store
    pair, state = show_pair(demo)

    refused = vote(demo, pair, state, who=None)
    assert "Sign in with Hugging Face" in refused[1] and refused[0] == pair and store.read() == []
    assert list(handler(demo, "pair_after_vote_left")(PROMPT, MODE_TWO_SAMPLES, "", refused[-1], None, None)) == [
        (gr.skip(),) * 6]  # the refused vote's pair stays; nothing new is sampled

    saved = vote(demo, pair, refused[-1], who=profile("grace", sub="42"))
    assert "Vote saved" in saved[1] and saved[0] is None
    assert store.read()[-1].annotator == hash_annotator("hf:42", SALT)


def test_the_daily_vote_quota_answers_in_the_page_and_stores_nothing_more(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path, votes_per_day=1)
    pair, state = show_pair(demo)
    vote(demo, pair, state, who=profile("grace"))
    pair, state = show_pair(demo, state)

    reply = vote(demo, pair, state, who=profile("grace"))
    assert "today's quota of 1 votes" in reply[1] and reply[0] == pair
    assert len(demo.prefkit_store.read()) == 1
    assert "Vote saved" in vote(demo, pair, state, who=profile("linus"))[1]  # another annotator still may


def test_the_global_generation_limit_answers_every_session_in_the_page(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path, global_generations_per_minute=1)
    show_pair(demo)
    new_pair = handler(demo, "new_pair")

    *_, note, _ = last(new_pair(PROMPT, MODE_TWO_SAMPLES, "", None, None, profile("someone-else")))
    assert "Too many generations: at most 1 per 60 s for everyone using this app together" in note


def test_only_admins_export_and_see_the_annotator_tables(tiny_policy, tmp_path):
    demo = make_app(tiny_policy, tmp_path)
    pair, state = show_pair(demo)
    vote(demo, pair, state, who=profile("grace"))
    export = handler(demo, "export")

    with pytest.raises(gr.Error, match="Only the app.{1,6}s admins can export the votes"):
        export("dpo", "JSONL", "keep", None, profile("grace"))
    path, _ = export("dpo", "JSONL", "keep", None, profile("ada"))
    assert path.endswith(".jsonl")
    markdown, table, _ = handler(demo, "data_trust")(None, profile("grace"))
    assert "for the app's admins" in markdown and table is None
    line, panel, *_ = handler(demo, "access")(None, profile("grace"))
    assert panel.visible is False and "grace" in line
    assert handler(demo, "access")(None, profile("ada"))[1].visible is True


def test_no_username_name_or_token_reaches_a_stored_file_or_the_log(tiny_policy, tmp_path, caplog):
    caplog.set_level(logging.DEBUG)
    signed_in = make_app(tiny_policy, tmp_path / "space", hub_token=TOKEN)
    pair, state = show_pair(signed_in)
    vote(signed_in, pair, state, who=profile("grace-hopper-login"))
    handler(signed_in, "export")("dpo", "JSONL", "keep", None, profile("ada"))
    local = make_app(tiny_policy, tmp_path / "local", login="name", admins=None)
    pair, state = show_pair(local, name="Alan Turing Typed")
    vote(local, pair, state, name="Alan Turing Typed")

    stored = "\n".join(path.read_text(errors="replace") for path in tmp_path.rglob("*") if path.is_file()).lower()
    assert len(signed_in.prefkit_store.read()) == len(local.prefkit_store.read()) == 1
    for secret in ("grace-hopper-login", "Grace-Hopper-Login Fullname", "alan turing typed", TOKEN, "id-of-grace"):
        assert secret.lower() not in stored
        assert secret.lower() not in caplog.text.lower()


# ------------------------------------------------------------------------------------- Gradio's mocked OAuth routes


def test_gradios_mocked_sign_in_reaches_the_vote_handler(tiny_policy, tmp_path):
    """Gradio's mocked sign-in (the fixture's account) sets a session cookie; the vote handler sees its profile."""
    demo = make_app(tiny_policy, tmp_path, admins=None)
    demo.queue()
    _, url, _ = start_app(demo)
    base = url.rstrip("/")
    try:
        with httpx.Client(base_url=base, timeout=60) as http:
            callback = http.get("/login/huggingface", follow_redirects=False)
            login = http.get(callback.headers["location"], follow_redirects=False)
            # the session cookie is Secure (Spaces are https); over this test's http it is sent by hand
            cookie = login.headers["set-cookie"].split(";")[0]

            def call(api_name: str, data: list, session: str) -> list:
                index = next(i for i, fn in demo.fns.items() if fn.api_name == api_name)
                http.post("/gradio_api/queue/join", headers={"cookie": cookie}, json={
                    "data": data, "fn_index": index, "session_hash": session, "event_data": None, "trigger_id": None,
                }).raise_for_status()
                with http.stream("GET", "/gradio_api/queue/data", params={"session_hash": session},
                                 headers={"cookie": cookie}) as events:
                    for line in events.iter_lines():
                        message = json.loads(line[5:]) if line.startswith("data:") else {}
                        if message.get("msg") == "process_completed":
                            return message["output"]["data"]
                raise AssertionError(f"{api_name} did not complete")

            call("new_pair", [PROMPT, MODE_TWO_SAMPLES, "", None], "browser-1")
            reveal = call("vote_left", [None, "not graded", "", "", None], "browser-1")[1]
    finally:
        demo.close()

    stored = demo.prefkit_store.read()
    assert "Vote saved" in reveal, reveal
    assert [v.annotator for v in stored] == [hash_annotator("hf:777", SALT)]


# ----------------------------------------------------------------------------------------------------------- Space


def test_the_space_turns_sign_in_on_and_deploying_sets_a_fresh_secret_salt_and_the_admins():
    from pathlib import Path

    from prefkit.app.space import deploy_space
    from test_app_settings import ROOT, FakeHubApi, front_matter

    assert front_matter(Path(ROOT) / "spaces" / "README.md")["hf_oauth"] == "true"
    requirements = (Path(ROOT) / "spaces" / "requirements.txt").read_text().split()
    assert {"itsdangerous", "authlib"} <= set(requirements)  # gradio's oauth extra

    salts = []
    for _ in range(2):
        api = FakeHubApi()
        deploy_space("me/labels", token="hf_x", admins="ada,bob", new_annotator_salt=True, api=api, root=ROOT)
        secrets = [call[2] for call in api.calls if call[0] == "add_space_secret"]
        assert ("add_space_variable", "me/labels", {"PREFKIT_ADMINS": "ada,bob"}) in api.calls
        assert len(secrets) == 1 and len(secrets[0]["PREFKIT_ANNOTATOR_SALT"]) == 64
        salts.append(secrets[0]["PREFKIT_ANNOTATOR_SALT"])
    assert salts[0] != salts[1]  # random, not a constant anyone could read in this repository
    api = FakeHubApi()
    deploy_space("me/labels", token="hf_x", api=api, root=ROOT)  # an update keeps the Space's salt
    assert not [call for call in api.calls if call[0] == "add_space_secret"]
