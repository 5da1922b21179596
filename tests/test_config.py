"""Knobs load from TOML; unknown keys and bad values are refused with their names."""

import pytest

from sparkdownpour import Downpour, DownpourConfig


def test_from_toml_reads_the_table(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text('[downpour]\noptimizer = "adam"\nlearning_rate = 0.001\nepochs = 3\n')
    config = DownpourConfig.from_toml(path)
    assert (config.optimizer, config.learning_rate, config.epochs) == ("adam", 0.001, 3)
    assert Downpour(lambda: None, config=config).config is config


def test_unknown_toml_key_is_refused_with_the_allowed_ones(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text("[downpour]\nepoch = 3\n")
    with pytest.raises(ValueError, match=r"unknown key\(s\) \['epoch'\]; allowed: .*'epochs'"):
        DownpourConfig.from_toml(path)


def test_bad_toml_value_is_refused_with_its_name(tmp_path):
    path = tmp_path / "job.toml"
    path.write_text("[downpour]\nbatch_size = -4\n")
    with pytest.raises(ValueError, match=r"batch_size must be >= 1, received -4"):
        DownpourConfig.from_toml(path)


def test_config_and_knobs_together_are_refused():
    with pytest.raises(TypeError, match="either config= or keyword knobs"):
        Downpour(lambda: None, config=DownpourConfig(), epochs=2)


@pytest.mark.parametrize("host,error", [(5, TypeError), ("a b", ValueError),
                                        ("http://h", ValueError), ("0.0.0.0", ValueError)])
def test_server_host_is_a_dialable_address(host, error):
    from sparkdownpour.config import DownpourConfig, SandblasterConfig

    for config in (DownpourConfig, SandblasterConfig):
        with pytest.raises(error, match="server_host"):
            config(server_host=host)
    assert DownpourConfig(server_host="10.0.0.5").server_host == "10.0.0.5"


def test_easgd_with_max_staleness_is_refused_naming_both():
    # A stale elastic push used to reach the replica as an unexplained "batch order" failure.
    with pytest.raises(ValueError, match=r"max_staleness=3 .* mode='easgd'"):
        DownpourConfig(mode="easgd", max_staleness=3)
    assert DownpourConfig(mode="easgd").max_staleness is None
    assert DownpourConfig(mode="async", max_staleness=3).max_staleness == 3


def test_one_default_request_size_limit_for_every_server():
    import inspect

    from sparkdownpour import DeepDist, SandblasterConfig, config
    from sparkdownpour.lbfgs.shard_server import ShardGroup
    from sparkdownpour.server import create_app
    from sparkdownpour.transport.http_server import HttpServer

    limit = config.DEFAULT_MAX_REQUEST_BYTES
    assert DownpourConfig().max_request_mb * 2**20 == limit
    assert SandblasterConfig().max_request_mb * 2**20 == limit
    assert inspect.signature(DeepDist).parameters["max_request_mb"].default * 2**20 == limit
    for server in (ShardGroup, create_app, HttpServer):  # was 256 MiB in two of them
        assert inspect.signature(server).parameters["max_request_bytes"].default == limit


def test_an_update_rule_with_a_learning_rate_is_refused_naming_both():
    from sparkdownpour import optimizers

    rule = optimizers.Adam(learning_rate=0.001)
    # The rule's own rate is the one used; a second one would have been silently ignored.
    with pytest.raises(ValueError, match=r"optimizer=Adam\(learning_rate=0.001.*"
                                         r"learning_rate=0.1 would be ignored"):
        Downpour(lambda: None, optimizer=rule, learning_rate=0.1)
    trainer = Downpour(lambda: None, optimizer=rule)
    assert trainer.config.learning_rate is None and trainer.config.optimizer is rule
    # A rule given by name takes learning_rate, 0.05 unless given.
    assert DownpourConfig().learning_rate == 0.05
    assert Downpour(lambda: None, optimizer="adam", learning_rate=0.1).config.learning_rate == 0.1
