"""Speech-to-text: Whisper models, their weights and the engines that run them."""

# A --script that matches too little of the speech is almost always the wrong script.
# (Here, not in align.py, so the CLI can quote them without importing the engine.)
SCRIPT_WARN_SHARE = 0.8  # matched share below which the transcript carries a warning
SCRIPT_FAIL_SHARE = 0.5  # below which the job fails (exit 2) unless allowed
