"""modal.toml values become the Modal decorator arguments unchanged."""

from __future__ import annotations

from pathlib import Path

from canvascast_cli.config import load_config
from modal_functions.resources import function_options


def test_defaults_map_to_modal_arguments() -> None:
    settings = load_config(search=False, env={}).settings
    assert function_options(settings, "render_video") == {
        "timeout": 600, "retries": 1, "min_containers": 0, "max_containers": 5,
        "scaledown_window": 120, "cpu": 4.0, "memory": 8192}
    images = function_options(settings, "generate_images")
    assert images["gpu"] == "A10G" and "cpu" not in images and images["timeout"] == 300


def test_file_values_flow_through(tmp_path: Path) -> None:
    path = tmp_path / "modal.toml"
    path.write_text('[functions.transcribe_audio]\ngpu = "L4"\nmin_containers = 1\n'
                    "scaledown_window = 300\n")
    options = function_options(load_config(path, env={}).settings, "transcribe_audio")
    assert (options["gpu"], options["min_containers"], options["scaledown_window"]) == (
        "L4", 1, 300)
