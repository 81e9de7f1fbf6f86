"""modal.toml: defaults, precedence, provenance, and errors that say where and what."""

from __future__ import annotations

from pathlib import Path

import pytest

from canvascast_cli.config import function_cost_per_second, load_config
from canvascast_cli.errors import ConfigError
from tests.helpers import REPO, Cli


def test_defaults_are_the_seed_values() -> None:
    s = load_config(search=False, env={}).settings
    f = s.functions
    # FLUX.1-schnell fits an L40S, not the seed's A10G (docs/modal.md).
    assert (f.generate_images.gpu, f.transcribe_audio.gpu) == ("L40S", "A10G")
    assert (f.generate_images.memory, f.generate_images.startup_timeout) == (40960, 600)
    assert (f.render_video.cpu, f.render_video.memory, f.render_video.gpu) == (4.0, 8192, None)
    assert [fn.timeout for fn in (f.generate_images, f.render_video, f.transcribe_audio)] == [
        300, 600, 180]
    assert [fn.retries for fn in (f.generate_images, f.render_video, f.transcribe_audio)] == [
        2, 1, 2]
    assert [fn.max_containers for fn in (f.generate_images, f.render_video,
                                         f.transcribe_audio)] == [10, 5, 10]
    assert [fn.scaledown_window for fn in (f.generate_images, f.render_video,
                                           f.transcribe_audio)] == [60, 120, 60]
    assert f.generate_images.batch_size == 5
    assert (s.breaker.failure_threshold, s.breaker.reset_timeout) == (5, 60.0)


def test_repo_modal_toml_is_valid_and_matches_defaults() -> None:
    config = load_config(REPO / "modal.toml", env={})
    defaults = load_config(search=False, env={})
    assert config.settings == defaults.settings
    assert config.sources["functions.render_video.timeout"] == str(REPO / "modal.toml")


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = tmp_path / "modal.toml"
    path.write_text("[functions.render_video]\ntimeout = 700\nretries = 3\n")
    env = {"CANVASCAST_FUNCTIONS__RENDER_VIDEO__TIMEOUT": "800",
           "CANVASCAST_FUNCTIONS__TRANSCRIBE_AUDIO__GPU": "T4"}
    config = load_config(path, env=env, overrides={"functions.render_video.timeout": 900})
    fn = config.settings.functions.render_video
    assert (fn.timeout, fn.retries) == (900, 3)
    assert config.settings.functions.transcribe_audio.gpu == "T4"
    src = config.sources
    assert src["functions.render_video.timeout"] == "flag"
    assert src["functions.render_video.retries"] == str(path)
    assert src["functions.transcribe_audio.gpu"] == (
        "env CANVASCAST_FUNCTIONS__TRANSCRIBE_AUDIO__GPU")
    rows = {key: source for key, _, source in config.rows()}
    assert rows["functions.render_video.cpu"] == "default"


def test_found_in_a_parent_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "modal.toml").write_text("[breaker]\nfailure_threshold = 9\n")
    deep = tmp_path / "a" / "b"
    deep.mkdir(parents=True)
    monkeypatch.chdir(deep)
    assert load_config(env={}).settings.breaker.failure_threshold == 9


def test_every_problem_reported_at_once_with_file_and_key_path(tmp_path: Path) -> None:
    path = tmp_path / "modal.toml"
    path.write_text(
        '[app]\nnme = "x"\n'
        '[functions.render_video]\ntimeout = "ten"\nmin_containers = 7\nmax_containers = 3\n'
        'gpu = "Z100"\n'
        "[functions.render_vid]\ncpu = 2\n"
        "[breaker]\nfailure_threshold = 0\n"
    )
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"CANVASCAST_BREAKER__RESET_TIMEOUT": "abc"})
    details = info.value.details
    assert len(details) == 7, details
    text = "\n".join(details)
    assert f"{path}: app.nme: unknown key; allowed: name, environment, endpoint" in text
    assert "functions.render_video.timeout: Input should be a valid integer (got 'ten')" in text
    assert "functions.render_video.max_containers: must be at least min_containers (7)" in text
    assert "functions.render_video.gpu: unknown GPU 'Z100'; allowed: T4" in text
    assert "functions.render_vid: unknown key; allowed: generate_images, render_video" in text
    assert "breaker.failure_threshold: Input should be greater than or equal to 1" in text
    assert "env CANVASCAST_BREAKER__RESET_TIMEOUT: breaker.reset_timeout" in text
    assert info.value.exit_code == 2


def test_unknown_environment_key_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(search=False, env={"CANVASCAST_FUNCTIONS__RENDER_VIDEO__TIMEOTU": "5"})
    assert "CANVASCAST_FUNCTIONS__RENDER_VIDEO__TIMEOTU (environment): no config key" in str(
        info.value)
    assert "allowed in functions.render_video: attempts, batch_size, buffer_containers, cpu" in str(
        info.value)


def test_invalid_toml_and_missing_file(tmp_path: Path) -> None:
    bad = tmp_path / "modal.toml"
    bad.write_text("[app\nname=")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad, env={})
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "nope.toml", env={})


def test_warm_windows_validated(tmp_path: Path) -> None:
    path = tmp_path / "modal.toml"
    path.write_text('[[warm.windows]]\nfunction = "render_vidoe"\nstart = "18:00"\n'
                    'end = "08:00"\ndays = ["mon", "funday"]\n')
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    text = str(info.value)
    assert "warm.windows[0].function" in text or "warm.windows.0.function" in text
    assert "must be after start (18:00)" in text
    assert "funday" in text


def test_cost_per_second_uses_configured_resources() -> None:
    s = load_config(search=False, env={}).settings
    render_rate = function_cost_per_second(s, "render_video")
    assert render_rate == pytest.approx(4 * 0.0000131 + 8 * 0.00000222)
    gpu_rate = function_cost_per_second(s, "transcribe_audio")
    assert gpu_rate == pytest.approx(0.000306 + 0.125 * 0.0000131 + 0.125 * 0.00000222)


def test_cli_validate_and_show(cli: Cli, isolated_env: Path) -> None:
    ok = cli("config", "validate", "--json")
    assert ok.exit_code == 0 and ok.json() == {"valid": True, "path": None}
    (isolated_env / "modal.toml").write_text("[functions.render_video]\ntimeout = 5\n")
    bad = cli("--json", "config", "validate")
    assert bad.exit_code == 2
    err = bad.json()["error"]
    assert err["code"] == "CONFIG_INVALID" and err["retryable"] is False
    assert any("functions.render_video.timeout" in d for d in err["details"])
    (isolated_env / "modal.toml").write_text("[functions.render_video]\ntimeout = 900\n")
    shown = cli("config", "show", "--json").json()
    assert shown["values"]["functions.render_video.timeout"] == {
        "value": 900, "source": str(isolated_env / "modal.toml")}
    table = cli("config", "show")
    assert table.exit_code == 0 and "functions.render_video.timeout" in table.stdout


# --- partial tables, effective values, typed environment, encodings ---------------------


def test_partial_table_keeps_the_other_defaults(tmp_path: Path) -> None:
    path = tmp_path / "modal.toml"
    path.write_text('[functions.render_video]\nmin_containers = 1\n'
                    '[pricing.gpu_second]\nH100 = 0.002\n')
    config = load_config(path, env={})
    fn = config.settings.functions.render_video
    assert (fn.cpu, fn.memory, fn.timeout, fn.min_containers) == (4.0, 8192, 600, 1)
    prices = config.settings.pricing.gpu_second
    assert prices["H100"] == 0.002 and prices["A10G"] == 0.000306
    rows = {key: source for key, _, source in config.rows()}
    assert rows["functions.render_video.min_containers"] == str(path)
    assert rows["functions.render_video.cpu"] == "default"
    assert function_cost_per_second(config.settings, "generate_images") > 0.0003


def test_effective_values_are_validated(tmp_path: Path) -> None:
    path = tmp_path / "modal.toml"
    path.write_text("[functions.generate_images]\nmin_containers = 20\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={})
    assert info.value.details == [
        f"{path}: functions.generate_images.max_containers: must be at least "
        "min_containers (20); got 10"]
    window = tmp_path / "warm.toml"
    window.write_text('[[warm.windows]]\nfunction = "render_video"\nstart = "08:00"\n'
                      'end = "18:00"\nmin_containers = 6\n')
    with pytest.raises(ConfigError) as info:
        load_config(window, env={})
    assert info.value.details == [
        f"{window}: warm.windows[0].min_containers: 6 is more than "
        "functions.render_video.max_containers (5)"]


def test_environment_values_parsed_by_the_key_type() -> None:
    config = load_config(search=False, env={
        "CANVASCAST_APP__NAME": "123",
        "CANVASCAST_FUNCTIONS__RENDER_VIDEO__TIMEOUT": "900",
        "CANVASCAST_FUNCTIONS__RENDER_VIDEO__CPU": "2",
        "CANVASCAST_FUNCTIONS__RENDER_VIDEO__GPU": "T4",
        "CANVASCAST_PRICING__GPU_SECOND__A100_80GB": "0.001",
        "CANVASCAST_WARM__WINDOWS": '[{function = "render_video", start = "08:00", '
                                    'end = "09:00"}]',
    })
    s = config.settings
    assert s.app.name == "123"
    assert (s.functions.render_video.timeout, s.functions.render_video.cpu) == (900, 2.0)
    assert s.functions.render_video.gpu == "T4"
    assert s.pricing.gpu_second["A100-80GB"] == 0.001
    assert s.warm.windows[0].function == "render_video"
    with pytest.raises(ConfigError) as info:
        load_config(search=False, env={"CANVASCAST_FUNCTIONS__RENDER_VIDEO__TIMEOUT": "ten",
                                       "CANVASCAST_BREAKER__RESET_TIMEOUT": "nan"})
    assert info.value.message == "environment (CANVASCAST_*): 2 problems"
    assert ("env CANVASCAST_FUNCTIONS__RENDER_VIDEO__TIMEOUT: functions.render_video.timeout: "
            "'ten' is not a whole number") in info.value.details


def test_env_problem_is_not_headed_with_the_file(tmp_path: Path) -> None:
    path = tmp_path / "modal.toml"
    path.write_text("[breaker]\nfailure_threshold = 3\n")
    with pytest.raises(ConfigError) as info:
        load_config(path, env={"CANVASCAST_BREAKER__FAILURE_THRESHOLD": "0"})
    assert not info.value.message.startswith(str(path))
    assert info.value.details[0].startswith("env CANVASCAST_BREAKER__FAILURE_THRESHOLD")


def test_utf16_file_is_not_utf8(tmp_path: Path, cli: Cli) -> None:
    path = tmp_path / "modal.toml"
    path.write_bytes("[app]\nname = \"x\"\n".encode("utf-16"))
    with pytest.raises(ConfigError, match=r"not UTF-8 text .*UTF-16"):
        load_config(path, env={})
    result = cli("--json", "--config", str(path), "config", "validate")
    assert result.exit_code == 2 and result.json()["error"]["code"] == "CONFIG_INVALID"
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf[app]\nname = \"x\"\n")
    assert load_config(bom, env={}).settings.app.name == "x"


def test_a_modal_environment_name_is_checked() -> None:
    with pytest.raises(ConfigError) as info:
        load_config(search=False, env={"CANVASCAST_APP__ENVIRONMENT": "prod/eu"})
    assert "app.environment" in str(info.value.details)
    ok = load_config(search=False, env={"CANVASCAST_APP__ENVIRONMENT": "prod-eu.2"})
    assert ok.settings.app.environment == "prod-eu.2"
