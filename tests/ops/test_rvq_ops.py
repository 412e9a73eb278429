"""vilau::rvq_lookup and vilau::rvq_encode against float64 references computed another way
(one-hot matmuls and torch.cdist), on fresh random inputs."""

from __future__ import annotations

import pytest
import torch

from vilau_rt import _C
from vilau_rt.ops import kernels

DEVICES = [
    "cpu",
    pytest.param(
        "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
    ),
]
DTYPE_CODES = {torch.float32: 0, torch.float16: 1, torch.bfloat16: 2}
# Tolerance of one rounding to the output dtype (plus float32 summation noise).
RTOL = {torch.float32: 1e-6, torch.float16: 2**-10, torch.bfloat16: 2**-7}


# ---------------------------------------------------------------- float64 references


def ref_lookup(codes: torch.Tensor, codebooks: torch.Tensor) -> torch.Tensor:
    """sum_d onehot(codes[:, d]) @ codebook_d in float64; codes [N, D] -> [N, C]."""
    n_books, rows, _ = codebooks.shape
    books = codebooks.double().cpu()
    out = 0
    for d in range(codes.shape[1]):
        onehot = torch.nn.functional.one_hot(codes[:, d].cpu(), rows).double()
        out = out + onehot @ books[d if n_books > 1 else 0]
    return out


def ref_encode(features: torch.Tensor, codebooks: torch.Tensor, depth: int):
    """Greedy residual argmin with torch.cdist in float64 over the valid rows.

    Returns codes [N, D], z_q [N, C] and the smallest gap between the best and second-best
    squared distance seen per row (how safe the argmin is from float32 rounding).
    """
    n_books, rows, _ = codebooks.shape
    books = codebooks.double().cpu()[:, : rows - 1]  # the padding row is never a candidate
    resid = features.double().cpu()
    codes, gaps = [], []
    for d in range(depth):
        book = books[d if n_books > 1 else 0]
        dist = torch.cdist(resid, book) ** 2
        two = dist.topk(2, dim=1, largest=False)
        codes.append(two.indices[:, 0])
        gaps.append(two.values[:, 1] - two.values[:, 0])
        resid = resid - book[two.indices[:, 0]]
    codes = torch.stack(codes, 1)
    z_q = features.double().cpu() - resid
    return codes, z_q, torch.stack(gaps, 1).min(1).values


# ---------------------------------------------------------------- inputs


def make_codebooks(gen, n_books, n_embed, dim, depth, dtype):
    """Rows are random directions with norm 0.3**level; a row's level is its index mod depth,
    so every depth has candidates at every scale and a shared codebook works too."""
    books = torch.randn(n_books, n_embed + 1, dim, generator=gen, dtype=torch.float64)
    books = books / books.norm(dim=-1, keepdim=True)
    level = torch.arange(n_embed + 1) % depth
    return (books * 0.3 ** level[None, :, None]).to(dtype)


def make_features(gen, codebooks, n_rows, depth, n_embed):
    """Sums of one planted row per depth, at decreasing scales, plus small noise."""
    n_books, _, dim = codebooks.shape
    x = torch.zeros(n_rows, dim, dtype=torch.float64)
    for d in range(depth):
        candidates = torch.arange(d, n_embed, depth)  # rows of level d
        pick = candidates[torch.randint(len(candidates), (n_rows,), generator=gen)]
        x += codebooks[d if n_books > 1 else 0].double()[pick]
    x += 1e-3 * torch.randn(n_rows, dim, generator=gen, dtype=torch.float64)
    return x.to(codebooks.dtype)


def gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ---------------------------------------------------------------- rvq_lookup

LOOKUP_CASES = [  # (N, D, Dc, n_embed, C)
    (1, 1, 1, 3, 7),
    (37, 4, 4, 17, 33),
    (53, 3, 1, 64, 7),
    (256, 4, 4, 500, 64),
    (13, 2, 2, 1, 1),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", LOOKUP_CASES)
def test_lookup_matches_float64_one_hot_sum(case, dtype, device):
    n, depth, n_books, n_embed, dim = case
    g = gen(hash(case) % 2**31)
    books = torch.randn(n_books, n_embed + 1, dim, generator=g).to(dtype)
    codes = torch.randint(n_embed, (n, depth), generator=g)
    out = kernels.rvq_lookup(codes.to(device), books.to(device))
    assert out.shape == (n, dim) and out.dtype == dtype and out.device.type == device
    ref = ref_lookup(codes, books)
    torch.testing.assert_close(out.cpu().double(), ref, rtol=RTOL[dtype], atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_lookup_keeps_leading_dims_and_reads_strided_codes(device):
    g = gen(11)
    books = torch.randn(3, 10, 5, generator=g)
    codes = torch.randint(9, (3, 4, 6), generator=g).transpose(0, 1)  # [4, 3, 6]: not contiguous
    codes = codes[..., :3]  # [4, 3, D=3]
    out = kernels.rvq_lookup(codes.to(device), books.to(device))
    assert out.shape == (4, 3, 5)
    ref = ref_lookup(codes.reshape(-1, 3), books).reshape(4, 3, 5)
    torch.testing.assert_close(out.cpu().double(), ref, rtol=1e-6, atol=1e-6)


def test_lookup_rejects_out_of_range_codes_on_cpu():
    books = torch.randn(2, 6, 4)  # n_embed = 5: valid codes 0..4, row 5 is padding
    for bad in (5, -1, 1 << 40):
        codes = torch.zeros(3, 2, dtype=torch.int64)
        codes[2, 1] = bad
        with pytest.raises(ValueError, match=rf"codes\[2, 1\] = {bad} .*\[0, 5\)"):
            kernels.rvq_lookup(codes, books)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_lookup_writes_nan_rows_for_out_of_range_codes_on_cuda():
    books = torch.randn(2, 6, 4, device="cuda")
    codes = torch.zeros(3, 2, dtype=torch.int64, device="cuda")
    codes[1, 0] = 5
    out = kernels.rvq_lookup(codes, books).cpu()
    assert out[1].isnan().all() and not out[[0, 2]].isnan().any()


@pytest.mark.parametrize("device", DEVICES)
def test_lookup_kernel_writes_every_element_of_a_poisoned_buffer(device):
    g = gen(5)
    books = torch.randn(2, 9, 13, generator=g).half().to(device)
    codes = torch.randint(8, (21, 2), generator=g).to(device)
    out = torch.full((21, 13), float("nan"), dtype=torch.float16, device=device)
    args = (codes.data_ptr(), books.data_ptr(), out.data_ptr(), 21, 2, 2, 9, 13, 1)
    if device == "cpu":
        _C.rvq_lookup_cpu(*args, 2)
    else:
        _C.rvq_lookup_cuda(*args, torch.cuda.current_stream().cuda_stream)
    torch.testing.assert_close(out.cpu().double(), ref_lookup(codes, books), rtol=2**-10, atol=0)


# ---------------------------------------------------------------- rvq_encode

ENCODE_CASES = [  # (N, D, Dc, n_embed, C)
    (1, 1, 1, 2, 7),
    (29, 4, 4, 16, 33),
    (41, 3, 1, 48, 7),
    (100, 2, 2, 300, 64),
    (67, 4, 1, 128, 33),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("case", ENCODE_CASES)
def test_encode_matches_float64_cdist_argmin(case, dtype, device):
    n, depth, n_books, n_embed, dim = case
    g = gen(hash(case) % 2**31 + 1)
    books = make_codebooks(g, n_books, n_embed, dim, depth, dtype)
    x = make_features(g, books, n, depth, n_embed)
    ref_codes, ref_zq, gap = ref_encode(x, books, depth)
    assert gap.min() > 1e-5, "test inputs must have unambiguous argmins"

    codes, z_q = kernels.rvq_encode(x.to(device), books.to(device), n_embed, depth)
    assert codes.shape == (n, depth) and codes.dtype == torch.int64
    assert z_q.shape == (n, dim) and z_q.dtype == dtype
    assert torch.equal(codes.cpu(), ref_codes)
    torch.testing.assert_close(z_q.cpu().double(), ref_zq, rtol=RTOL[dtype], atol=1e-6)


@pytest.mark.parametrize("device", DEVICES)
def test_encode_never_chooses_the_padding_row(device):
    g = gen(21)
    n_embed, dim = 12, 9
    books = torch.randn(2, n_embed + 1, dim, generator=g)
    x = torch.randn(6, dim, generator=g)
    books[0, n_embed] = x[0]  # the padding row would be an exact match for row 0
    books[1, n_embed] = x[1] - books[0, 0]
    codes, _ = kernels.rvq_encode(x.to(device), books.to(device), n_embed, 2)
    assert (codes < n_embed).all()
    ref_codes, _, gap = ref_encode(x, books, 2)
    assert gap.min() > 1e-5, "test inputs must have unambiguous argmins"
    assert torch.equal(codes.cpu(), ref_codes)


@pytest.mark.parametrize("device", DEVICES)
def test_encode_breaks_ties_towards_the_smallest_index(device):
    books = torch.zeros(1, 5, 3)
    books[0, 1] = books[0, 3] = torch.tensor([1.0, 0.0, 0.0])  # rows 1 and 3 tie
    books[0, 0] = books[0, 2] = torch.tensor([-5.0, 0.0, 0.0])
    x = torch.tensor([[1.0, 0.1, 0.0]])
    codes, z_q = kernels.rvq_encode(x.to(device), books.to(device), 4, 1)
    assert codes.tolist() == [[1]]
    assert z_q.cpu().tolist() == [[1.0, 0.0, 0.0]]


@pytest.mark.parametrize("device", DEVICES)
def test_encode_keeps_leading_dims(device):
    g = gen(3)
    books = make_codebooks(g, 2, 20, 8, 2, torch.float32)
    x = make_features(g, books, 12, 2, 20)
    codes, z_q = kernels.rvq_encode(x.reshape(3, 4, 8).to(device), books.to(device), 20, 2)
    assert codes.shape == (3, 4, 2) and z_q.shape == (3, 4, 8)
    ref_codes, _, _ = ref_encode(x, books, 2)
    assert torch.equal(codes.reshape(12, 2).cpu(), ref_codes)


@pytest.mark.parametrize("device", DEVICES)
def test_encode_kernel_writes_every_element_of_poisoned_buffers(device):
    g = gen(8)
    books = make_codebooks(g, 3, 30, 11, 3, torch.bfloat16).to(device)
    x = make_features(g, books.cpu(), 19, 3, 30).to(device)
    codes = torch.full((19, 3), -7, dtype=torch.int64, device=device)
    z_q = torch.full((19, 11), float("nan"), dtype=torch.bfloat16, device=device)
    args = (
        x.data_ptr(),
        books.data_ptr(),
        codes.data_ptr(),
        z_q.data_ptr(),
        19,
        3,
        3,
        31,
        11,
        30,
        2,
    )
    if device == "cpu":
        _C.rvq_encode_cpu(*args, 2)
    else:
        _C.rvq_encode_cuda(*args, torch.cuda.current_stream().cuda_stream)
    ref_codes, ref_zq, _ = ref_encode(x, books, 3)
    assert torch.equal(codes.cpu(), ref_codes)
    torch.testing.assert_close(z_q.cpu().double(), ref_zq, rtol=2**-7, atol=1e-6)


# ---------------------------------------------------------------- boundary checks


def test_bad_arguments_name_the_culprit():
    books = torch.randn(2, 6, 4)
    with pytest.raises(TypeError, match="codes has dtype torch.int32"):
        kernels.rvq_lookup(torch.zeros(3, 2, dtype=torch.int32), books)
    with pytest.raises(ValueError, match="codebooks has 2 codebooks; expected one per depth"):
        kernels.rvq_lookup(torch.zeros(3, 3, dtype=torch.int64), books)
    with pytest.raises(TypeError, match="codebooks has dtype torch.float64"):
        kernels.rvq_lookup(torch.zeros(3, 2, dtype=torch.int64), books.double())
    with pytest.raises(ValueError, match="expected n_embed \\+ 1 = 7"):
        kernels.rvq_encode(torch.randn(3, 4), books, 6, 2)
    with pytest.raises(ValueError, match="features must be \\[..., C\\] with C = 4"):
        kernels.rvq_encode(torch.randn(3, 5), books, 5, 2)
    with pytest.raises(TypeError, match="features .* and codebooks .* must share a dtype"):
        kernels.rvq_encode(torch.randn(3, 4).half(), books, 5, 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
def test_tensors_on_two_devices_are_rejected():
    books = torch.randn(2, 6, 4, device="cuda")
    with pytest.raises(ValueError, match="codes on cpu, codebooks on cuda"):
        kernels.rvq_lookup(torch.zeros(3, 2, dtype=torch.int64), books)


def test_kernel_checks_sizes_on_the_cpp_side():
    books = torch.randn(2, 6, 4)
    codes = torch.zeros(3, 2, dtype=torch.int64)
    out = torch.empty(3, 4)
    with pytest.raises(ValueError, match="codebooks has 3 codebooks"):
        _C.rvq_lookup_cpu(codes.data_ptr(), books.data_ptr(), out.data_ptr(), 3, 2, 3, 6, 4, 0, 1)
    with pytest.raises(ValueError, match="dtype code 7 is not supported"):
        _C.rvq_lookup_cpu(codes.data_ptr(), books.data_ptr(), out.data_ptr(), 3, 2, 2, 6, 4, 7, 1)
    with pytest.raises(ValueError, match="codes: null buffer address"):
        _C.rvq_lookup_cpu(0, books.data_ptr(), out.data_ptr(), 3, 2, 2, 6, 4, 0, 1)


# ---------------------------------------------------------------- registration


@pytest.mark.parametrize("device", DEVICES)
def test_ops_pass_opcheck(device):
    g = gen(2)
    books = make_codebooks(g, 1, 10, 6, 3, torch.float32).to(device)
    x = make_features(g, books.cpu(), 7, 3, 10).to(device)
    codes = torch.randint(10, (2, 7, 3), generator=g).to(device)
    # Inference-only ops: the autograd checks do not apply.
    checks = ("test_schema", "test_faketensor", "test_aot_dispatch_static")
    torch.library.opcheck(torch.ops.vilau.rvq_lookup.default, (codes, books), test_utils=checks)
    torch.library.opcheck(torch.ops.vilau.rvq_encode.default, (x, books, 10, 3), test_utils=checks)


def test_ops_trace_with_torch_export():
    class Encode(torch.nn.Module):
        def forward(self, x, books):
            codes, z_q = kernels.rvq_encode(x, books, 10, 2)
            return kernels.rvq_lookup(codes, books) - z_q

    g = gen(4)
    books = make_codebooks(g, 2, 10, 6, 2, torch.float32)
    x = make_features(g, books, 5, 2, 10)
    program = torch.export.export(Encode(), (x, books))
    names = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {"vilau.rvq_encode.default", "vilau.rvq_lookup.default"} <= names
    assert program.module()(x, books).abs().max() == 0
