"""``sampling.sample_text`` against Hugging Face generate's own logits processors (transformers'
RepetitionPenaltyLogitsProcessor, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
in generate's order): the same processed logits give the same multinomial draw from the same
generator, and the greedy pick is the argmax after the repetition penalty."""

from __future__ import annotations

import pytest
import torch

from vilau_rt.sampling import sample_text

lp = pytest.importorskip("transformers.generation.logits_process")


def hf_processed(logits, previous, temperature, top_k, top_p, penalty):
    scores = logits.clone()
    if penalty != 1.0:
        scores = lp.RepetitionPenaltyLogitsProcessor(penalty)(previous, scores)
    if temperature != 1.0:
        scores = lp.TemperatureLogitsWarper(temperature)(previous, scores)
    if top_k is not None:
        scores = lp.TopKLogitsWarper(top_k)(previous, scores)
    if top_p is not None:
        scores = lp.TopPLogitsWarper(top_p)(previous, scores)
    return scores


CASES = [  # temperature, top_k, top_p, repetition_penalty
    (1.0, None, None, 1.0),
    (0.7, 50, None, 1.0),
    (1.3, None, 0.9, 1.2),
    (0.9, 40, 0.8, 1.5),
    (1.0, 5, 0.5, 0.8),  # a penalty below 1 favours the seen tokens
]


@pytest.mark.parametrize("case", CASES)
def test_sampled_tokens_are_hugging_face_generate_draws(case):
    temperature, top_k, top_p, penalty = case
    g = torch.Generator().manual_seed(7)
    for trial in range(20):
        logits = torch.randn(1, 300, generator=g) * 3
        previous = torch.randint(0, 300, (1, 1 + trial), generator=g)  # repeats included
        ours = sample_text(
            logits, do_sample=True, temperature=temperature, top_k=top_k, top_p=top_p,
            repetition_penalty=penalty, previous=previous,
            generator=torch.Generator().manual_seed(trial),
        )  # fmt: skip
        scores = hf_processed(logits, previous, temperature, top_k, top_p, penalty)
        probs = torch.softmax(scores, dim=-1)
        theirs = torch.multinomial(probs, 1, generator=torch.Generator().manual_seed(trial))
        assert ours.tolist() == theirs.view(-1).tolist(), (case, trial)
        assert probs[0, ours[0]] > 0  # never a token the filters removed


@pytest.mark.parametrize("penalty", [1.0, 1.3, 0.7])
def test_greedy_token_is_the_argmax_after_the_repetition_penalty(penalty):
    g = torch.Generator().manual_seed(3)
    for trial in range(30):
        logits = torch.randn(2, 64, generator=g)
        previous = torch.randint(0, 64, (2, 6), generator=g)
        ours = sample_text(logits, do_sample=False, repetition_penalty=penalty, previous=previous)
        expect = hf_processed(logits, previous, 1.0, None, None, penalty).argmax(dim=-1)
        assert torch.equal(ours, expect)


def test_a_penalty_changes_the_greedy_pick_when_the_leader_was_seen():
    logits = torch.tensor([[2.0, 1.9, -1.0]])
    seen = torch.tensor([[0]])
    assert sample_text(logits, do_sample=False).item() == 0
    assert sample_text(logits, do_sample=False, repetition_penalty=1.2, previous=seen).item() == 1


class _StubBackend:
    """Logits that always rank token 5 just above token 6: greedy decoding repeats 5 unless the
    history reaches the sampler."""

    device = torch.device("cpu")

    def setup_cache(self, batch, length):
        pass

    def forward(self, embeds, rope_pos, cache_pos, key_valid=None):
        return torch.zeros(1, embeds.shape[1], 4)

    def logits(self, hidden):
        out = torch.zeros(hidden.shape[0], 10)
        out[:, 5], out[:, 6] = 2.0, 1.9
        return out

    def embed_tokens(self, ids):
        return torch.zeros(*ids.shape, 4)


# with 1.5: after 5, 2.0 / 1.5 < 1.9, so 6; once both are seen, 2.0 / 1.5 > 1.9 / 1.5 again
@pytest.mark.parametrize("penalty, expect", [(1.0, [5, 5, 5, 5]), (1.5, [5, 6, 5, 5])])
def test_generate_text_hands_the_history_to_the_repetition_penalty(penalty, expect):
    from vilau_rt.generate import TextSettings, generate_text

    settings = TextSettings(max_new_tokens=4, repetition_penalty=penalty)
    tokens = list(generate_text(_StubBackend(), torch.zeros(1, 3, 4), settings, eos_id=-1))
    assert tokens == expect
