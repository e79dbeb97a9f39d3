import pytest

from ingest.errors import ConfigError
from ingest.settings import load_settings


def test_precedence_flags_over_env_over_file(tmp_path, monkeypatch):
    config = tmp_path / "kb.toml"
    config.write_text('collection = "from-file"\nchunk_tokens = 300\noverlap = 10\nendpoint = ["http://f:1/v1"]\n')
    monkeypatch.setenv("KB_CHUNK_TOKENS", "400")
    settings = load_settings(config)
    assert (settings.collection, settings.chunk_tokens, settings.overlap) == ("from-file", 400, 10)
    assert settings.endpoint == ["http://f:1/v1"]
    assert load_settings(config, chunk_tokens=256).chunk_tokens == 256
    monkeypatch.setenv("KB_CONFIG", str(config))
    assert load_settings().collection == "from-file"


def test_kb_toml_in_the_working_folder_is_read(tmp_path, monkeypatch):
    (tmp_path / "kb.toml").write_text('collection = "here"\n')
    monkeypatch.chdir(tmp_path)
    assert load_settings().collection == "here"


def test_env_lists_and_secrets(monkeypatch):
    monkeypatch.setenv("KB_ENDPOINT", "http://a:1/v1, http://b:2/v1/")
    monkeypatch.setenv("KB_API_KEY", "sk-very-secret")
    settings = load_settings()
    assert settings.endpoint == ["http://a:1/v1", "http://b:2/v1"]
    assert settings.api_key.get_secret_value() == "sk-very-secret"
    assert "sk-very-secret" not in repr(settings) and "sk-very-secret" not in str(settings.public_dict())


@pytest.mark.parametrize(
    ("flags", "message"),
    [({"overlap": 300}, "overlap"), ({"endpoint": ["ftp://x"]}, "http"), ({"chunk_tokens": 4}, "chunk_tokens")],
)
def test_invalid_settings_are_config_errors(flags, message):
    with pytest.raises(ConfigError, match=message):
        load_settings(**flags)


def test_missing_config_file():
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings("/nonexistent/kb.toml")
