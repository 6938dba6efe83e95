"""Screenshots of every tab of the app, taken from the running app in headless Chromium (the images of docs/app.md).

    python scripts/screenshot_app.py                       # SmolLM2-135M-Instruct + the demo reward model, offline
    python scripts/screenshot_app.py --tiny --output_dir shots/   # the tiny random test model as policy: fast, nonsense
    python scripts/screenshot_app.py --tabs data,signin           # only some of the pictures

The script starts the app in this process on a free port (the models of ``python app.py`` unless ``--tiny``; the
Train tab on; the name field for "who is voting"), opens it in headless Chromium (Debian's ``chromium`` and
``chromium-driver``, PyPI ``selenium``; no browser is downloaded) and saves one full-page PNG per tab:

- ``app-bon.png``: Best-of-N after one generation of ``--bon_prompt``.
- ``app-label.png``: Compare & label just after the last vote (the sources revealed, the next pair coming).
- ``app-data.png``: Data, with the leaderboard (raw and style-controlled) and the trust section opened.
- ``app-train.png``: Train, after a short DPO run on the votes (``--train_steps`` steps) finished; when it has not
  finished within ``--train_timeout`` seconds, the tab as it is then (the run still going), and the script says so.
  ``--train_timeout 0`` shows the idle tab without starting a run.
- ``app-signin.png``: the page as a signed-out visitor of a Space with Hugging Face sign-in sees it (a second app,
  started after the others are shot, with ``login="huggingface"``, a random secret annotator salt of the length a
  Space requires, the first ``--annotators`` name as the admin list, the Train tab off as on a Space, and an empty
  vote folder of its own): the *Sign in with Hugging Face* button and the line under it, and Compare & label with
  its first pair after a vote was clicked, which the app refuses ("Sign in with Hugging Face ... to vote") and does
  not store (the script checks the vote folder stayed empty). Nobody signs in and no network is used: off a Space
  Gradio would look up this machine's Hub account online to mock the sign-in, so the script gives it a placeholder
  account instead, which is never used because the button is never clicked.

The votes are really cast through the page, by clicking: ``--votes`` votes on the app's default pairs (the policy's
best of N against one sample of it, on prompts drawn from the prompt list), under the names of ``--annotators`` in
turn (the first name casts the first share of the votes, and so on), with a share of re-shown pairs
(``--relabel_fraction``) so that agreement can be measured. The script is a mechanical annotator: it prefers the longer answer (a tie when equally long) and waits
``--seconds_per_vote`` after each pair has finished before voting. The leaderboard therefore ranks "best of N" by
answer length, not quality, and the style-controlled columns show that length effect. The votes go to
``--data_dir`` (a new temporary folder unless given; votes already there are kept and shown too).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import socket
import sys
import tempfile
import time
import warnings
from pathlib import Path

TABS = ("bon", "label", "data", "train", "signin")
NAME_FIELD_TABS = ("bon", "label", "data", "train")  # shot from the app with the name field (login="name")
SIGN_IN_BUTTON = "Sign in with Hugging Face"  # gr.LoginButton's text before anyone signs in
PLACEHOLDER_ACCOUNT = {  # what Gradio's mocked sign-in would put in the session if the button were clicked (it is not)
    "access_token": "placeholder", "token_type": "bearer", "expires_in": 3600, "id_token": "placeholder",
    "scope": "openid profile", "expires_at": 0,
    "userinfo": {"sub": "0", "name": "Nobody", "preferred_username": "nobody", "profile": "", "picture": ""},
}
FILE_NAMES = {tab: f"app-{tab}.png" for tab in TABS}
CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
]


def positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def non_negative_float(text: str) -> float:
    value = float(text)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be 0 or more, got {value}")
    return value


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--output_dir", default="docs/img", help="Folder for the PNGs (created if missing).")
    parser.add_argument("--data_dir", default=None, help="Vote folder of the app (default: a new temporary folder).")
    parser.add_argument("--tiny", action="store_true", help="Use the tiny random test model as the policy "
                        "(nonsense text, fast); the reward model stays the default.")
    parser.add_argument("--tabs", default=",".join(TABS), help=f"Comma-separated tabs to shoot, of {', '.join(TABS)}.")
    parser.add_argument("--votes", type=positive_int, default=8, help="Votes to cast through the page.")
    parser.add_argument("--annotators", default="alice,bob", help="Comma-separated names typed into the name field.")
    parser.add_argument("--relabel_fraction", type=float, default=0.5, help="Share of pairs re-shown to another name.")
    parser.add_argument("--n", type=positive_int, default=2, help="N of Best-of-N and of the best-vs-sample pairs.")
    parser.add_argument("--max_new_tokens", type=positive_int, default=32, help="Longest answer, in tokens.")
    parser.add_argument("--bon_prompt", default="Give me three tips for learning to cook.", help="Best-of-N prompt.")
    parser.add_argument("--train_steps", type=positive_int, default=2, help="Steps of the Train tab's DPO run.")
    parser.add_argument("--train_eval_prompts", type=int, default=1, help="Held-out prompts the trained model is "
                        "evaluated on (0: none).")
    parser.add_argument("--train_timeout", type=non_negative_float, default=900.0,
                        help="Seconds to wait for the training run; 0: do not start one, shoot the idle tab.")
    parser.add_argument("--load_timeout", type=non_negative_float, default=1800.0, help="Seconds to wait for the models.")
    parser.add_argument("--generation_timeout", type=non_negative_float, default=600.0,
                        help="Seconds to wait for one generation (a Best-of-N batch, a pair).")
    parser.add_argument("--seconds_per_vote", type=non_negative_float, default=3.5,
                        help="Pause before each vote (votes sooner than the app's fast-vote threshold are flagged).")
    parser.add_argument("--width", type=positive_int, default=1280, help="Page width in pixels (the PNG width).")
    parser.add_argument("--max_kb", type=positive_int, default=250, help="Reduce a PNG to a palette above this size.")
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The flags, checked: an unknown tab, an empty name list or a share outside [0, 1] is an error naming the flag."""
    parser = make_parser()
    args = parser.parse_args(argv)
    tabs = [tab.strip() for tab in args.tabs.split(",") if tab.strip()]
    unknown = [tab for tab in tabs if tab not in TABS]
    if not tabs or unknown:
        parser.error(f"--tabs {args.tabs!r}: unknown tab(s) {', '.join(unknown) or '(none given)'}; "
                     f"choose among {', '.join(TABS)}")
    args.tabs = tabs
    names = [name.strip() for name in args.annotators.split(",") if name.strip()]
    if not names:
        parser.error("--annotators: give at least one name, e.g. --annotators alice,bob")
    args.annotators = names
    if not 0.0 <= args.relabel_fraction <= 1.0:
        parser.error(f"--relabel_fraction {args.relabel_fraction}: must be between 0 and 1")
    if args.train_eval_prompts < 0:
        parser.error(f"--train_eval_prompts {args.train_eval_prompts}: must be 0 or more")
    return args


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(condition, timeout: float, what: str, poll: float = 0.5):
    deadline = time.time() + timeout
    while True:
        try:
            value = condition()
        except Exception:  # an element re-rendered between finding and reading it: look again
            value = None
        if value:
            return value
        if time.time() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(poll)


class Page:
    """The app in headless Chromium, with the few moves the screenshots need."""

    def __init__(self, url: str, width: int, profile_dir: str):
        import shutil

        from selenium import webdriver
        from selenium.webdriver.chrome.options import Options
        from selenium.webdriver.chrome.service import Service
        from selenium.webdriver.common.by import By

        chromium = shutil.which("chromium") or shutil.which("chromium-browser")
        chromedriver = shutil.which("chromedriver") or "/usr/bin/chromedriver"
        if chromium is None or not Path(chromedriver).exists():
            raise SystemExit("screenshot_app: headless Chromium is not installed "
                             "(apt-get install chromium chromium-driver)")
        options = Options()
        options.binary_location = chromium
        for flag in [*CHROMIUM_FLAGS, f"--window-size={width},1200", f"--user-data-dir={profile_dir}"]:
            options.add_argument(flag)
        self.by = By
        self.width = width
        self.driver = webdriver.Chrome(service=Service(executable_path=chromedriver), options=options)
        self.driver.get(url)

    def close(self):
        self.driver.quit()

    def find(self, css: str):
        return self.driver.find_element(self.by.CSS_SELECTOR, css)

    def text(self, css: str) -> str:
        found = self.driver.find_elements(self.by.CSS_SELECTOR, css)
        return found[0].text if found else ""

    def click_tab(self, label: str):
        tab = wait_for(
            lambda: [b for b in self.driver.find_elements(self.by.CSS_SELECTOR, "button[role='tab']") if label in b.text],
            30, f"the {label!r} tab",
        )[0]
        tab.click()
        time.sleep(1.0)

    def shoot(self, path: Path, max_kb: int) -> int:
        """Save the whole page, ``width`` pixels wide, as a PNG; return its size in bytes."""
        self.driver.execute_script("window.scrollTo(0, 0)")
        time.sleep(0.5)
        height = self.driver.execute_script(
            "return Math.max(document.body.scrollHeight, document.documentElement.scrollHeight,"
            " ...Array.from(document.querySelectorAll('.gradio-container')).map(e => e.scrollHeight))"
        )
        self.driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                                    {"width": self.width, "height": int(height), "deviceScaleFactor": 1, "mobile": False})
        time.sleep(1.0)
        png = self.driver.get_screenshot_as_png()
        self.driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})
        return save_png(png, path, max_kb)


def save_png(png: bytes, path: Path, max_kb: int) -> int:
    """Write the screenshot; above ``max_kb`` it is reduced to a 256-colour palette (UI pictures lose nothing visible)."""
    from PIL import Image

    image = Image.open(io.BytesIO(png)).convert("RGB")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", optimize=True)
    if buffer.tell() > max_kb * 1024:
        buffer = io.BytesIO()
        image.quantize(colors=256, method=Image.Quantize.MEDIANCUT).save(buffer, format="PNG", optimize=True)
    path.write_bytes(buffer.getvalue())
    return buffer.tell()


def app_overrides(args: argparse.Namespace, data_dir: str, tiny_policy: str | None) -> dict:
    """The settings of the app the name-field tabs are shot from (on top of the environment's)."""
    overrides = dict(
        n=args.n, max_new_tokens=args.max_new_tokens, data_dir=data_dir, relabel_fraction=args.relabel_fraction,
        train_tab="on", train_max_steps=args.train_steps, train_eval_prompts=args.train_eval_prompts, login="name",
        generations_per_minute=600, votes_per_minute=600, host="127.0.0.1",
    )
    if tiny_policy is not None:
        overrides["policy"] = tiny_policy  # the reward stays the default (the demo reward model)
    return overrides


def sign_in_overrides(args: argparse.Namespace, data_dir: str, tiny_policy: str | None) -> dict:
    """The settings of the sign-in picture's app: what a Space with ``hf_oauth: true`` runs, signed out.

    Hugging Face sign-in, a secret annotator salt as long as a Space requires (random: no vote is stored under it),
    an admin list (the first ``--annotators`` name) and the Train tab off, as on a Space unless it is turned on."""
    import secrets

    from prefkit.app.auth import MIN_SECRET_SALT_CHARS

    overrides = app_overrides(args, data_dir, tiny_policy)
    overrides.update(
        login="huggingface", annotator_salt=secrets.token_hex(MIN_SECRET_SALT_CHARS), admins=args.annotators[0],
        train_tab="off",
    )
    return overrides


@contextlib.contextmanager
def offline_sign_in():
    """Off a Space, Gradio mocks the sign-in with this machine's Hub account, looked up online when the app starts;
    give it a placeholder account instead (used only if someone clicked the button, which the script never does)."""
    import gradio.oauth

    original = gradio.oauth._get_mocked_oauth_info
    gradio.oauth._get_mocked_oauth_info = lambda: dict(PLACEHOLDER_ACCOUNT)
    try:
        with warnings.catch_warnings():  # "... mocked with your profile": not here, with the placeholder
            warnings.filterwarnings("ignore", message="Gradio does not support OAuth features outside of a Space")
            yield
    finally:
        gradio.oauth._get_mocked_oauth_info = original


def start_app(overrides: dict):
    from prefkit.app import AppSettings, launch

    settings = AppSettings.from_env(**overrides, port=free_port())
    demo = launch(settings, prevent_thread_lock=True, quiet=True)
    return demo, f"http://127.0.0.1:{settings.port}/"


def wait_until_ready(page: Page, args: argparse.Namespace, log) -> None:
    status = wait_for(lambda: (lambda text: text.startswith(("Ready", "Loading failed")) and text)(
        page.text("#prefkit-status")), args.load_timeout, "the models", poll=2.0)
    if not status.startswith("Ready"):
        raise SystemExit(f"screenshot_app: the app could not load its models: {status}")
    log(page.text("#prefkit-status"))


def pair_done(page: Page, previous: str | None = None) -> bool:
    left = page.find("#response-left textarea").get_attribute("value")
    right = page.find("#response-right textarea").get_attribute("value")
    note = page.text("#pair-note")
    return bool(left and right and left != previous and "Sampling" not in note and "Generating" not in note)


def cast_votes(page: Page, args: argparse.Namespace, log) -> None:
    page.click_tab("Compare")
    name_box = wait_for(lambda: page.find("#annotator input, #annotator textarea"), 30, "the name field")
    previous = None
    per_name = -(-args.votes // len(args.annotators))
    for index in range(args.votes):
        # Names take turns in blocks, not vote by vote: the pair after a vote is drawn for the name in the field at
        # that moment, and a re-shown pair must go to someone other than its first voter to measure agreement.
        name = args.annotators[(index // per_name) % len(args.annotators)]
        if name_box.get_attribute("value") != name:
            name_box.clear()
            name_box.send_keys(name)
        wait_for(lambda: pair_done(page, previous), args.generation_timeout, f"pair {index + 1}")
        left = page.find("#response-left textarea").get_attribute("value")
        right = page.find("#response-right textarea").get_attribute("value")
        previous = left
        time.sleep(args.seconds_per_vote)
        button = "vote-left" if len(left) > len(right) else "vote-right" if len(right) > len(left) else "vote-tie"
        page.find(f"#{button}").click()
        wait_for(lambda: "saved" in page.text("#vote-reveal"), 60, f"vote {index + 1} to be saved")
        log(f"vote {index + 1}/{args.votes} by {name}: {button}")
        if index < args.votes - 1:
            # the next pair replaces the reveal's pair: wait until the reveal is gone or a new pair is in
            wait_for(lambda: page.find("#response-left textarea").get_attribute("value") != left, args.generation_timeout,
                     "the next pair to start")


def open_trust(page: Page) -> None:
    wait_for(lambda: page.text("#leaderboard-note"), 120, "the leaderboard")
    label = wait_for(
        lambda: [e for e in page.driver.find_elements(page.by.XPATH, "//*[contains(@class, 'label-wrap')]")
                 if "Trust" in e.text and e.is_displayed()],
        30, "the trust section",
    )[0]
    label.click()
    wait_for(lambda: page.text("#trust-summary"), 120, "the trust tables")
    time.sleep(2.0)


def run_training(page: Page, args: argparse.Namespace, log) -> str:
    """Start a run and wait for it; return what the picture shows ("finished", "running" or "idle")."""
    page.click_tab("Train")
    if args.train_timeout == 0:
        return "idle"
    wait_for(lambda: [b for b in page.driver.find_elements(page.by.ID, "train-start") if b.is_displayed()], 30,
             "the Start button")[0].click()
    try:
        wait_for(lambda: "Finished" in page.text("#train-status"), args.train_timeout, "the run", poll=2.0)
        time.sleep(3.0)  # the loss plot and the evaluation table render after the status
        return "finished"
    except TimeoutError:
        log(f"the training run had not finished after {args.train_timeout:.0f} s: shooting it while it runs")
        return "running"


def shoot_name_field_tabs(args: argparse.Namespace, output_dir: Path, scratch: Path, tiny_policy: str | None,
                          log) -> dict[str, int]:
    """Best-of-N, Compare & label, Data and Train (those of ``args.tabs``) from the app with the name field."""
    data_dir = args.data_dir or str(scratch / "votes")
    demo, url = start_app(app_overrides(args, data_dir, tiny_policy))
    log(f"app at {url}, votes in {data_dir}")
    page = Page(url, args.width, str(scratch / "chromium-profile"))
    try:
        wait_until_ready(page, args, log)
        saved = {}
        if "bon" in args.tabs:
            page.click_tab("Best-of-N")
            page.find("#bon-prompt textarea").send_keys(args.bon_prompt)
            page.find("#bon-run").click()
            wait_for(lambda: page.driver.find_elements(page.by.CSS_SELECTOR, "#bon-table tr.prefkit-best"),
                     args.generation_timeout, "the ranked candidates")
            time.sleep(2.0)
            saved["bon"] = page.shoot(output_dir / FILE_NAMES["bon"], args.max_kb)
        if {"label", "data", "train"} & set(args.tabs):
            cast_votes(page, args, log)
            if "label" in args.tabs:
                saved["label"] = page.shoot(output_dir / FILE_NAMES["label"], args.max_kb)
        if "data" in args.tabs:
            page.click_tab("Data")
            open_trust(page)
            saved["data"] = page.shoot(output_dir / FILE_NAMES["data"], args.max_kb)
        if "train" in args.tabs:
            state = run_training(page, args, log)
            saved["train"] = page.shoot(output_dir / FILE_NAMES["train"], args.max_kb)
            log(f"Train tab shot with the run {state}: {page.text('#train-status')[:300]!r}")
        return saved
    finally:
        page.close()
        runner = getattr(demo, "prefkit_train", None)
        if runner is not None and hasattr(runner, "cancel"):
            try:
                runner.cancel()
            except Exception:
                pass
        demo.close()


def shoot_sign_in(args: argparse.Namespace, output_dir: Path, scratch: Path, tiny_policy: str | None, log) -> int:
    """The signed-out page of an app with Hugging Face sign-in: the button, and a refused vote on the first pair."""
    data_dir = str(scratch / "sign-in-votes")  # its own, empty: the picture's refused vote must store nothing
    with offline_sign_in():
        demo, url = start_app(sign_in_overrides(args, data_dir, tiny_policy))
    log(f"app with Hugging Face sign-in at {url}, votes in {data_dir}")
    page = Page(url, args.width, str(scratch / "chromium-profile-sign-in"))
    try:
        wait_until_ready(page, args, log)
        wait_for(lambda: [b for b in page.driver.find_elements(page.by.TAG_NAME, "button")
                          if SIGN_IN_BUTTON in b.text and b.is_displayed()], 30, "the sign-in button")
        wait_for(lambda: "Sign in with Hugging Face to vote" in page.text("#prefkit-who"), 30, "the signed-out line")
        page.click_tab("Compare")
        wait_for(lambda: pair_done(page), args.generation_timeout, "the first pair")
        left = page.find("#response-left textarea").get_attribute("value")
        right = page.find("#response-right textarea").get_attribute("value")
        page.find("#vote-left" if len(left) >= len(right) else "#vote-right").click()
        refusal = wait_for(lambda: (lambda text: "to vote" in text and text)(page.text("#vote-reveal")), 60,
                           "the signed-out vote to be refused")
        log(f"signed out, a vote is answered: {refusal!r}")
        stored = demo.prefkit_store.read(include_hidden=True)
        if stored:
            raise SystemExit(f"screenshot_app: a signed-out vote was stored ({len(stored)} votes in {data_dir})")
        time.sleep(1.0)
        return page.shoot(output_dir / FILE_NAMES["signin"], args.max_kb)
    finally:
        page.close()
        demo.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)

    def log(message: str) -> None:
        print(f"screenshot_app: {message}", flush=True)

    with tempfile.TemporaryDirectory(prefix="prefkit-screenshots-") as scratch:
        scratch = Path(scratch)
        tiny_policy = None
        if args.tiny:
            from prefkit.testing import build_tiny_model

            tiny_policy = str(build_tiny_model(scratch / "tiny-model"))
        saved = {}
        if set(NAME_FIELD_TABS) & set(args.tabs):
            saved.update(shoot_name_field_tabs(args, output_dir, scratch, tiny_policy, log))
        if "signin" in args.tabs:
            saved["signin"] = shoot_sign_in(args, output_dir, scratch, tiny_policy, log)
        for tab, size in saved.items():
            log(f"wrote {output_dir / FILE_NAMES[tab]} ({size / 1024:.0f} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
