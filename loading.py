"""Loading models and prompts: one path for the embedded task's cache, hub names and local folders.

Plumbing kept apart from the task: `from_pretrained`, quiet, offline-aware, with one line that says what
went wrong; the RM with eager attention (ABC reads its attention maps); a prompts file read and split.
"""

import contextlib
import os
import socket
from urllib.parse import urlparse

import huggingface_hub
import transformers

HUB_HOST = urlparse(huggingface_hub.constants.ENDPOINT).hostname  # answers on 443 when online


def hub_answers(timeout: float = 3.0) -> bool:
    """Whether the model hub may be asked: not switched off (HF_HUB_OFFLINE), and answering in time."""
    if huggingface_hub.constants.HF_HUB_OFFLINE:  # read from the environment when imported
        return False
    with contextlib.suppress(OSError), socket.create_connection((HUB_HOST, 443), timeout):
        return True
    return False  # no connection within `timeout`


def load_pretrained(loader, name_or_path: str, what: str, **kwargs):
    """`loader.from_pretrained`, quiet, with one line that says what went wrong. A name that is not a
    local folder is read from the local hub cache unless the hub answers in seconds (no minute of retries)."""
    local_only = os.path.isdir(name_or_path) or not hub_answers()
    try:
        with quiet_transformers():
            return loader.from_pretrained(name_or_path, local_files_only=local_only, **kwargs)
    except (OSError, ValueError) as error:
        where = "it is not a local folder, and not in the local hub cache (is the network off?): no"
        where = "the local folder exists but holds no loadable" if os.path.isdir(name_or_path) else where
        raise ValueError(
            f"cannot load the {what} {name_or_path!r}: {where} {what} "
            f"({type(error).__name__}: {str(error).splitlines()[0]})"
        ) from None


@contextlib.contextmanager
def quiet_transformers():
    """transformers without its known-harmless warnings (e.g. unused keys) and its loading and saving bars."""
    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()


def load_policy(name_or_path: str):
    tokenizer = load_pretrained(
        transformers.AutoTokenizer, name_or_path, "policy tokenizer", padding_side="left"
    )
    if tokenizer.pad_token is None:  # GPT-2 has none: pad with EOS, masked out anyway
        tokenizer.pad_token = tokenizer.eos_token
    return load_pretrained(transformers.AutoModelForCausalLM, name_or_path, "policy").eval(), tokenizer


def load_reward_model(name_or_path: str):
    """Eager attention: the default SDPA kernel returns no attention maps (scoring.sdpa_view scores fast)."""
    loader = transformers.AutoModelForSequenceClassification
    model = load_pretrained(loader, name_or_path, "reward model", attn_implementation="eager")
    tokenizer = load_pretrained(transformers.AutoTokenizer, name_or_path, "reward tokenizer")
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
        model.config.pad_token_id = tokenizer.pad_token_id
    return model.eval(), tokenizer


def read_prompts(path: str, val_fraction: float) -> tuple[list[str], list[str], dict[str, str]]:
    """A prompts file: one prompt per line, `prompt<TAB>demonstration` where one is known."""
    if not os.path.isfile(path):
        raise ValueError(f"prompts file {path!r} does not exist")
    with open(path, encoding="utf-8") as file:
        rows = [line.rstrip("\n").split("\t", 1) for line in file if line.strip()]
    if len(rows) < 2:
        raise ValueError(f"prompts file {path!r} has {len(rows)} prompts; expected at least 2, one per line")
    prompts = [row[0].strip() for row in rows]
    demonstrations = {row[0].strip(): " " + row[1].strip() for row in rows if len(row) == 2}
    n_val = max(1, int(len(prompts) * val_fraction))
    return prompts[:-n_val], prompts[-n_val:], demonstrations
