"""Loading: clear one-line errors, the hub asked only when it answers, quiet loading, prompts files."""

import contextlib

import numpy as np
import pytest
import transformers

import loading


def test_unloadable_model_and_bad_prompts_files_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="cannot load the policy tokenizer 'no-such-org/no-such-model'"):
        loading.load_policy("no-such-org/no-such-model")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="holds no loadable reward model"):
        loading.load_reward_model(str(tmp_path / "empty"))
    with pytest.raises(ValueError, match="does not exist"):
        loading.read_prompts(str(tmp_path / "missing.txt"), 0.1)
    (tmp_path / "blank.txt").write_text("\n  \n")
    with pytest.raises(ValueError, match="has 0 prompts"):
        loading.read_prompts(str(tmp_path / "blank.txt"), 0.1)


def test_the_hub_is_asked_only_when_it_answers_and_loading_is_quiet(monkeypatch):
    seen = []  # (local_files_only, progress bars on) at each load

    class Loader:
        @staticmethod
        def from_pretrained(name, local_files_only):
            seen.append((local_files_only, transformers.logging.is_progress_bar_enabled()))
            raise OSError("no such model")

    def unreachable(*args):
        raise OSError("network is unreachable")

    bars, verbosity = transformers.logging.is_progress_bar_enabled(), transformers.logging.get_verbosity()
    monkeypatch.setattr(loading.huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(loading.socket, "create_connection", unreachable)
    assert not loading.hub_answers()
    with pytest.raises(ValueError, match="cannot load the policy 'org/model': it is not a local folder"):
        loading.load_pretrained(Loader, "org/model", "policy")  # from the local cache only: no retries
    monkeypatch.setattr(loading.socket, "create_connection", lambda *args: contextlib.nullcontext())
    assert loading.hub_answers()
    with pytest.raises(ValueError):
        loading.load_pretrained(Loader, "org/model", "policy")
    monkeypatch.setattr(loading.huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert not loading.hub_answers()  # switched off: not even asked
    assert seen == [(True, False), (False, False)]
    restored = transformers.logging.is_progress_bar_enabled(), transformers.logging.get_verbosity()
    assert restored == (bars, verbosity)


def test_prompts_file_with_demonstrations(tmp_path):
    path = tmp_path / "prompts.txt"
    path.write_text("the plot\twas superb .\nthis film\n" + "".join(f"prompt {i}\n" for i in range(8)))
    train, val, demonstrations = loading.read_prompts(str(path), 0.2)
    assert train[:2] == ["the plot", "this film"] and val == ["prompt 6", "prompt 7"]
    assert demonstrations == {"the plot": " was superb ."}
    assert np.isclose(len(val) / (len(train) + len(val)), 0.2)
