"""The app in a real browser: headless Chromium (Debian's package) loads the page, a vote is cast by clicking.

Needs ``chromium`` and ``chromium-driver`` from apt (``.ci/run`` installs them) and PyPI ``selenium``; the test is
skipped with the reason when they are missing. No test tool downloads a browser: the system chromedriver is used.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from helpers import start_app

pytestmark = pytest.mark.browser

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver") or ("/usr/bin/chromedriver" if Path("/usr/bin/chromedriver").exists() else None)
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--window-size=1280,1500",
]
INJECTION = '<script>window.__prefkit_pwned = 1</script><img src=x onerror="window.__prefkit_pwned = 2">'


def vowel_reward(prompts, responses):
    return [sum(r.count(v) for v in "aeiou") for r in responses]


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    if CHROMIUM is None or CHROMEDRIVER is None:
        pytest.skip("headless Chromium is not installed (apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="PyPI selenium is not installed")
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}")
    browser = webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)
    yield browser
    browser.quit()


@pytest.fixture(scope="module")
def app(tiny_model_dir, tmp_path_factory):
    from prefkit.app import CSS, AppModels, AppSettings, build_app, theme
    from prefkit.data.votes import Vote, VoteStore
    from prefkit.models import load_model

    data_dir = tmp_path_factory.mktemp("browser-votes")
    store = VoteStore(data_dir)
    # A pair someone else voted on, whose answers are HTML: with relabel_fraction=1 it is the first pair shown.
    store.append(
        Vote.new(prompt="Say hi.", response_a=INJECTION, response_b="<b>Hello</b> & welcome", verdict="a",
                 source_a="tiny", source_b="tiny", annotator="ann-earlier")
    )
    policy, tokenizer = load_model(tiny_model_dir)
    models = AppModels.from_objects(policy.eval(), tokenizer, vowel_reward, policy_name="tiny")
    settings = AppSettings(data_dir=str(data_dir), n=2, max_new_tokens=8, relabel_fraction=1.0)
    demo = build_app(store=store, settings=settings, models=models, prompts=["Tell me about tea."], seed=0)
    demo.queue()
    _, url, _ = start_app(demo, theme=theme(), css=CSS)
    yield url, store
    demo.close()


def wait_for(condition, timeout=30.0, what="condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def open_label_tab(driver, url):
    from selenium.webdriver.common.by import By

    driver.get(url)
    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "button[role='tab']"), what="the tabs")
    tab = next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role='tab']") if "Compare" in b.text)
    tab.click()
    return wait_for(lambda: [b for b in driver.find_elements(By.ID, "new-pair") if b.is_displayed()], what="New pair")[0]


def test_a_vote_cast_by_clicking_is_stored_and_html_answers_render_as_text(driver, app, tmp_path):
    from selenium.webdriver.common.by import By

    url, store = app
    before = len(store.read())
    open_label_tab(driver, url)  # no click: the first pair is sampled when the page opens

    left = driver.find_element(By.CSS_SELECTOR, "#response-left textarea")
    right = driver.find_element(By.CSS_SELECTOR, "#response-right textarea")
    wait_for(lambda: left.get_attribute("value"), what="the pair")
    shown = {left.get_attribute("value"), right.get_attribute("value")}
    assert shown == {INJECTION, "<b>Hello</b> & welcome"}  # the characters themselves, not rendered markup
    assert driver.execute_script("return window.__prefkit_pwned === undefined")
    assert not driver.find_elements(By.CSS_SELECTOR, "img[src='x']")

    driver.find_element(By.ID, "vote-left").click()
    reveal = wait_for(lambda: driver.find_element(By.ID, "vote-reveal").text, what="the reveal")
    votes = wait_for(lambda: store.read() if len(store.read()) == before + 1 else None, what="the stored vote")

    vote = votes[-1]
    assert vote.verdict == vote.shown_left
    assert {vote.response_a, vote.response_b} == shown
    assert vote.generation.get("relabel_of")
    assert "Vote saved" in reveal and "tiny" in reveal
    assert driver.execute_script("return window.__prefkit_pwned === undefined")

    screenshot = tmp_path / "app-label.png"
    driver.save_screenshot(str(screenshot))
    assert screenshot.stat().st_size > 10_000


def test_best_of_n_shows_the_ranked_candidates_with_the_best_highlighted(driver, app):
    from selenium.webdriver.common.by import By

    url, _ = app
    driver.get(url)
    prompt = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#bon-prompt textarea"), what="the prompt box")[0]
    prompt.send_keys("Tell me about tea.")
    driver.find_element(By.ID, "bon-run").click()

    rows = wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "#bon-table tr.prefkit-best"), what="the ranked table")
    assert len(driver.find_elements(By.CSS_SELECTOR, "#bon-table tbody tr")) == 2  # the app's default N
    assert rows[0].find_element(By.CSS_SELECTOR, "td").text.startswith("1")


@pytest.fixture(scope="module")
def train_app(tiny_model_dir, tmp_path_factory):
    from prefkit.app import CSS, AppModels, AppSettings, build_app, theme
    from prefkit.data.votes import Vote, VoteStore
    from prefkit.models import load_model

    data_dir = tmp_path_factory.mktemp("browser-train")
    store = VoteStore(data_dir)
    for index in range(4):
        store.append(Vote.new(prompt="Tell me about tea.", response_a=f"Tea is a kind, warm drink ({index}).",
                              response_b="No.", verdict="a", source_a="tiny", source_b="tiny", annotator="ann"))
    policy, tokenizer = load_model(tiny_model_dir)
    models = AppModels.from_objects(policy.eval(), tokenizer, vowel_reward, policy_name="tiny")
    settings = AppSettings(data_dir=str(data_dir), n=2, max_new_tokens=8, relabel_fraction=0.0, train_tab="on",
                           train_max_steps=2, train_eval_prompts=1)
    demo = build_app(store=store, settings=settings, models=models, prompts=["Tell me about tea."], seed=0)
    demo.queue()
    _, url, _ = start_app(demo, theme=theme(), css=CSS)
    yield url, store, demo
    demo.close()


def click_tab(driver, text):
    from selenium.webdriver.common.by import By

    wait_for(lambda: driver.find_elements(By.CSS_SELECTOR, "button[role='tab']"), what="the tabs")
    next(b for b in driver.find_elements(By.CSS_SELECTOR, "button[role='tab']") if text in b.text).click()


@pytest.mark.slow
def test_training_on_the_votes_puts_the_trained_policy_into_the_next_pair(driver, train_app):
    from selenium.webdriver.common.by import By

    url, store, demo = train_app
    driver.get(url)
    click_tab(driver, "Train")
    wait_for(lambda: [b for b in driver.find_elements(By.ID, "train-start") if b.is_displayed()], what="Start")[0].click()
    status = wait_for(
        lambda: "Finished" in driver.find_element(By.ID, "train-status").text and driver.find_element(By.ID, "train-status").text,
        timeout=300, what="the run to finish",
    )
    name = demo.prefkit_train.latest()["name"]
    assert name.startswith("tiny + dpo-4-") and name in status

    click_tab(driver, "Compare")
    two_models = wait_for(
        lambda: [label for label in driver.find_elements(By.CSS_SELECTOR, "label") if "Policy vs second model" in label.text],
        what="the 'Policy vs second model' pair mode",
    )
    two_models[0].click()
    left = driver.find_element(By.CSS_SELECTOR, "#response-left textarea")
    note = driver.find_element(By.ID, "pair-note")
    first_pair = left.get_attribute("value")  # the pair sampled when the page opened, before the model was trained
    driver.find_element(By.ID, "new-pair").click()
    # answers stream in while they are sampled; the pair can be voted on once sampling is over
    wait_for(lambda: left.get_attribute("value") not in ("", first_pair) and "Sampling" not in note.text, timeout=60,
             what="the whole new pair")
    before = len(store.read())
    driver.find_element(By.ID, "vote-left").click()
    votes = wait_for(lambda: store.read() if len(store.read()) == before + 1 else None, what="the stored vote")
    assert {votes[-1].source_a, votes[-1].source_b} == {"tiny", name}
