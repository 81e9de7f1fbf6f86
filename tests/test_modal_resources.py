"""modal.toml values become the Modal decorator arguments unchanged."""

from __future__ import annotations

import inspect
from pathlib import Path

import modal

from canvascast_cli.config import load_config
from modal_functions.resources import function_options
from tests.helpers import REPO


def test_defaults_map_to_modal_arguments() -> None:
    settings = load_config(search=False, env={}).settings
    assert function_options(settings, "render_video") == {
        "timeout": 600, "retries": 1, "min_containers": 0, "max_containers": 5,
        "scaledown_window": 120, "cpu": 4.0, "memory": 8192}
    # FLUX.1-schnell fits an L40S whole; host memory for loading it; time to load it.
    assert function_options(settings, "generate_images") == {
        "timeout": 300, "retries": 2, "min_containers": 0, "max_containers": 10,
        "scaledown_window": 60, "gpu": "L40S", "memory": 40960, "startup_timeout": 600}
    assert "startup_timeout" not in function_options(settings, "transcribe_audio")


def test_repository_modal_toml_says_what_the_defaults_say() -> None:
    repo = load_config(REPO / "modal.toml", env={}).settings
    assert repo.functions == load_config(search=False, env={}).settings.functions


def test_file_values_flow_through(tmp_path: Path) -> None:
    path = tmp_path / "modal.toml"
    path.write_text('[functions.transcribe_audio]\ngpu = "L4"\nmin_containers = 1\n'
                    "scaledown_window = 300\n")
    options = function_options(load_config(path, env={}).settings, "transcribe_audio")
    assert (options["gpu"], options["min_containers"], options["scaledown_window"]) == (
        "L4", 1, 300)


def test_startup_timeout_from_file_and_environment(tmp_path: Path) -> None:
    path = tmp_path / "modal.toml"
    path.write_text("[functions.transcribe_audio]\nstartup_timeout = 240\n")
    settings = load_config(path, env={}).settings
    assert function_options(settings, "transcribe_audio")["startup_timeout"] == 240
    settings = load_config(path, env={
        "CANVASCAST_FUNCTIONS__GENERATE_IMAGES__STARTUP_TIMEOUT": "900"}).settings
    assert function_options(settings, "generate_images")["startup_timeout"] == 900


def test_startup_timeout_is_a_parameter_of_the_installed_modal() -> None:
    assert "startup_timeout" in inspect.signature(modal.App.function).parameters
