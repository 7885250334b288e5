"""Which numbers this CPU computes: a fingerprint of the output bits of each operation a run uses.

Two processes whose fingerprints agree compute every fingerprinted operation to the same bit; where
they differ, RL turns the last bit into another run (another draw of the same experiment, not a bug).
run.py records the fingerprint in config.json and summary.md, warns before a resumed run mixes arms
of two fingerprints, and says when the fingerprint is not the one docs/summary.md was made under.

Each operation is hashed on small fixed inputs, and the hashes are grouped by the library that picks
the kernel (the class names the variable that pins it; cli.py's --numerics modes set them):

    matmul     MKL: torch's matrix products, forward and the transposed ones of backward (MKL_CBWR)
    gelu       oneDNN: torch's exact GELU, forward and backward (ONEDNN_MAX_CPU_ISA)
    vector     torch's own kernels: exp, log, tanh, softmax, layer norm, sums (ATEN_CPU_CAPABILITY)
    attention  torch's scaled-dot-product attention, causal and masked (ATEN_CPU_CAPABILITY)
    adamw      three AdamW steps, fused (PPO) and one tensor at a time (the task's training)
    libm       the C library's pow, exp, log, erf through Python's floats (AdamW's bias corrections
               are Python floats): no variable pins it, the C library's version decides
    sampling   randn, rand, randperm, multinomial from seeded generators
    models     a tiny GPT-2 forward and backward, a tiny BERT forward and backward (transformers)
    linalg     torch.linalg.solve in float64 (LIME's surrogates; MKL's LAPACK)
    numpy      numpy's exp, log, sqrt in float64 and float32 (LIME's kernel, the BO's GP;
               NPY_DISABLE_CPU_FEATURES)
    openblas   numpy's matrix product and scipy's Cholesky solve in float64 (the BO's GP;
               OPENBLAS_CORETYPE)

It takes well under a second once torch and transformers are loaded, runs on one thread (a sum
split over threads adds in another order) and leaves the global random generator as it was.
`python numerics.py [--numerics MODE]` prints every operation's hash, to compare two machines line
by line and find the operation that parts them.
"""

import hashlib
import math
import os
import platform
import re

CLASSES = (
    "matmul",
    "gelu",
    "vector",
    "attention",
    "adamw",
    "libm",
    "sampling",
    "models",
    "linalg",
    "numpy",
    "openblas",
)
DOCS_SUMMARY = os.path.join(os.path.dirname(os.path.abspath(__file__)), "docs", "summary.md")
LINE = "CPU numerics: `--numerics {mode}`, fingerprint `{id}`"


def digest(*arrays) -> str:
    """12 hex digits of the bytes of torch tensors and numpy arrays, in order."""
    import torch

    h = hashlib.sha256()
    for a in arrays:
        if isinstance(a, torch.Tensor):
            a = a.detach().contiguous().cpu().numpy()
        h.update(a.tobytes())
    return h.hexdigest()[:12]


def operations() -> dict[str, dict[str, str]]:
    """{class: {operation: hash}}, every operation of the fingerprint on its fixed inputs."""
    import numpy as np
    import scipy.linalg
    import torch
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    x, w = torch.randn(64, 128, generator=g), torch.randn(128, 96, generator=g)
    bias, grad = torch.randn(96, generator=g), torch.randn(64, 96, generator=g)
    ops = {name: {} for name in CLASSES}
    ops["matmul"] = {
        "mm 64x128x96": digest(x @ w),
        "mm 7x33x5": digest(torch.randn(7, 33, generator=g) @ torch.randn(33, 5, generator=g)),
        "addmm": digest(torch.addmm(bias, x, w)),
        "mm transposed a (weight grad)": digest(grad.T @ x),
        "mm transposed b (input grad)": digest(grad @ w.T),
        "bmm": digest(torch.bmm(torch.randn(4, 16, 32, generator=g), torch.randn(4, 32, 16, generator=g))),
    }
    y = (x @ w).requires_grad_()
    F.gelu(y).backward(grad)
    ops["gelu"] = {"gelu forward": digest(F.gelu(x)), "gelu backward": digest(y.grad)}

    z = x.clone().requires_grad_()
    normed = F.layer_norm(z, (128,), torch.linspace(0.5, 1.5, 128), torch.linspace(-0.1, 0.1, 128))
    normed.backward(torch.randn(64, 128, generator=g))
    logits = torch.randn(16, 50, generator=g, requires_grad=True)
    F.cross_entropy(logits, torch.randint(0, 50, (16,), generator=g)).backward()
    ops["vector"] = {
        "exp log tanh": digest(x.exp(), x.abs().log(), x.tanh(), torch.tanh(x * 0.79788) * x),
        "softmax log_softmax": digest(torch.softmax(x, -1), torch.log_softmax(x, -1)),
        "layer_norm forward backward": digest(normed, z.grad),
        "sum mean var cumsum": digest(x.sum(), x.mean(1), x.var(0), x.sum(0), x.cumsum(1)),
        "cross_entropy backward": digest(logits.grad),
    }
    q, k, v = (torch.randn(2, 4, 24, 16, generator=g) for _ in range(3))
    mask = torch.rand(2, 1, 24, 24, generator=g) > 0.2
    ops["attention"] = {
        "sdpa causal": digest(F.scaled_dot_product_attention(q, k, v, is_causal=True)),
        "sdpa masked": digest(F.scaled_dot_product_attention(q, k, v, attn_mask=mask)),
    }
    for fused in (True, False):
        param = torch.nn.Parameter(torch.randn(96, 128, generator=g))
        optimizer = torch.optim.AdamW([param], lr=1e-3, eps=1e-5, fused=fused)
        step_grad = torch.randn(96, 128, generator=g) * 1e-2
        for _ in range(3):
            param.grad = step_grad.clone()
            optimizer.step()
        ops["adamw"][f"AdamW fused={fused}"] = digest(param)
    steps = range(1, 301)
    ops["libm"] = {
        "AdamW bias corrections (pow)": digest(
            np.array([(1 - 0.999**k) ** 0.5 / (1 - 0.9**k) for k in steps])
        ),
        "exp log erf": digest(
            np.array([(math.exp(k / 37), math.log(k / 7), math.erf(k / 99)) for k in steps])
        ),
    }
    probs = torch.softmax(torch.randn(64, 50, generator=g), -1)
    seeded = torch.Generator().manual_seed(1)
    ops["sampling"] = {
        "randn rand": digest(torch.randn(1000, generator=seeded), torch.rand(1000, generator=seeded)),
        "randperm": digest(torch.randperm(64, generator=seeded)),
        "multinomial": digest(torch.multinomial(probs, 1, generator=seeded)),
    }
    ops["models"] = tiny_models(g)
    gram = torch.randn(8, 12, 12, generator=g, dtype=torch.float64)
    gram = gram @ gram.transpose(1, 2) + torch.eye(12, dtype=torch.float64)
    ops["linalg"] = {
        "solve float64": digest(torch.linalg.solve(gram, torch.ones(8, 12, 1, dtype=torch.float64)))
    }

    grid = np.linspace(-5, 5, 1001)
    ops["numpy"] = {
        "exp log sqrt float64": digest(np.exp(grid), np.log(grid + 6), np.sqrt(np.exp(-(grid**2) / 4))),
        "exp log float32": digest(np.exp(grid.astype(np.float32)), np.log(grid.astype(np.float32) + 6)),
    }
    points = np.random.default_rng(0).random((24, 4))
    kernel = np.exp(-((points[:, None] - points[None]) ** 2).sum(-1)) + 1e-3 * np.eye(24)
    factor = scipy.linalg.cholesky(kernel, lower=True)
    ops["openblas"] = {
        "matmul float64": digest(kernel @ kernel),
        "cholesky solve": digest(factor, scipy.linalg.cho_solve((factor, True), np.ones(24))),
    }
    return ops


def tiny_models(g) -> dict[str, str]:
    """A 2-layer GPT-2 and a 2-layer BERT, the sizes of the embedded task's, weights drawn from `g`."""
    import torch
    import transformers

    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # no notes on the configs' defaults
    try:
        gpt2_config = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=300, n_positions=64)
        gpt2 = transformers.GPT2LMHeadModel(gpt2_config)
        bert_config = transformers.BertConfig(
            vocab_size=300,
            hidden_size=64,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=128,
            max_position_embeddings=64,
            num_labels=2,
        )
        bert = transformers.BertForSequenceClassification(bert_config)
        ids = torch.randint(0, 300, (4, 20), generator=g)
        hashes = {}
        for name, model in [("GPT-2", gpt2), ("BERT", bert)]:
            with torch.no_grad():
                for p in model.parameters():
                    p.copy_(torch.randn(p.shape, generator=g) * 0.05)
            model.eval()  # no dropout: the same forward every time
            out = model(ids, labels=ids if name == "GPT-2" else torch.tensor([0, 1, 1, 0]))
            out.loss.backward()
            hashes[f"tiny {name} forward"] = digest(out.logits)
            hashes[f"tiny {name} backward"] = digest(
                *[p.grad for p in model.parameters() if p.grad is not None]
            )
    finally:
        transformers.logging.set_verbosity(verbosity)
    return hashes


def fingerprint(mode: str) -> dict:
    """{'mode', 'id' (8 hex digits of every class), 'classes': {class: 6 hex digits}, 'versions'}."""
    import numpy as np
    import scipy
    import torch
    import transformers

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the same inputs split the same way whatever --threads says
    try:
        with torch.random.fork_rng(devices=[]):  # the tiny models' init draws from the global generator
            found = operations()
    finally:
        torch.set_num_threads(threads)
    classes = {}
    for name, hashes in found.items():
        classes[name] = hashlib.sha256(" ".join(hashes.values()).encode()).hexdigest()[:6]
    versions = dict(
        torch=torch.__version__,
        transformers=transformers.__version__,
        numpy=np.__version__,
        scipy=scipy.__version__,
        python=platform.python_version(),
        libc=" ".join(platform.libc_ver()),
    )
    whole = hashlib.sha256(" ".join(classes.values()).encode()).hexdigest()[:8]
    return {"mode": mode, "id": whole, "classes": classes, "versions": versions}


def text(record: dict) -> str:
    """The summary.md line of a fingerprint: its mode, id, classes and library versions."""
    classes = ", ".join(f"{name} {value}" for name, value in record["classes"].items())
    versions = ", ".join(f"{name} {value}" for name, value in record["versions"].items())
    return LINE.format(**record) + f" ({classes}; {versions})"


def documented(path: str = DOCS_SUMMARY) -> dict | None:
    """{'mode', 'id'} of the fingerprint line in docs/summary.md, None where it has none."""
    try:
        with open(path) as file:
            found = re.search(LINE.format(mode="(?P<mode>[a-z0-9]+)", id="(?P<id>[0-9a-f]+)"), file.read())
    except OSError:
        return None
    return found and found.groupdict()


def versus_docs(record: dict, path: str = DOCS_SUMMARY) -> str | None:
    """One line where this run's mode is docs/summary.md's and its fingerprint another, else None."""
    docs = documented(path)
    if docs is None or docs["mode"] != record["mode"] or docs["id"] == record["id"]:
        return None
    return (
        f"This CPU computes differently from the one that made docs/summary.md (numerics fingerprint "
        f"{record['id']}, the docs' {docs['id']}): the same command draws another run of the same "
        f"experiment here, so its table differs from the docs' to the digit; compare the spread over "
        f"seeds (docs/results.md), not the digits. Not a bug."
    )


def changed(before: dict | None, now: dict) -> str | None:
    """One line where a resumed folder's arms were trained under another fingerprint, else None."""
    if before is None or before.get("id") == now["id"]:
        return None
    parted = [name for name, value in now["classes"].items() if before.get("classes", {}).get(name) != value]
    return (
        f"warning: the finished arms here were trained under numerics fingerprint {before.get('id')}, "
        f"this process computes {now['id']} ({', '.join(parted)} differ): the arms it adds are other "
        f"draws, and the mix is no run one machine would give"
    )


def main() -> None:
    """Print every operation's hash and the fingerprint, under the mode of --numerics."""
    import argparse

    import cli

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--numerics", default="reproducible", choices=("native", "reproducible"))
    mode = parser.parse_args().numerics
    cli.pin_numerics(mode)
    import torch

    torch.set_num_threads(1)
    for name, hashes in operations().items():
        for operation, value in hashes.items():
            print(f"{name:10s} {operation:32s} {value}")
    print(text(fingerprint(mode)))
    names = dict.fromkeys([*cli.REPRODUCIBLE_CPU, cli.NUMPY])  # NUMPY is in REPRODUCIBLE_CPU once pinned
    pinned = " ".join(f"{name}={os.environ.get(name, '')}" for name in names)
    print(f"cpu: {cpu_name()}; torch capability {torch.backends.cpu.get_cpu_capability()}; {pinned}")


def cpu_name() -> str:
    """The CPU's model name and the vector extensions that decide kernels, from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as file:
            info = file.read()
    except OSError:
        return "unknown"
    model = re.search(r"^model name\s*:\s*(.*)$", info, re.M)
    flags = re.search(r"^flags\s*:\s*(.*)$", info, re.M)
    have = set(flags.group(1).split()) if flags else set()
    wanted = [f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile") if f in have]
    return f"{model.group(1) if model else 'unknown'} ({' '.join(wanted)})"


if __name__ == "__main__":
    main()
