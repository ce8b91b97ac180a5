"""OptiLLM 0.4.0's server flags and variables keep their meaning: ``--best-of-n``,
``--mcts-*``, ``--rstar-*`` and ``--cepo_<field>`` set approach option defaults (a request's
own value still wins), ``--cepo_config_file`` is ``--cepo-config``, ``--n`` is the choice count
of requests that send none; bad defaults stop start-up."""

from __future__ import annotations

import pytest

from optillm.app import create_app
from optillm.settings import Settings
from optillm.upstream.config import ConfigError

from ..conftest import chat


def test_flags_and_optillm_variables_become_option_defaults():
    s = Settings.from_args(["--best-of-n", "5", "--mcts-depth", "2", "--rstar-c", "0.9"], {})
    assert s.option_defaults == {"best_of_n": 5, "mcts_depth": 2, "rstar_c": 0.9}
    assert Settings.from_args(["--best_of_n", "4"], {}).option_defaults == {"best_of_n": 4}
    env = {"OPTILLM_SIMULATIONS": "4", "OPTILLM_EXPLORATION": "0.5",
           "OPTILLM_RSTAR_NUM_ROLLOUTS": "7", "OPTILLM_N": "2"}
    s = Settings.from_args([], env)
    assert s.option_defaults == {"mcts_simulations": 4, "mcts_exploration": 0.5,
                                 "rstar_num_rollouts": 7}
    assert s.n == 2
    # the flag wins over both spellings of the variable
    s = Settings.from_args(["--mcts-simulations", "3"],
                           {"OPTILLM_SIMULATIONS": "9", "OPTILLM_MCTS_SIMULATIONS": "8"})
    assert s.option_defaults == {"mcts_simulations": 3}
    assert Settings.from_args([], {}).option_defaults == {}


def test_cepo_flags_and_config_file_alias(tmp_path):
    path = tmp_path / "cepo.yaml"
    path.write_text("bestofn_n: 2\n")
    s = Settings.from_args(["--cepo_bestofn_n", "4", "--cepo_planning_temperature=0.3",
                            "--cepo_config_file", str(path)], {})
    assert s.option_defaults == {"cepo_bestofn_n": 4, "cepo_planning_temperature": 0.3}
    assert s.cepo_config == str(path)


def test_bad_flag_values_are_usage_errors():
    with pytest.raises(SystemExit):
        Settings.from_args(["--mcts-depth", "deep"], {})
    with pytest.raises(SystemExit):
        Settings.from_args([], {"OPTILLM_DEPTH": "x"})
    with pytest.raises(SystemExit):
        Settings.from_args(["--n", "0"], {})


def test_to_env_round_trips_the_defaults():
    s = Settings.from_args(["--best-of-n", "5", "--cepo_bestofn_n", "2", "--n", "3"], {})
    again = Settings.from_args([], s.to_env())
    assert again.option_defaults == s.option_defaults and again.n == 3


def test_best_of_n_default_sets_the_candidates_and_the_request_wins(make_app, fake):
    client = make_app(option_defaults={"best_of_n": 2}).test_client()
    assert chat(client, model="bon-fake").status_code == 200
    assert fake.history[0].n == 2
    fake.history.clear()
    assert chat(client, model="bon-fake", best_of_n=4).status_code == 200
    assert fake.history[0].n == 4


def test_mcts_default_changes_the_search(make_app, fake):
    default = make_app().test_client()
    chat(default, model="mcts-fake")
    calls_default = len(fake.history)
    fake.history.clear()
    deeper = make_app(option_defaults={"mcts_simulations": 4}).test_client()
    chat(deeper, model="mcts-fake")
    assert len(fake.history) > calls_default


def test_bad_or_unknown_defaults_stop_start_up(fake, tmp_path):
    base = {"base_url": "http://fake.invalid/v1", "conversation_log_dir": str(tmp_path)}
    with pytest.raises(ConfigError, match="mcts_depth"):
        create_app(Settings(**base, option_defaults={"mcts_depth": 999}), upstream=fake)
    with pytest.raises(ConfigError, match="cepo_no_such_knob"):
        create_app(Settings(**base, option_defaults={"cepo_no_such_knob": 1}), upstream=fake)


def test_n_flag_is_the_choice_count_of_requests_that_send_none(make_app, fake):
    client = make_app(n=2).test_client()
    body = chat(client).get_json()
    assert len(body["choices"]) == 2
    assert fake.history[-1].n == 2  # n > 1 takes the typed path, n sent upstream
    assert len(chat(client, n=1).get_json()["choices"]) == 1  # the request's own n wins
