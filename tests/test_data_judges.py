"""Judges: LLM-as-a-judge (both orders, position-bias cancellation, verdict parsing, HTTP endpoint), BLEU / ROUGE
against the libraries computed directly, reward-model judge, and agreement (raw, Cohen's kappa)."""

from __future__ import annotations

import json
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import torch

from prefkit.data.judges import (
    JUDGE_TEMPLATE,
    BleuJudge,
    Judgement,
    JudgeBackendError,
    LLMJudge,
    RewardModelJudge,
    RougeJudge,
    agreement,
    parse_verdict,
)

PROMPTS = [
    "Suggest a new activity I could do with my teddy bear.",
    "How do I make tea?",
    "What is the capital of France?",
]
KIND = [
    "Have a picnic with it in the garden, how kind!",
    "Boil water and steep the tea, kind regards.",
    "Paris, kindly.",
]
RUDE = ["Do not bother.", "Figure it out yourself.", "Look it up."]


# ---- a judge model that always answers "A" ----------------------------------------------------------------------------


@pytest.fixture
def always_a_model(tiny_model_dir, tiny_tokenizer):
    """The tiny Llama with its logits overwritten: "A" as the first answer token, then end of turn, whatever it is asked.
    A judge with complete position bias."""
    from transformers import LlamaForCausalLM

    a_id = tiny_tokenizer.convert_tokens_to_ids("A")
    eos_id = tiny_tokenizer.eos_token_id

    class AlwaysFirst(LlamaForCausalLM):
        def forward(self, input_ids=None, **kwargs):
            out = super().forward(input_ids=input_ids, **kwargs)
            logits = torch.full_like(out.logits, -1e4)
            next_token = torch.where(input_ids[:, -1] == a_id, eos_id, a_id)
            logits[torch.arange(len(next_token)), -1, next_token] = 0.0
            out.logits = logits
            return out

    return AlwaysFirst.from_pretrained(tiny_model_dir)


def test_a_judge_that_always_prefers_the_first_answer_gives_ties(always_a_model, tiny_tokenizer):
    judge = LLMJudge(always_a_model, tiny_tokenizer)
    judgements = judge.judge(PROMPTS, list(zip(KIND, RUDE)))
    assert [j.label for j in judgements] == ["tie", "tie", "tie"]
    assert [j.raw for j in judgements] == [("A", "A")] * 3
    assert [j.prob_a for j in judgements] == pytest.approx([0.5] * 3)
    assert judge.stats["disagreements"] == 3 and judge.stats["unparseable"] == 0


def test_asked_in_one_order_the_same_judge_gives_false_preferences(always_a_model, tiny_tokenizer):
    judge = LLMJudge(always_a_model, tiny_tokenizer, both_orders=False)
    judgements = judge.judge(PROMPTS, list(zip(RUDE, KIND)))  # the better answer is B every time
    assert [j.label for j in judgements] == ["A", "A", "A"]


def test_verdict_probability_is_read_from_the_letter_logits(always_a_model, tiny_tokenizer):
    judge = LLMJudge(always_a_model, tiny_tokenizer, both_orders=False)
    (judgement,) = judge.judge(PROMPTS[:1], [(KIND[0], RUDE[0])])
    assert judgement.prob_a == pytest.approx(1.0) and judgement.confidence == pytest.approx(1.0)


def kind_backend(conversations):
    """A scripted judge that reads the responses and prefers the one that says "kind", wherever it is."""
    answers = []
    for messages in conversations:
        text = messages[-1]["content"]
        a = text.split("[Response A]")[1].split("[Response B]")[0]
        answers.append("A" if "kind" in a else "Response B is better.")
    return answers


def test_a_consistent_judge_keeps_its_preference_in_both_orders():
    judge = LLMJudge(backend=kind_backend)
    pairs = [(KIND[0], RUDE[0]), (RUDE[1], KIND[1])]
    assert [j.label for j in judge.judge(PROMPTS[:2], pairs)] == ["A", "B"]
    assert judge.stats == {"asks": 4}


def test_an_unparseable_answer_gives_no_label_and_is_counted():
    replies = iter(["A", "I cannot decide, both have merits and flaws"])
    judge = LLMJudge(backend=lambda conversations: [next(replies) for _ in conversations])
    (judgement,) = judge.judge(PROMPTS[:1], [(KIND[0], RUDE[0])])
    assert judgement.label is None and judgement.confidence == 0.0
    assert judge.stats["unparseable"] == 1


def test_the_judging_prompt_holds_the_request_and_both_responses_in_order():
    judge = LLMJudge(backend=kind_backend)
    messages = judge.conversation("How do I make tea?", "Boil water.", "No.")
    assert messages[0]["role"] == "system"
    assert messages[1] == {
        "role": "user",
        "content": JUDGE_TEMPLATE.format(prompt="How do I make tea?", response_a="Boil water.", response_b="No."),
    }
    assert messages[1]["content"].index("Boil water.") < messages[1]["content"].index("No.")


def test_the_tiny_model_judge_counts_every_unparseable_answer(tiny_model, tiny_tokenizer):
    judge = LLMJudge(tiny_model, tiny_tokenizer, max_new_tokens=6)
    judgements = judge.judge(PROMPTS, list(zip(KIND, RUDE)))
    raw = [answer for j in judgements for answer in j.raw]
    assert len(judgements) == 3 and len(raw) == 6 and judge.stats["asks"] == 6
    assert judge.stats["unparseable"] == sum(parse_verdict(answer) is None for answer in raw)
    assert all(j.label is None for j in judgements if any(parse_verdict(a) is None for a in j.raw))


def test_llm_judge_needs_exactly_one_model_source():
    with pytest.raises(ValueError, match="exactly one"):
        LLMJudge()
    with pytest.raises(ValueError, match="exactly one"):
        LLMJudge(base_url="http://localhost:1", backend=kind_backend)


@pytest.mark.parametrize(
    "reply, verdict",
    [
        ("A", "A"),
        ("b.", "B"),
        ("(A)", "A"),
        ("**B**", "B"),
        ("[[A]]", "A"),
        ("Verdict: B", "B"),
        ("**Verdict:** A", "A"),
        ("Response B is clearly better than Response A.", "B"),
        ("I prefer B", "B"),
        ("The better response is B.", "B"),
        ("A. It is kinder.", "A"),
        ("Both are equally good.", "tie"),
        ("tie", "tie"),
        ("A good answer would be kinder.", None),
        ("A or B", None),
        ("", None),
        ("Response A is better. Response B is better.", None),
        ("A is better. B is better.", None),
        ("A is indeed better.", "A"),
        ("I think a lot about tea.", None),
    ],
)
def test_parse_verdict(reply, verdict):
    assert parse_verdict(reply) == verdict


# ---- OpenAI-compatible endpoint ---------------------------------------------------------------------------------------


class FakeEndpoint:
    """A local /v1/chat/completions server: answers with ``reply(messages)``, records requests, can fail first."""

    def __init__(self, reply, fail_first: list[int] | None = None, logprobs=None):
        self.requests, self.reply, self.failures, self.logprobs = [], reply, list(fail_first or []), logprobs
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
                if endpoint.failures:
                    code = endpoint.failures.pop(0)
                    self.send_response(code)
                    self.end_headers()
                    self.wfile.write(b'{"error": "try later"}')
                    return
                choice = {"message": {"role": "assistant", "content": endpoint.reply(body["messages"])}}
                if endpoint.logprobs is not None:
                    choice["logprobs"] = endpoint.logprobs
                payload = json.dumps({"choices": [choice]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.server.shutdown()
        self.server.server_close()


def test_http_judge_posts_chat_completions_with_the_key_and_the_judging_prompt():
    with FakeEndpoint(lambda messages: "A") as endpoint:
        judge = LLMJudge(base_url=endpoint.base_url, api_model="judge-7b", api_key="sk-secret")
        judge.judge(PROMPTS[:1], [(KIND[0], RUDE[0])])
    assert [(r["path"], r["auth"]) for r in endpoint.requests] == [("/v1/chat/completions", "Bearer sk-secret")] * 2
    assert {(r["body"]["model"], r["body"]["temperature"]) for r in endpoint.requests} == {("judge-7b", 0)}
    asked = sorted(json.dumps(r["body"]["messages"]) for r in endpoint.requests)  # concurrent: any arrival order
    both_orders = [judge.conversation(PROMPTS[0], KIND[0], RUDE[0]), judge.conversation(PROMPTS[0], RUDE[0], KIND[0])]
    assert asked == sorted(json.dumps(m) for m in both_orders)


def test_http_judge_that_always_answers_a_gives_ties():
    with FakeEndpoint(lambda messages: "A") as endpoint:
        judge = LLMJudge(base_url=endpoint.base_url, api_model="judge")
        labels = [j.label for j in judge.judge(PROMPTS, list(zip(KIND, RUDE)))]
    assert labels == ["tie", "tie", "tie"] and len(endpoint.requests) == 6


def test_http_judge_reads_the_verdict_probability_from_logprobs():
    logprobs = {
        "content": [
            {
                "token": "A",
                "logprob": math.log(0.8),
                "top_logprobs": [{"token": "A", "logprob": math.log(0.8)}, {"token": "B", "logprob": math.log(0.2)}],
            }
        ]
    }
    with FakeEndpoint(lambda messages: "A", logprobs=logprobs) as endpoint:
        judge = LLMJudge(base_url=endpoint.base_url, api_model="judge", logprobs=True, both_orders=False)
        (judgement,) = judge.judge(PROMPTS[:1], [(KIND[0], RUDE[0])])
    assert endpoint.requests[0]["body"]["logprobs"] is True
    assert judgement.prob_a == pytest.approx(0.8)


def test_http_judge_retries_server_errors():
    with FakeEndpoint(lambda messages: "B", fail_first=[503, 429]) as endpoint:
        judge = LLMJudge(base_url=endpoint.base_url, api_model="judge", both_orders=False, concurrency=1)
        judge.backend.backoff = 0.01
        assert [j.label for j in judge.judge(PROMPTS[:1], [(KIND[0], RUDE[0])])] == ["B"]
    assert len(endpoint.requests) == 3


def test_http_judge_reports_a_client_error_without_the_key():
    with FakeEndpoint(lambda messages: "A", fail_first=[401]) as endpoint:
        judge = LLMJudge(base_url=endpoint.base_url, api_model="judge", api_key="sk-secret", both_orders=False)
        with pytest.raises(JudgeBackendError, match="HTTP 401") as error:
            judge.judge(PROMPTS[:1], [(KIND[0], RUDE[0])])
    assert "sk-secret" not in str(error.value) and "sk-secret" not in repr(judge.backend)


# ---- BLEU / ROUGE -----------------------------------------------------------------------------------------------------

REFERENCE = "Boil fresh water, pour it over the tea bag and let it steep for three minutes."
CLOSE = "Boil fresh water, pour it over the tea and let it steep for three minutes."
FAR = "Tea is a drink that many people like in the morning."


def test_bleu_judge_scores_are_sacrebleu_sentence_bleu():
    import sacrebleu

    (judgement,) = BleuJudge().judge(["How do I make tea?"], [(FAR, CLOSE)], references=[REFERENCE])
    expected = (sacrebleu.sentence_bleu(FAR, [REFERENCE]).score, sacrebleu.sentence_bleu(CLOSE, [REFERENCE]).score)
    assert judgement.scores == pytest.approx(expected)
    assert judgement.label == "B" and judgement.confidence == pytest.approx(expected[1] / sum(expected))


def test_rouge_judge_scores_are_rouge_score_f_measures():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    (judgement,) = RougeJudge().judge(["How do I make tea?"], [(CLOSE, FAR)], references=[REFERENCE])
    expected = (scorer.score(REFERENCE, CLOSE)["rougeL"].fmeasure, scorer.score(REFERENCE, FAR)["rougeL"].fmeasure)
    assert judgement.scores == pytest.approx(expected) and judgement.label == "A"


def test_rouge_judge_takes_the_best_of_several_references():
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rouge1"], use_stemmer=True)
    references = [FAR, REFERENCE]
    (judgement,) = RougeJudge(rouge_type="rouge1").judge(["q"], [(CLOSE, FAR)], references=[references])
    assert judgement.scores[0] == pytest.approx(max(scorer.score(r, CLOSE)["rouge1"].fmeasure for r in references))


def test_reference_judges_take_references_by_prompt_from_the_constructor():
    judge = BleuJudge(references={"How do I make tea?": REFERENCE})
    assert judge.judge(["How do I make tea?"], [(FAR, CLOSE)])[0].label == "B"


def test_reference_judges_without_references_say_how_to_give_them():
    with pytest.raises(ValueError, match="needs a reference answer per prompt"):
        BleuJudge().judge(["q"], [(CLOSE, FAR)])


def test_identical_responses_are_a_tie_with_full_confidence():
    (judgement,) = BleuJudge().judge(["q"], [(CLOSE, CLOSE)], references=[REFERENCE])
    assert (judgement.label, judgement.confidence) == ("tie", 1.0)


# ---- reward model -----------------------------------------------------------------------------------------------------


def length_reward(prompts, responses):
    return [float(len(r)) for r in responses]


def test_reward_judge_prefers_the_higher_reward_with_bradley_terry_confidence():
    judgements = RewardModelJudge(length_reward).judge(
        ["q", "q"], [("long answer", "short"), ("tiny", "much longer one")]
    )
    assert [j.label for j in judgements] == ["A", "B"]
    assert judgements[0].confidence == pytest.approx(1 / (1 + math.exp(-(11 - 5))))
    assert judgements[1].scores == (4.0, 15.0)


def test_reward_judge_accepts_an_object_with_score_and_batches_calls():
    class Scorer:
        calls = []

        def score(self, prompts, responses):
            self.calls.append(len(responses))
            return torch.tensor([1.0 if "kind" in r else -1.0 for r in responses])

    scorer = Scorer()
    judgements = RewardModelJudge(scorer, batch_size=2).judge(PROMPTS, list(zip(RUDE, KIND)))
    assert [j.label for j in judgements] == ["B", "B", "B"] and scorer.calls == [2, 2, 2]


def test_reward_judge_rejects_a_non_callable():
    with pytest.raises(TypeError, match="callable"):
        RewardModelJudge(42)


# ---- agreement --------------------------------------------------------------------------------------------------------


def test_agreement_and_kappa_on_a_worked_example():
    # 10 items. Judge 1: A A A A A A B B B tie; judge 2: A A A A B B B B tie tie.
    # Observed 7/10. Expected: A 6/10*4/10 + B 3/10*4/10 + tie 1/10*2/10 = 0.24 + 0.12 + 0.02 = 0.38.
    # kappa = (0.7 - 0.38) / (1 - 0.38) = 0.32 / 0.62.
    first = ["A"] * 6 + ["B"] * 3 + ["tie"]
    second = ["A"] * 4 + ["B"] * 4 + ["tie"] * 2
    result = agreement(first, second)
    assert (result.n, result.raw) == (10, pytest.approx(0.7))
    assert result.kappa == pytest.approx(0.32 / 0.62)
    assert result.confusion[("A", "B")] == 2


def test_agreement_skips_unlabeled_items_and_accepts_judgements():
    first = [Judgement("A", 1.0, 1.0), Judgement(None, 0.5, 0.0), Judgement("B", 0.0, 1.0)]
    result = agreement(first, ["A", "A", "A"])
    assert (result.n, result.skipped, result.raw) == (2, 1, 0.5)


def test_agreement_collapses_graded_labels_with_a_scale():
    from prefkit.data import DEFAULT_SCALE

    result = agreement(["A much better", "B slightly better", "tie"], ["A", "B", "tie"], scale=DEFAULT_SCALE)
    assert (result.raw, result.kappa) == (1.0, 1.0)


def test_kappa_is_undefined_when_both_always_say_the_same_label():
    assert math.isnan(agreement(["A", "A"], ["A", "A"]).kappa)
