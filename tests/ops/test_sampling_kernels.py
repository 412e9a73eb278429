"""vilau::sample_codes (CPU and CUDA twins) against vilau_rt.sampling.sample_codes semantics:
argmax equality for top_k=1, a chi-square test against the exact float64 distribution computed
here, reproducibility per (seed, counter), and CPU/CUDA agreement."""

from __future__ import annotations

import math

import pytest
import torch

from vilau_rt import _C
from vilau_rt.ops import native
from vilau_rt.sampling import sample_codes as reference_sample_codes

CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
DEVICES = ["cpu", pytest.param("cuda", marks=CUDA)]
DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def guided(logits: torch.Tensor, cfg_scale: float) -> torch.Tensor:
    """CFG exactly as depth.py writes it, in the logits' dtype."""
    n = logits.shape[0] // 2
    return logits[n:] + cfg_scale * (logits[:n] - logits[n:])


def exact_distribution(x: torch.Tensor, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """float64 probabilities of the RQ-Transformer sampler for scaled float32 logits x [V]."""
    x = x.double()
    if top_k is not None and top_k < x.numel():
        kth = torch.sort(x, descending=True).values[top_k - 1]
        x = x.masked_fill(x < kth, -math.inf)
    p = torch.softmax(x, dim=0)
    if top_p is not None and top_p < 1:
        sp, _ = torch.sort(p, descending=True)
        before = torch.cumsum(sp, 0) - sp  # mass strictly before each token
        crossing = sp[before < top_p][-1]  # the token that crosses top_p stays
        # a tie with the crossing value keeps the whole tie (documented in sampling.h; torch
        # keeps a sort-order-dependent part of it)
        p = torch.where(p >= crossing, p, torch.zeros_like(p))
    return p / p.sum()


def chi_square_critical(df: int, z: float = 4.75) -> float:
    """Wilson-Hilferty quantile of chi-square(df) at about p = 1e-6."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


# ---------------------------------------------------------------- the generator


def test_philox_matches_random123_known_answers():
    kat = [
        ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
        ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
        (
            (0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344),
            (0xA4093822, 0x299F31D0),
            (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1),
        ),
    ]
    for ctr, key, expected in kat:
        assert _C.philox4x32_10(*ctr, *key) == expected


# ---------------------------------------------------------------- greedy


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_cfg", [False, True])
def test_top_k_1_equals_reference_argmax(dtype, with_cfg, device):
    g = gen(1)
    n, vocab = 7, 1000
    logits = torch.randn(2 * n if with_cfg else n, vocab, generator=g).mul(3).to(dtype)
    logits[0, 10] = logits[0, 20] = 100  # a tie: the first index wins
    if with_cfg:
        logits[n, 10] = logits[n, 20] = 0  # keep the tie after the CFG mix
    expect_in = guided(logits, 2.5) if with_cfg else logits
    expected = reference_sample_codes(expect_in, top_k=1)
    codes = native.sample_codes(
        logits.to(device), cfg_scale=2.5 if with_cfg else None, top_k=1, seed=3
    )
    assert codes.dtype == torch.int64 and codes.shape == (n,)
    assert torch.equal(codes.cpu(), expected)
    assert int(expected[0]) == 10


@pytest.mark.parametrize("device", DEVICES)
def test_top_k_1_treats_nan_as_the_maximum_like_torch_argmax(device):
    logits = torch.randn(2, 50, generator=gen(2))
    logits[1, 33] = float("nan")
    codes = native.sample_codes(logits.to(device), top_k=1)
    assert codes.cpu().tolist() == [int(logits[0].argmax()), 33]


@pytest.mark.parametrize("device", DEVICES)
def test_tiny_top_p_keeps_only_the_argmax(device):
    logits = torch.randn(64, 300, generator=gen(4))
    codes = native.sample_codes(logits.to(device), top_k=900, top_p=1e-6, seed=11)
    assert torch.equal(codes.cpu(), logits.argmax(-1))


# ---------------------------------------------------------------- distribution

DIST_CASES = [  # (temperature, top_k, top_p, cfg_scale, dtype)
    (1.0, None, None, None, torch.float32),
    (1.0, 12, None, None, torch.float32),
    (0.7, None, 0.8, None, torch.float32),
    (1.0, 25, 0.9, 3.0, torch.float32),
    (1.3, 30, 0.96, 3.0, torch.bfloat16),
    (1.0, 900, 0.96, 3.0, torch.float16),  # top_k above V: off
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("case", range(len(DIST_CASES)))
def test_draws_follow_the_exact_float64_distribution(case, device):
    temperature, top_k, top_p, cfg_scale, dtype = DIST_CASES[case]
    vocab, draws = 40, 40000
    g = gen(100 + case)
    rows = 2 if cfg_scale is not None else 1
    base = torch.randn(rows, vocab, generator=g).mul(1.5).to(dtype)
    mixed = guided(base, cfg_scale) if cfg_scale is not None else base
    x = mixed.float() / temperature  # sample_codes' float32 scaling
    p = exact_distribution(x[0], top_k, top_p)
    # every row of one launch is an independent draw (the row is a Philox counter word)
    logits = base.repeat_interleave(draws, dim=0)
    codes = native.sample_codes(
        logits.to(device), cfg_scale=cfg_scale, temperature=temperature, top_k=top_k,
        top_p=top_p, seed=1234, counter=5,
    ).cpu()  # fmt: skip
    counts = torch.bincount(codes, minlength=vocab).double()
    assert counts.sum() == draws
    support = p > 0
    assert counts[~support].sum() == 0, "drew a token the sampler must exclude"
    expected = p[support] * draws
    chi2 = float(((counts[support] - expected) ** 2 / expected).sum())
    df = int(support.sum()) - 1
    if df > 0:
        assert chi2 < chi_square_critical(df), (chi2, df)


# ---------------------------------------------------------------- reproducibility


@pytest.mark.parametrize("device", DEVICES)
def test_same_seed_and_counter_give_the_same_codes(device):
    logits = torch.randn(6, 16384, generator=gen(5)).to(device)
    kw = {"cfg_scale": 3.0, "top_k": 900, "top_p": 0.96}
    a = native.sample_codes(logits, seed=7, counter=2, **kw)
    b = native.sample_codes(logits, seed=7, counter=2, **kw)
    assert torch.equal(a, b)
    draws = {
        tuple(native.sample_codes(logits, seed=s, counter=c, subsequence=q, **kw).tolist())
        for s, c, q in [(7, 2, 0), (8, 2, 0), (7, 3, 0), (7, 2, 1)]
    }
    assert len(draws) == 4, "seed, counter and subsequence must each change the draws"


@pytest.mark.parametrize("device", DEVICES)
def test_a_rows_draw_does_not_depend_on_the_batch_it_is_in(device):
    logits = torch.randn(12, 500, generator=gen(6)).to(device)
    kw = {"top_k": 50, "top_p": 0.9, "seed": 99, "counter": 1}
    full = native.sample_codes(logits, **kw)
    head = native.sample_codes(logits[:5], **kw)
    assert torch.equal(full[:5], head)


def test_cpu_draws_do_not_depend_on_the_thread_count():
    logits = torch.randn(9, 3000, generator=gen(7)).half()
    rng = native.rng_state(5, 6, "cpu")
    out = []
    for threads in (1, 2):
        codes = torch.empty(9, dtype=torch.int64)
        _C.sample_codes_cpu(
            logits.data_ptr(), codes.data_ptr(), 9, 3000, False, 0.0, 1.0, 100, 0.9,
            rng.data_ptr(), 0, 1, threads,
        )  # fmt: skip
        out.append(codes)
    assert torch.equal(out[0], out[1])


@CUDA
@pytest.mark.parametrize("dtype", DTYPES)
def test_cpu_and_cuda_twins_draw_the_same_codes(dtype):
    logits = torch.randn(2 * 64, 16384, generator=gen(8)).mul(2).to(dtype)
    kw = {
        "cfg_scale": 3.0,
        "top_k": 900,
        "top_p": 0.96,
        "seed": 2024,
        "counter": 17,
        "subsequence": 3,
    }
    cpu = native.sample_codes(logits, **kw)
    cuda = native.sample_codes(logits.cuda(), **kw).cpu()
    assert torch.equal(cpu, cuda)


@CUDA
def test_cuda_kernel_writes_every_code_of_a_poisoned_buffer():
    logits = torch.randn(33, 777, generator=gen(9)).cuda()
    codes = torch.full((33,), -5, dtype=torch.int64, device="cuda")
    rng = native.rng_state(1, 2, "cuda")
    ws = torch.empty(_C.sample_workspace_bytes(33, 777), dtype=torch.uint8, device="cuda")
    _C.sample_codes_cuda(
        logits.data_ptr(), codes.data_ptr(), ws.data_ptr(), 33, 777, False, 0.0, 1.0, 40, 0.9,
        rng.data_ptr(), 0, 0, torch.cuda.current_stream().cuda_stream,
    )  # fmt: skip
    torch.cuda.synchronize()
    assert ((codes >= 0) & (codes < 777)).all()
    assert torch.equal(
        codes.cpu(), native.sample_codes(logits.cpu(), top_k=40, top_p=0.9, seed=1, counter=2)
    )


# ---------------------------------------------------------------- boundary checks


def test_bad_inputs_name_the_culprit():
    x = torch.randn(4, 10)
    with pytest.raises(ValueError, match="temperature = 0.0"):
        native.sample_codes(x, temperature=0.0)
    with pytest.raises(ValueError, match="odd 3"):
        native.sample_codes(x[:3], cfg_scale=2.0)
    with pytest.raises(TypeError, match="logits has dtype torch.int64"):
        native.sample_codes(x.long())
    bad = x.clone()
    bad[2, 4] = float("nan")
    with pytest.raises(ValueError, match="row 2 of the guided logits holds a NaN"):
        native.sample_codes(bad, top_k=5)
